"""The state the decision path reads: customer windows per partition, terminal aggregates, their feeds and files;
and the local store (one interface, dicts or RocksDB, with its recovery rules) they are to move onto (issue 16)."""
