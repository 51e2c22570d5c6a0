"""The operator's commands of ``python -m app`` (health, predictions, dlq, lag): plain aiokafka clients.

Nothing here imports :mod:`app.worker`, which builds the Faust app, the model and the loops at import.
"""
