"""Analysts' rules beside the model: the language, the rule set and ``decide``, the topics' folds, the backtest.

Pure: neither Kafka nor Faust is imported here (their side is :mod:`app.kafka.rule_topics` and
:mod:`app.ops.rules`), so the scorer can call :func:`app.rules.ruleset.decide` per transaction and a test can
count a backtest by hand.
"""
