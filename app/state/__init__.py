"""The state the decision path reads: customer windows per partition, terminal aggregates, their feeds and files."""
