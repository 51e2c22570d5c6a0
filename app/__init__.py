"""Streaming fraud detector: Faust agents score card transactions from Kafka with an online River model."""
