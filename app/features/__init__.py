"""The feature set the model sees, and the pure event-time window arithmetic it is computed with."""
