"""Synchronous faces of the worker: REST and gRPC scoring, routing to a customer's owner, the operator page."""
