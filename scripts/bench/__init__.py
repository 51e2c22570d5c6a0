"""The benchmark behind ``scripts/benchmark.py``: the load and its timing (traffic), what a system wrote to the
broker (written), the process under test (process), one system's run (systems) and the report.

Modules import ``faust_ceiling``, ``kafka_local``, ``local_processes`` and ``progress_bars`` from ``scripts/`` and
``app`` and ``lab`` from the repository root: ``scripts/benchmark.py`` puts both on ``sys.path``.
"""
