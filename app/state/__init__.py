"""The state the decision path reads: customer windows per partition and every terminal's aggregates, both in local
stores (one interface, dicts or RocksDB, with their recovery rules), the terminal feed, and the terminal checkpoint on
Kafka for workers on an empty disk."""
