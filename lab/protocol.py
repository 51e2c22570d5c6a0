"""The handbook's evaluation protocol (benchmark section 3): a training week, a delay week, a test week, and the
test transactions of cards not already known to be compromised. The lab's evaluators use it; the service does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class Protocol:
    """The handbook's evaluation protocol, as day numbers counted from the simulation's start date."""

    train_start_day: int = 115  # 2018-07-25 for a start on 2018-04-01
    train_days: int = 7
    delay_days: int = 7
    test_days: int = 7

    @property
    def test_start_day(self) -> int:
        return self.train_start_day + self.train_days + self.delay_days

    def train_mask(self, days: np.ndarray) -> np.ndarray:
        return (days >= self.train_start_day) & (days < self.train_start_day + self.train_days)


def protocol_test_mask(days: np.ndarray, cards: np.ndarray, y_true: np.ndarray, protocol: Protocol) -> np.ndarray:
    """Transactions of the test period, leaving out cards already known to be compromised.

    Known on test day k: cards with a fraud from the training week's first day up to its last day plus k
    (the handbook's code: "that day minus 8 days").

    >>> days = np.array([115, 121, 129, 129, 130, 130]); cards = np.array(["a", "b", "a", "b", "b", "c"])
    >>> protocol_test_mask(days, cards, np.array([1, 0, 0, 0, 0, 0], bool), Protocol()).tolist()
    [False, False, False, True, True, True]
    """
    mask = np.zeros(len(days), dtype=bool)
    train_last = protocol.train_start_day + protocol.train_days - 1
    for k in range(protocol.test_days):
        known = set(cards[y_true & (days >= protocol.train_start_day) & (days <= train_last + k)].tolist())
        today = np.flatnonzero(days == protocol.test_start_day + k)
        mask[today[~np.isin(cards[today], list(known))]] = True
    return mask
