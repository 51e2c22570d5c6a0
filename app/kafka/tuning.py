"""aiokafka's client-wide tuning, applied by the process that runs the loops (:func:`apply_tuning`), never on import.

Both knobs are module-level in aiokafka, so they change every client of the process: the worker (and the benchmark's
passthrough, to measure the same client) applies them once at start; a script or test that imports our modules
keeps aiokafka as it ships.
"""

from __future__ import annotations

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer import sender as aiokafka_sender

# A transaction starts while the broker still writes the previous one's commit markers; the broker answers
# CONCURRENT_TRANSACTIONS and the client retries after a backoff (aiokafka: 20 ms for the first partition, else
# retry_backoff_ms, 100 ms by default). Markers take a millisecond or two here, so back-to-back batches of one
# partition would wait 20-100 ms each for nothing.
RETRY_BACKOFF_MS = 5


def apply_tuning(*, fetch_pause_ms: float | None = None) -> None:
    """Shorten the transaction-retry backoff to ``RETRY_BACKOFF_MS`` and, when given, the fetch pause.

    The fetch pause: aiokafka stops fetching from a broker for up to 100 ms while fetched records of any
    partition wait to be consumed (they do while a batch commits); with one broker that put 100 ms on decisions.
    Our loops drain what they fetch at once, so a short pause (``FETCH_PAUSE_MS``) is enough. Both apply to
    clients created after the call."""
    aiokafka_sender.BACKOFF_OVERRIDE = RETRY_BACKOFF_MS / 1000.0
    if fetch_pause_ms is not None:
        Fetcher.__init__.__kwdefaults__["prefetch_backoff"] = fetch_pause_ms / 1000.0
