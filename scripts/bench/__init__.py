"""The benchmarks behind ``scripts/benchmark.py`` and ``scripts/scale.py``: the load and its timing (traffic), what a
system wrote to the broker (written), the process under test (process), one system's run (systems) and the report;
for ``scale.py`` one size's run (scaling) and its tables (scale_report).

Modules import ``faust_ceiling``, ``kafka_local``, ``local_processes``, ``progress_bars`` and ``simulate`` from
``scripts/`` and ``app`` and ``lab`` from the repository root: both entry points put both on ``sys.path``.
"""
