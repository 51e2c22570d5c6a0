"""Streaming fraud detector: scores card transactions from Kafka with an online River model, exactly once.

Packages by role (the README's "Layout" section has the map):
- :mod:`app.decisions`: the decision path, a transaction in and its prediction out;
- :mod:`app.features`: the feature set and the pure window arithmetic behind it;
- :mod:`app.state`: the stores the decision path reads (customer windows, terminal aggregates) and their feeds;
- :mod:`app.learning`: the model, the label join, the trainer, signed snapshots, the registry and its follower;
- :mod:`app.serving`: REST, gRPC, routing to a customer's owner and the operator page;
- :mod:`app.monitoring`: health windows and the health events;
- :mod:`app.ops`: the operator's commands (``python -m app ...``), which never start a worker;
- :mod:`app.kafka`: client presets, reading to the end, reconnect supervision, topics, the transactional loop;
- :mod:`app.worker`: the composition root, which builds every component from :class:`app.settings.Settings`.
The lab (simulator, batch features, the handbook's protocol) is the top-level :mod:`lab`, never imported here.
"""
