"""Analysts rules."""
