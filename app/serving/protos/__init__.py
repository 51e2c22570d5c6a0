"""Generated gRPC modules of ``proto/fraud_serving.proto`` (checked in; regenerate with ``scripts/gen_protos.py``)."""
