"""The lab: the transaction simulator, batch features and the handbook's evaluation protocol.

It imports the service (:mod:`app`) to measure it; the service never imports the lab (a test checks).
"""
