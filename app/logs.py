"""Logging for an outage: the Kafka client repeats the same error many times a second while the broker is away;
one line per message template per minute is enough (the loops log the state changes themselves)."""

from __future__ import annotations

import logging
import time


class RepeatFilter(logging.Filter):
    """Lets a (logger, message template) through once per ``interval_s``.

    >>> f = RepeatFilter(60.0)
    >>> record = logging.LogRecord("aiokafka", logging.ERROR, "", 0, "Failed fetch from %s", ("1",), None)
    >>> f.filter(record), f.filter(record)
    (True, False)
    """

    def __init__(self, interval_s: float, min_level: int = logging.WARNING) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.min_level = min_level
        self.last_s: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.min_level:
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        if now - self.last_s.get(key, float("-inf")) < self.interval_s:
            return False
        self.last_s[key] = now
        return True


def quiet_kafka_client(interval_s: float = 60.0) -> None:
    """No debug records from aiokafka (one per message sent), and its warnings and errors once a minute each."""
    repeat = RepeatFilter(interval_s)
    level = max(logging.INFO, logging.getLogger().getEffectiveLevel())
    for name in [n for n in logging.root.manager.loggerDict if n == "aiokafka" or n.startswith("aiokafka.")]:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.addFilter(repeat)
    # With SASL, one INFO line per connection ("Authenticated as <user> via SCRAM-SHA-512"): dozens at start.
    logging.getLogger("aiokafka.conn").addFilter(RepeatFilter(interval_s, min_level=logging.INFO))
