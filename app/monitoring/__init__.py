"""Health: sliding windows of outcomes and latencies, the rules that name a status, the health events."""
