"""The state the decision path reads: customer windows per partition (in the local store: one interface, dicts or
RocksDB, with its recovery rules), terminal aggregates, their feeds and files (the terminal aggregates are to move
onto the store too, issue 16)."""
