"""Every terminal's recent transactions and the known frauds, as one worker reads them: pure, no Kafka.

Every worker holds all terminals (a terminal's transactions come from customers on every partition), fed off
the decision path by :mod:`app.state.terminal_feed` from the compact terminal log the scorers write and from the
fraud labels. Scorers read it; their own transactions are added at once after their batch commits, so what a
partition scored is never missed, and what other partitions scored arrives with the feed's lag
(``fraud_terminal_feed_lag_seconds``): the 1-hour count may miss another partition's last moments, the
delayed windows (which end ``delay_days`` back) miss nothing while the lag stays under the delay.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.features.engine import TerminalState, add_terminal_entry, newest_event_time_s, terminal_x


class TerminalAggregates:
    """Per terminal, ``[(t, tx_id, seq), ...]`` over the longest delayed window; per fraud ``tx_id``, when known.

    >>> aggregates = TerminalAggregates(delay_days=7.0, lateness_s=86400.0, ttl_s=38 * 86400.0)
    >>> aggregates.add("k1", 0.0, "t1")
    True
    >>> aggregates.add_fraud("t1", known_s=86400.0)
    >>> aggregates.features("k1", 7.5 * 86400, "t2")["terminal_risk_1day_delay"]
    1.0
    """

    def __init__(self, delay_days: float, lateness_s: float, ttl_s: float) -> None:
        self.delay_days = delay_days
        self.lateness_s = lateness_s
        self.ttl_s = ttl_s
        self.states: dict[str, TerminalState] = {}
        self.frauds_known_s: dict[str, float] = {}
        self.stream_time_s = float("-inf")

    def features(
        self, terminal_id: str, t: float, tx_id: str, pending: Iterable[tuple[float, str]] = ()
    ) -> dict[str, float]:
        """The terminal half of ``x`` for a transaction, seeing ``pending`` (same batch, not committed) too."""
        state = self.states.get(terminal_id, [])
        extra = [(te, tid) for te, tid in pending if tid != tx_id]
        if extra:
            state = sorted([*state, *extra], key=lambda e: e[0])  # type: ignore[arg-type,return-value]
        return terminal_x(state, t, self.frauds_known_s, self.delay_days)

    def add(self, terminal_id: str, t: float, tx_id: str) -> bool:
        """Record a scored transaction (idempotent by ``tx_id``); False when it was there already."""
        state = self.states.get(terminal_id)
        if state is None:
            state = self.states[terminal_id] = []
        if t > self.stream_time_s:
            self.stream_time_s = t
        return add_terminal_entry(state, t, tx_id, self.delay_days, self.lateness_s)

    def add_fraud(self, tx_id: str, known_s: float) -> None:
        """A fraud label: counts for its transaction from ``known_s`` on (the earliest, if sent twice)."""
        known = self.frauds_known_s.get(tx_id)
        if known is None or known_s < known:
            self.frauds_known_s[tx_id] = known_s

    def sweep(self) -> int:
        """Remove terminals idle past the TTL and fraud marks older than it, in stream time; returns terminals
        removed."""
        horizon = self.stream_time_s - self.ttl_s
        idle = [k for k, state in self.states.items() if newest_event_time_s(state) < horizon]
        for key in idle:
            del self.states[key]
        old = [tx_id for tx_id, known in self.frauds_known_s.items() if known < horizon - self.lateness_s]
        for tx_id in old:
            del self.frauds_known_s[tx_id]
        return len(idle)

    def load(self, states: dict[str, TerminalState], frauds_known_s: dict[str, float], stream_time_s: float) -> None:
        """Take over a snapshot's content (see :mod:`app.state.terminal_feed`)."""
        self.states = states
        self.frauds_known_s = frauds_known_s
        self.stream_time_s = float(stream_time_s)
