"""The operator's commands of ``python -m app`` (health, predictions, dlq, lag, models, rules): plain aiokafka clients.

Nothing here imports :mod:`app.worker` or :mod:`app.components`: a command starts no loop, no Faust app and no
model (a test checks the imports).
"""
