"""Kafka plumbing shared by every loop and command: client presets, security, topics, the transactional loop."""
