"""The feature set, declared once: every feature's name, half, window and kind; the rest is derived from it.

Adding, renaming or re-windowing a feature is one line of :data:`FEATURES`. From it come the names each half
computes, the packing layout the trainer keeps its recent features in (:data:`FEATURE_NAMES` order, doubles), and
:data:`FEATURE_SET_VERSION`, a digest of the declaration. The version travels with every prediction, model snapshot
and trainer state, so a model is never fed (nor a trainer taught) features laid out by another declaration.

Halves: ``customer`` is computed where the customer's state lives (the transaction's amount and calendar flags, and
the customer's windows), ``terminal`` where the terminal's state lives. Kinds say how a value is computed
(:mod:`app.features.engine` and :mod:`app.features.halves` compute them; a new kind needs code there):

- customer half, no window: ``amount``; ``hour_of_day``, ``weekend``, ``night`` (calendar, in the terminal's time);
- customer windows ``(t - w, t]`` with this transaction: ``count``, ``mean_amount``, ``std_amount``, ``max_amount``
  (a window declares all four), ``amount_zscore`` (against a window's mean and std), ``seconds_since_previous``
  (capped at ``w``), ``terminal_new`` and ``distinct_terminals`` (one window for both), ``count_at_terminal`` (the
  customer's transactions at this transaction's terminal, this one included), ``known_legit_mean_amount`` and
  ``known_legit_zscore`` (the window's mean amount, and the amount's z-score against its mean and std, over the
  customer's transactions not known to be fraud by ``t``: a fraud labelled since no longer shifts the card's usual
  amounts);
- terminal windows ``[t - delay - w, t - delay)``: ``delayed_count``, ``delayed_risk`` (a window declares both;
  the delay is ``TERMINAL_DELAY_DAYS``); ``fraud_streak`` and ``fraud_streak_age`` (one window for both, at most
  the longest delayed one): of the terminal's transactions in ``[t - delay - w, t - delay)`` in time order, how many
  of the latest are all known to be fraud by ``t``, and the seconds from the first of them to ``t`` (0 without a
  streak): a terminal that is being exploited has every transaction since then a fraud, one that saw a stolen
  card's single cash-out has legitimate ones after it; ``count``: the terminal's transactions in ``(t - w, t]`` with
  this one; ``seconds_since_previous``: since the terminal's latest earlier transaction (capped at ``w``, at most 30
  days).

Two subsets: :data:`PROTOCOL_FEATURE_NAMES`, the handbook's 15 baseline features (what the published figures were
measured with), and the product's, every declared feature (:data:`FEATURE_SUBSETS`).

>>> FEATURE_NAMES[:4]
('amount', 'hour_of_day', 'is_weekend', 'is_night')
>>> FEATURE_SET_VERSION == version_of(FEATURES) and FEATURE_SET_VERSION.startswith("fs-")
True
>>> version_of((*FEATURES, Feature("customer_nb_tx_90day", "customer", 90 * DAY_S, "count"))) != FEATURE_SET_VERSION
True
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import asdict, dataclass

HOUR_S = 3600.0
DAY_S = 86400.0

# kind -> (the halves that compute it, whether it takes a window)
KINDS: dict[str, tuple[tuple[str, ...], bool]] = {
    "amount": (("customer",), False),
    "hour_of_day": (("customer",), False),
    "weekend": (("customer",), False),
    "night": (("customer",), False),
    "count": (("customer", "terminal"), True),
    "mean_amount": (("customer",), True),
    "std_amount": (("customer",), True),
    "max_amount": (("customer",), True),
    "amount_zscore": (("customer",), True),
    "seconds_since_previous": (("customer", "terminal"), True),
    "count_at_terminal": (("customer",), True),
    "known_legit_mean_amount": (("customer",), True),
    "known_legit_zscore": (("customer",), True),
    "terminal_new": (("customer",), True),
    "distinct_terminals": (("customer",), True),
    "delayed_count": (("terminal",), True),
    "delayed_risk": (("terminal",), True),
    "fraud_streak": (("terminal",), True),
    "fraud_streak_age": (("terminal",), True),
}


class FeatureSetError(ValueError):
    """A declaration the engine cannot compute (an unknown kind, a duplicate name, a missing window...)."""


class FeatureSetMismatch(ValueError):
    """State, a snapshot or a prediction made for another feature set than the one this process computes."""

    def __init__(self, what: str, found: str | None, expected: str) -> None:
        found_text = found or "none (made before feature sets were versioned)"
        super().__init__(f"{what} was made for feature set {found_text}; this process computes {expected}")
        self.found = found
        self.expected = expected


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    half: str  # "customer" or "terminal": where the feature is computed
    window_s: float | None  # the window's length (None: the transaction itself)
    kind: str  # how it is computed (see the module docstring)


MINUTE_S = 60.0

FEATURES: tuple[Feature, ...] = (
    Feature("amount", "customer", None, "amount"),
    Feature("hour_of_day", "customer", None, "hour_of_day"),
    Feature("is_weekend", "customer", None, "weekend"),
    Feature("is_night", "customer", None, "night"),
    Feature("customer_nb_tx_10min", "customer", 10 * MINUTE_S, "count"),
    Feature("customer_avg_amount_10min", "customer", 10 * MINUTE_S, "mean_amount"),
    Feature("customer_std_amount_10min", "customer", 10 * MINUTE_S, "std_amount"),
    Feature("customer_max_amount_10min", "customer", 10 * MINUTE_S, "max_amount"),
    Feature("customer_nb_tx_1hour", "customer", HOUR_S, "count"),
    Feature("customer_avg_amount_1hour", "customer", HOUR_S, "mean_amount"),
    Feature("customer_std_amount_1hour", "customer", HOUR_S, "std_amount"),
    Feature("customer_max_amount_1hour", "customer", HOUR_S, "max_amount"),
    Feature("customer_nb_tx_1day", "customer", DAY_S, "count"),
    Feature("customer_avg_amount_1day", "customer", DAY_S, "mean_amount"),
    Feature("customer_std_amount_1day", "customer", DAY_S, "std_amount"),
    Feature("customer_max_amount_1day", "customer", DAY_S, "max_amount"),
    Feature("customer_nb_tx_7day", "customer", 7 * DAY_S, "count"),
    Feature("customer_avg_amount_7day", "customer", 7 * DAY_S, "mean_amount"),
    Feature("customer_std_amount_7day", "customer", 7 * DAY_S, "std_amount"),
    Feature("customer_max_amount_7day", "customer", 7 * DAY_S, "max_amount"),
    Feature("customer_nb_tx_30day", "customer", 30 * DAY_S, "count"),
    Feature("customer_avg_amount_30day", "customer", 30 * DAY_S, "mean_amount"),
    Feature("customer_std_amount_30day", "customer", 30 * DAY_S, "std_amount"),
    Feature("customer_max_amount_30day", "customer", 30 * DAY_S, "max_amount"),
    Feature("amount_zscore_30day", "customer", 30 * DAY_S, "amount_zscore"),
    Feature("seconds_since_previous_tx", "customer", 30 * DAY_S, "seconds_since_previous"),
    Feature("terminal_new_for_customer_30day", "customer", 30 * DAY_S, "terminal_new"),
    Feature("customer_nb_terminals_30day", "customer", 30 * DAY_S, "distinct_terminals"),
    Feature("customer_nb_tx_at_terminal_30day", "customer", 30 * DAY_S, "count_at_terminal"),
    Feature("customer_avg_amount_30day_known_legit", "customer", 30 * DAY_S, "known_legit_mean_amount"),
    Feature("amount_zscore_30day_known_legit", "customer", 30 * DAY_S, "known_legit_zscore"),
    Feature("terminal_nb_tx_1day_delay", "terminal", DAY_S, "delayed_count"),
    Feature("terminal_risk_1day_delay", "terminal", DAY_S, "delayed_risk"),
    Feature("terminal_nb_tx_7day_delay", "terminal", 7 * DAY_S, "delayed_count"),
    Feature("terminal_risk_7day_delay", "terminal", 7 * DAY_S, "delayed_risk"),
    Feature("terminal_nb_tx_30day_delay", "terminal", 30 * DAY_S, "delayed_count"),
    Feature("terminal_risk_30day_delay", "terminal", 30 * DAY_S, "delayed_risk"),
    Feature("terminal_nb_tx_1hour", "terminal", HOUR_S, "count"),
    Feature("terminal_seconds_since_previous_tx", "terminal", 7 * DAY_S, "seconds_since_previous"),
    Feature("terminal_fraud_streak_30day_delay", "terminal", 30 * DAY_S, "fraud_streak"),
    Feature("terminal_fraud_streak_age_s_30day_delay", "terminal", 30 * DAY_S, "fraud_streak_age"),
)
#: The handbook's 15 baseline features (benchmark section 2), in the order of ``lab/batch_features.py``
#: (``BASELINE_FEATURES``, the batch reference): the protocol's set. Every other declared feature is the product's
#: own. A model named with ``features=protocol`` (app/learning/model.py) learns and scores these alone, so its
#: figures compare with the published table; the default, ``features=product``, takes every declared feature.
PROTOCOL_FEATURE_NAMES: tuple[str, ...] = (
    "amount",
    "is_weekend",
    "is_night",
    "customer_nb_tx_1day",
    "customer_avg_amount_1day",
    "customer_nb_tx_7day",
    "customer_avg_amount_7day",
    "customer_nb_tx_30day",
    "customer_avg_amount_30day",
    "terminal_nb_tx_1day_delay",
    "terminal_risk_1day_delay",
    "terminal_nb_tx_7day_delay",
    "terminal_risk_7day_delay",
    "terminal_nb_tx_30day_delay",
    "terminal_risk_30day_delay",
)


def check(features: tuple[Feature, ...]) -> None:
    """Raise :class:`FeatureSetError` for a declaration the engine cannot compute.

    >>> check((Feature("x", "customer", None, "median_amount"),))
    Traceback (most recent call last):
    ...
    app.features.spec.FeatureSetError: feature 'x': unknown kind 'median_amount'
    """
    seen: set[str] = set()
    for f in features:
        if f.name in seen:
            raise FeatureSetError(f"feature {f.name!r} is declared twice")
        seen.add(f.name)
        if f.kind not in KINDS:
            raise FeatureSetError(f"feature {f.name!r}: unknown kind {f.kind!r}")
        halves, windowed = KINDS[f.kind]
        if f.half not in halves:
            raise FeatureSetError(f"feature {f.name!r}: kind {f.kind!r} is not computed in the {f.half!r} half")
        if windowed != (f.window_s is not None) or (f.window_s is not None and f.window_s <= 0):
            need = "a positive window" if windowed else "no window"
            raise FeatureSetError(f"feature {f.name!r}: kind {f.kind!r} takes {need}, got {f.window_s!r}")


def version_of(features: tuple[Feature, ...]) -> str:
    """``fs-`` and 8 hex digits of the SHA-256 of the declaration as canonical JSON (order matters: it is the
    packing layout)."""
    canonical = json.dumps([asdict(f) for f in features], sort_keys=True, separators=(",", ":"))
    return "fs-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]


def names(half: str | None = None, kinds: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """Names in declaration order, of one half and/or some kinds."""
    return tuple(f.name for f in FEATURES if (half is None or f.half == half) and (kinds is None or f.kind in kinds))


def of_kind(kind: str, half: str = "customer") -> tuple[Feature, ...]:
    return tuple(f for f in FEATURES if f.kind == kind and f.half == half)


def one(kind: str, half: str = "customer") -> Feature:
    """The feature of ``kind`` in ``half``, for a kind the code computes exactly once per transaction."""
    found = of_kind(kind, half)
    if len(found) != 1:
        raise FeatureSetError(f"the {half} half computes one feature of kind {kind!r}; declared: {len(found)}")
    return found[0]


check(FEATURES)
FEATURE_SET_VERSION = version_of(FEATURES)
#: The declaration's version when records began to carry one: every snapshot, trainer state and prediction
#: written before had this layout, so one without ``feature_set`` is read as this version (a deployment that
#: upgrades keeps its models), and refused like any other once the declaration changes.
UNVERSIONED_FEATURE_SET = "fs-01bf77f8"
FEATURE_NAMES: tuple[str, ...] = names()  # the packing layout: one double per feature, in this order
CUSTOMER_HALF_NAMES = names("customer")
TERMINAL_HALF_NAMES = names("terminal")
#: The feature subsets a model can be restricted to, by the name its ``features`` parameter gives.
FEATURE_SUBSETS: dict[str, tuple[str, ...]] = {"product": FEATURE_NAMES, "protocol": PROTOCOL_FEATURE_NAMES}
if not set(PROTOCOL_FEATURE_NAMES) <= set(FEATURE_NAMES):
    raise FeatureSetError(f"undeclared protocol features: {set(PROTOCOL_FEATURE_NAMES) - set(FEATURE_NAMES)}")
_LAYOUT = struct.Struct(f"<{len(FEATURE_NAMES)}d")


def pack(features: dict[str, float]) -> bytes:
    """Features in :data:`FEATURE_NAMES` order as doubles (bytes: the garbage collector does not track them);
    a missing one packs as 0.

    >>> unpack(pack({"amount": 12.5}))["amount"], len(pack({})) == 8 * len(FEATURE_NAMES)
    (12.5, True)
    """
    return _LAYOUT.pack(*(float(features.get(name, 0.0)) for name in FEATURE_NAMES))


def unpack(x: bytes) -> dict[str, float]:
    return dict(zip(FEATURE_NAMES, _LAYOUT.unpack(x), strict=True))
