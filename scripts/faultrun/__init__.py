"""The fault run behind ``scripts/chaos.py``: what is published and when faults hit (scenarios), the broker and
the workers (cluster), the faults themselves (faults), the publisher and reader processes, the accounting of what
came out (measurement) and the report.

Modules import ``kafka_local`` and ``local_processes`` from ``scripts/`` and ``lab`` from the repository root:
``scripts/chaos.py`` and ``tests/conftest.py`` put both on ``sys.path``.
"""
