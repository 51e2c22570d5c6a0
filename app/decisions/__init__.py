"""The decision path: one transactional hop from a transaction to its prediction (or its dead letter)."""
