"""Event-time features per customer and per terminal: pure functions over small states sorted by event time.

State is sorted by event time (held by column: :class:`CustomerWindow`, :class:`TerminalWindow`), holding only
what the longest window needs (plus the allowed lateness), so it travels as one small changelog record per entry.
Windows follow the transactions' own timestamps: a replay of last month gives the features that living through it gave.

Definitions (t = the transaction's event time, "before" = arrived earlier in the stream; names and windows are
those declared in :mod:`app.features.spec`, the defaults given here):
- customer windows (t - w, t] over the customer's transactions that arrived before, plus this one:
  count, mean, std (population), max for w in 10 minutes, 1 hour, 1, 7 and 30 days;
- z-score of the amount against the 30-day mean and std (0 when the std is 0, or rounding noise <= 1e-9);
- seconds since the customer's latest earlier transaction (capped at 30 days; 30 days when none);
- terminal new for the customer within 30 days, and the customer's distinct terminals in 30 days;
- the customer's transactions at this terminal in (t - 30 days, t], this one included;
- the mean amount over (t - 30 days, t] and the amount's z-score against it, over the customer's transactions not
  known to be fraud by t (``frauds_known_s``, as for the terminals) and this one: a labelled fraud (a cash-out of a
  stolen card) stops shifting the card's usual amounts once its label is in;
- terminal windows [t - delay - n days, t - delay) over transactions that arrived before: count and risk
  (frauds / count; 0 when empty), n in 1, 7, 30; the terminal's count over (t - 1 hour, t] with this one; and
  seconds since the terminal's latest earlier transaction (read from its times; capped at 7 days, 7 days when none);
  and the terminal's fraud streak over [t - delay - 30 days, t - delay): how many of its latest entries there are all
  known frauds, and the seconds since the first of them (a terminal being exploited, not one a stolen card passed by).
A fraud counts toward its transaction's time, only once its label has arrived and only from the label's own
time on (``known_s <= t``), so a replay that delivers labels early still never sees the future. Fraud marks
are not stored in the terminal state: the caller keeps one mapping ``frauds_known_s`` (fraud ``tx_id`` ->
earliest ``known_s``), updated the moment a fraud label arrives (:func:`record_fraud`).

``tx_id`` is the idempotency key: a transaction seen again (a replay after a crash, a producer retry) while its
entry is still held (it is, within the lateness) is not added twice; it gets the features it had on its first
arrival and the state is unchanged (the very same object is returned). Both states number a key's arrivals
(``seq``) for this: "before" is by arrival, not by event time.
"""

from __future__ import annotations

import bisect
import math
import re
from array import array
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeAlias

from app.features import spec
from app.features.spec import DAY_S, HOUR_S

# Windows and names come from the declaration (app/features/spec.py); the engine computes each kind there.
CUSTOMER_ENGINE_KINDS = ("count", "mean_amount", "std_amount", "max_amount", "amount_zscore", "seconds_since_previous",
                         "terminal_new", "distinct_terminals", "count_at_terminal", "known_legit_mean_amount",
                         "known_legit_zscore")  # fmt: skip
_STATS = ("count", "mean_amount", "std_amount", "max_amount")  # per customer window, computed together
CUSTOMER_FEATURE_NAMES: tuple[str, ...] = spec.names("customer", CUSTOMER_ENGINE_KINDS)
# What a customer lookup shows: the windows themselves, not the per-transaction comparisons.
CUSTOMER_WINDOW_NAMES: tuple[str, ...] = spec.names("customer", (*_STATS, "distinct_terminals"))
TERMINAL_FEATURE_NAMES: tuple[str, ...] = spec.TERMINAL_HALF_NAMES


def _window_label(window_s: float) -> str:
    """``10min``, ``1hour``, ``7day``: how the default names spell a window (for the reference in the tests)."""
    if window_s < HOUR_S:
        return f"{window_s / 60:g}min"
    return f"{window_s / HOUR_S:g}hour" if window_s < DAY_S else f"{window_s / DAY_S:g}day"


def _by_window(kinds: tuple[str, ...], half: str) -> tuple[tuple[Any, ...], ...]:
    """``(window_s, *names of kinds)`` per window, shortest first: a window declares each of ``kinds`` once."""
    declared = [f for f in spec.FEATURES if f.half == half and f.kind in kinds]
    rows = []
    for window_s in sorted({f.window_s for f in declared}):  # type: ignore[type-var]  # windowed kinds
        named = {f.kind: f.name for f in declared if f.window_s == window_s}
        if sorted(f.kind for f in declared if f.window_s == window_s) != sorted(kinds):
            raise spec.FeatureSetError(f"the {half} window of {window_s:g} s must declare each of {kinds} once")
        rows.append((window_s, *(named[kind] for kind in kinds)))
    return tuple(rows)


_CUSTOMER_WINDOWS = _by_window(_STATS, "customer")
CUSTOMER_WINDOWS_S: dict[str, float] = {_window_label(row[0]): row[0] for row in _CUSTOMER_WINDOWS}
_ZSCORE, _GAP, _NEW_TERMINAL, _NB_TERMINALS, _AT_TERMINAL, _LEGIT_MEAN, _LEGIT_Z = (
    spec.one(k) for k in CUSTOMER_ENGINE_KINDS[4:]
)
if _LEGIT_MEAN.window_s != _LEGIT_Z.window_s:
    raise spec.FeatureSetError("known_legit_mean_amount and known_legit_zscore share one window")
_LEGIT_WINDOW_S: float = _LEGIT_MEAN.window_s  # type: ignore[assignment]
_zscore_of = {row[0]: (row[2], row[3]) for row in _CUSTOMER_WINDOWS}.get(_ZSCORE.window_s)  # (mean, std) names
if _zscore_of is None:
    raise spec.FeatureSetError(f"{_ZSCORE.name}: no customer window of {_ZSCORE.window_s:g} s to take the z-score in")
_ZSCORE_OF: tuple[str, str] = _zscore_of
if _NEW_TERMINAL.window_s != _NB_TERMINALS.window_s:
    raise spec.FeatureSetError("terminal_new and distinct_terminals share one window (one set of terminals)")
_TERMINALS_WINDOW_S: float = _NB_TERMINALS.window_s  # type: ignore[assignment]  # checked: windowed kinds
_GAP_CAP_S: float = _GAP.window_s  # type: ignore[assignment]
_AT_TERMINAL_WINDOW_S: float = _AT_TERMINAL.window_s  # type: ignore[assignment]
_TERMINALS_FROM_START = _TERMINALS_WINDOW_S == _CUSTOMER_WINDOWS[-1][0]  # the longest window's start: no bisect
# The customer state holds what the longest customer window needs (plus the lateness).
_CUSTOMER_HORIZON_S = max(_CUSTOMER_WINDOWS[-1][0], _TERMINALS_WINDOW_S, _GAP_CAP_S, _AT_TERMINAL_WINDOW_S,
                          _LEGIT_WINDOW_S)  # fmt: skip
_NO_FRAUDS: Mapping[str, float] = {}
_LEGIT_SAME_AS_ZSCORE = _LEGIT_WINDOW_S == _ZSCORE.window_s  # then, without known frauds, the z-score's own values

_TERMINAL_WINDOWS = _by_window(("delayed_count", "delayed_risk"), "terminal")
TERMINAL_DAYS = tuple(int(row[0] // DAY_S) if row[0] % DAY_S == 0 else row[0] / DAY_S for row in _TERMINAL_WINDOWS)
_TERMINAL_LONGEST_S = _TERMINAL_WINDOWS[-1][0]
_BURST = spec.one("count", "terminal")
_BURST_S: float = _BURST.window_s  # type: ignore[assignment]
_TERMINAL_GAP = spec.one("seconds_since_previous", "terminal")
_TERMINAL_GAP_CAP_S: float = _TERMINAL_GAP.window_s  # type: ignore[assignment]
if _TERMINAL_GAP_CAP_S > _TERMINAL_LONGEST_S:  # the state holds delay + the longest window: the gap must fit in it
    raise spec.FeatureSetError(f"{_TERMINAL_GAP.name}: a cap of at most {_TERMINAL_LONGEST_S:g} s (the longest window)")
_STREAK, _STREAK_AGE = spec.one("fraud_streak", "terminal"), spec.one("fraud_streak_age", "terminal")
if _STREAK.window_s != _STREAK_AGE.window_s:
    raise spec.FeatureSetError("fraud_streak and fraud_streak_age share one window (one streak)")
_STREAK_WINDOW_S: float = _STREAK.window_s  # type: ignore[assignment]  # checked: windowed kinds
if _STREAK_WINDOW_S > _TERMINAL_LONGEST_S:  # the streak is read in what the delayed windows hold
    raise spec.FeatureSetError(f"{_STREAK.name}: a window of at most {_TERMINAL_LONGEST_S:g} s (the longest window)")

# Customer state: the entries (t, amount, terminal_id, tx_id, seq), held by column (CustomerWindow); terminal
# state: the entries (t, tx_id, seq), held by column (TerminalWindow); both sorted by t, ties by arrival.
# ``seq`` numbers a key's arrivals (larger = later) for the repeat semantics: the transactions that arrived
# before a repeat's first arrival. Callers never need it (the functions keep it).
# Terminal entries given as (t, tx_id) (no seq, held as seq -1: count as arrived before every numbered entry) or
# with a 4th field (the per-entry fraud mark of earlier versions, ignored) are read as well.
# By column, a window is a few arrays of C numbers and tuples of strings: the garbage collector stops tracking
# such a tuple once it has seen it, so a full collection walks a window in a few steps, never its entries (a
# list of entries is always tracked, and a collection touches every entry through it).


class _EntryColumns:
    """What both windows share: they read as a sequence of entry tuples (``len``, ``==`` with a list or tuple of
    entries, a readable repr); each says how an entry is made of its columns (``__iter__``, ``__getitem__``)."""

    __slots__ = ()

    def __len__(self) -> int:
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _EntryColumns | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self)!r})"


_ID_ESCAPES = re.compile("\x01(.)", re.DOTALL)  # in an id text: \x01a is \x01, \x01b is NUL (the separator)


def _escaped_id(tx_id: str) -> str:
    """An id as it sits in a window's text (:class:`CustomerWindow`): NUL is the separator, so an id holding one
    (or the escape character) is escaped; any other id is itself."""
    if "\x00" in tx_id or "\x01" in tx_id:
        return tx_id.replace("\x01", "\x01a").replace("\x00", "\x01b")
    return tx_id


def _unescaped(parts: list[str]) -> list[str]:
    return [_ID_ESCAPES.sub(lambda m: "\x01" if m.group(1) == "a" else "\x00", p) for p in parts]


class CustomerWindow(_EntryColumns):
    """A customer's entries by column: times, amounts and seqs as C numbers; each entry's terminal as an index
    (``tix``, a byte each) into the window's own distinct terminal ids, held as one text (``terminal_text``); the tx
    ids as one text (``id_text``). A text is ``"\\0value0\\0value1 ... \\0"`` (a value holding NUL escaped).

    A worker holds thousands of customers of ~60 entries each; as tuples of Python objects every transaction
    touched ~350 objects scattered over the heap, and at 10 times the simulator's population that transpose cost 3
    times as much as at 1x (memory, not arithmetic). Held this way a window is six objects and no object per entry:
    a transaction finds a repeat by one search of the id text and counts its terminals over bytes, and a window is
    packed (:func:`app.state.customers.pack_window`) and unpacked in a few copies (the packed tier's traffic at 10x:
    splitting and interning ~120 strings a window was most of it). Immutable: :func:`customer_features` returns a
    new window. Reads as a sequence of entry tuples (iteration, ``len``, indexing, ``==`` with a list of entries);
    ``terminals``, ``ids`` and ``names`` (the distinct terminals) as tuples, made when asked (the decision path
    splits out only the tx ids its fraud lookup needs).

    >>> w = CustomerWindow.of([(0.0, 10.0, "k1", "a", 0), (60.0, 30.0, "k2", "b", 1), (90.0, 5.0, "k1", "c", 2)])
    >>> len(w), w[-1], w.terminals, w.ids, w.index("b"), w.index("x")
    (3, (90.0, 5.0, 'k1', 'c', 2), ('k1', 'k2', 'k1'), ('a', 'b', 'c'), 1, -1)
    >>> w.names, w.terminal_text, w.tix, w.id_text
    (('k1', 'k2'), '\\x00k1\\x00k2\\x00', b'\\x00\\x01\\x00', '\\x00a\\x00b\\x00c\\x00')
    """

    __slots__ = ("times", "amounts", "seqs", "terminal_text", "tix", "id_text")

    def __init__(
        self, times: array[float], amounts: array[float], terminals: Sequence[str], ids: Sequence[str],
        seqs: array[int],
    ) -> None:  # fmt: skip
        self.times = times
        self.amounts = amounts
        self.seqs = seqs
        numbered: dict[str, int] = {}
        self.tix = _indices([numbered.setdefault(k, len(numbered)) for k in terminals], len(numbered))
        self.terminal_text = _framed(numbered)
        self.id_text = _framed(ids)

    @classmethod
    def of(cls, entries: Iterable[Sequence[Any]]) -> CustomerWindow:
        """From entries ``(t, amount, terminal_id, tx_id, seq)`` sorted by time (ties by arrival)."""
        columns = tuple(zip(*entries, strict=True))
        if not columns:
            return cls(array("d"), array("d"), (), (), array("q"))
        times, amounts, terminals, ids, seqs = columns
        return cls(array("d", times), array("d", amounts), terminals, ids, array("q", seqs))

    @classmethod
    def made(
        cls, times: array[float], amounts: array[float], seqs: array[int], terminal_text: str, tix: Indices,
        id_text: str,
    ) -> CustomerWindow:  # fmt: skip
        """From the columns as held (``terminal_text``: distinct terminals)."""
        window = cls.__new__(cls)
        window.times, window.amounts, window.seqs = times, amounts, seqs
        window.terminal_text, window.tix, window.id_text = terminal_text, tix, id_text
        return window

    def __len__(self) -> int:
        return len(self.times)

    @property
    def names(self) -> tuple[str, ...]:
        """The distinct terminals ``tix`` points into (some perhaps no longer used)."""
        text = self.terminal_text
        return tuple(_framed_between(text, 0, text.count("\x00") - 1))

    @property
    def terminals(self) -> tuple[str, ...]:
        return tuple(map(self.names.__getitem__, self.tix))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(_framed_between(self.id_text, 0, len(self.times)))

    def ids_between(self, lo: int, hi: int) -> list[str]:
        """The tx ids of entries ``lo`` to ``hi - 1`` (0 <= lo <= hi <= len)."""
        return _framed_between(self.id_text, lo, hi)

    def index(self, tx_id: str) -> int:
        """The index of the entry of ``tx_id`` (-1: none): one search of the id text (the newest first: an entry
        just added is usually last)."""
        text, key = self.id_text, "\x00" + _escaped_id(tx_id) + "\x00"
        if text.endswith(key):
            return len(self.times) - 1
        at = text.find(key)
        return -1 if at < 0 else text.count("\x00", 0, at)

    def terminal_index(self, terminal_id: str) -> int:
        """Where ``terminal_id`` is among the distinct terminals (what ``tix`` holds; -1: not there)."""
        return _framed_index(self.terminal_text, terminal_id)

    def terminal_at(self, i: int) -> str:
        text = self.terminal_text
        return _framed_at(text, self.tix[i], text.count("\x00") - 1)

    def entries(self, lo: int, hi: int, ids: Sequence[str] | None = None) -> list[tuple[Any, ...]]:
        """Entries ``lo`` to ``hi - 1`` as tuples (``ids``: their tx ids, when the caller has them already)."""
        names = self.names
        return list(zip(self.times[lo:hi], self.amounts[lo:hi], map(names.__getitem__, self.tix[lo:hi]),
                        self.ids_between(lo, hi) if ids is None else ids, self.seqs[lo:hi], strict=True))  # fmt: skip

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(self.times, self.amounts, self.terminals, self.ids, self.seqs, strict=True)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        n = len(self.times)
        if not -n <= i < n:
            raise IndexError("window index out of range")
        i = i + n if i < 0 else i
        return self.times[i], self.amounts[i], self.terminal_at(i), _framed_at(self.id_text, i, n), self.seqs[i]

    def since(self, keep: int) -> CustomerWindow:
        """The entries from index ``keep`` on."""
        text = self.id_text[_framed_offset(self.id_text, len(self.times), keep) :] if keep else self.id_text
        return CustomerWindow.made(
            self.times[keep:], self.amounts[keep:], self.seqs[keep:], self.terminal_text, self.tix[keep:], text
        )

    def inserted(self, keep: int, at: int, t: float, amount: float, terminal_id: str, tx_id: str) -> CustomerWindow:
        """The entries from ``keep`` on with a new one at ``at`` (numbered after every entry held)."""
        seq = max(self.seqs) + 1 if self.seqs else 0
        i = at - keep
        times, amounts, seqs, tix = self.times[keep:], self.amounts[keep:], self.seqs[keep:], self.tix[keep:]
        terminal_text = self.terminal_text
        j = _framed_index(terminal_text, terminal_id)
        if j < 0:
            j = terminal_text.count("\x00") - 1
            terminal_text += _escaped_id(terminal_id) + "\x00"
            if j >= 16 and j >= 2 * len(tix):  # terminals no longer used pile up: keep those in use
                terminal_text, tix = _compacted(terminal_text, j + 1, tix)
                j = terminal_text.count("\x00") - 2
        times.insert(i, t)
        amounts.insert(i, amount)
        seqs.insert(i, seq)
        if isinstance(tix, bytes) and j < 256:
            tix = tix + _BYTE[j] if i == len(tix) else tix[:i] + _BYTE[j] + tix[i:]
        else:
            tix = array("I", list(tix))  # (bytes as an initializer would be read as raw machine values)
            tix.insert(i, j)
        n, text, entry = len(self.times), self.id_text, _escaped_id(tx_id) + "\x00"
        start = _framed_offset(text, n, keep) if keep else 0
        if at == n:  # the common case: in event-time order (the text ends with a NUL)
            text = text[start:] + entry if start else text + entry
        else:
            split = _framed_offset(text, n, at) + 1
            text = text[start:split] + entry + text[split:]
        return CustomerWindow.made(times, amounts, seqs, terminal_text, tix, text)


Indices: TypeAlias = (
    "bytes | array[int]"  # a window's terminal indices: a byte each up to 256 distinct terminals, else uint32
)
_BYTE = [bytes((i,)) for i in range(256)]


def _indices(values: list[int], count: int) -> Indices:
    """Terminal indices, a byte each while a window has at most 256 distinct terminals (C-level searches and counts:
    ``in``, ``count``), four beyond."""
    return bytes(values) if count <= 256 else array("I", values)


def _compacted(terminal_text: str, count: int, tix: Indices) -> tuple[str, Indices]:
    """The ``count`` terminals of ``terminal_text`` without those no entry uses (the last one, just added, kept
    last), ``tix`` renumbered."""
    names = _framed_between(terminal_text, 0, count)
    used = sorted(set(tix))
    renumber = {old: new for new, old in enumerate(used)}
    kept = [*(names[old] for old in used), names[-1]]
    return _framed(kept), _indices([renumber[old] for old in tix], len(kept))


def _framed(values: Iterable[str]) -> str:
    """``"\\0value0\\0value1 ... \\0"``: values held as one string (a window's terminals, its tx ids)."""
    return "".join(["\x00" + _escaped_id(v) for v in values]) + "\x00"


def _framed_between(text: str, lo: int, hi: int) -> list[str]:
    """Values ``lo`` to ``hi - 1`` of a framed text."""
    if hi <= lo:
        return []
    parts = text.split("\x00", hi + 1)[lo + 1 : hi + 1]  # '', value0, ..., value(hi-1), the rest
    return _unescaped(parts) if "\x01" in text else parts


def _framed_at(text: str, i: int, n: int) -> str:
    """Value ``i`` (0 <= i < n) of a framed text of ``n`` values."""
    at = _framed_offset(text, n, i)
    part = text[at + 1 : text.index("\x00", at + 1)]
    return _unescaped([part])[0] if "\x01" in part else part


def _framed_index(text: str, value: str) -> int:
    """The index of ``value`` in a framed text (-1: none): one search."""
    at = text.find("\x00" + _escaped_id(value) + "\x00")
    return -1 if at < 0 else text.count("\x00", 0, at)


def _framed_offset(text: str, n: int, k: int) -> int:
    """Where in a framed text of ``n`` values the NUL before value ``k`` is (``k == n``: the last NUL)."""
    if k <= n - k:
        at = 0
        for _ in range(k):
            at = text.index("\x00", at + 1)
        return at
    at = len(text) - 1
    for _ in range(n - k):
        at = text.rindex("\x00", 0, at)
    return at


EMPTY_WINDOW = CustomerWindow.of(())  # never changed: windows are immutable
CustomerState = CustomerWindow

_STD_NOISE = 1e-9  # below this a standard deviation is rounding noise of equal amounts, not spread


def _time(entry: Sequence[Any]) -> float:
    return entry[0]  # type: ignore[return-value]


def customer_features(
    state: CustomerWindow | Sequence[tuple[Any, ...]],
    t: float,
    amount: float,
    terminal_id: str,
    tx_id: str,
    lateness_s: float = DAY_S,
    frauds_known_s: Mapping[str, float] = _NO_FRAUDS,
) -> tuple[dict[str, float], CustomerWindow]:
    """Features of one transaction from the customer's state, and a new state with it added and pruned.

    ``frauds_known_s`` (fraud ``tx_id`` -> when its label arrived, :func:`record_fraud`) leaves the customer's
    known frauds out of the ``known_legit`` features (those known by ``t``).

    ``state`` is never modified (a list of entries is read as a :class:`CustomerWindow`). A repeated ``tx_id``
    returns the features of its first arrival and the window itself (``new_state is state`` tells a repeat).

    >>> x, state = customer_features([], 0.0, 10.0, "k1", "t1")
    >>> x2, state = customer_features(state, 60.0, 30.0, "k1", "t2")
    >>> x2["customer_nb_tx_1hour"], x2["customer_avg_amount_1hour"], x2["terminal_new_for_customer_30day"]
    (2.0, 20.0, 0.0)
    >>> again = customer_features(state, 0.0, 10.0, "k1", "t1")  # a repeat: first features, no change
    >>> again[0] == x, again[1] is state
    (True, True)
    """
    window = state if isinstance(state, CustomerWindow) else CustomerWindow.of(state)
    if not window:
        x = _customer_x((), (), (), (), t, amount, terminal_id, frauds_known_s)
        return x, CustomerWindow.of([(t, amount, terminal_id, tx_id, 0)])
    i = window.index(tx_id)
    if i >= 0:
        seen = window[i]
        earlier = [e for e in window if e[4] < seen[4]]
        columns = tuple(zip(*earlier, strict=True)) or ((), (), (), ())
        x = _customer_x(columns[0], columns[1], columns[2], columns[3], _time(seen), seen[1], seen[2], frauds_known_s)
        return x, window
    times = window.times
    x = _window_x(window, t, amount, terminal_id, frauds_known_s)
    at = bisect.bisect_right(times, t)  # after equal times: ties keep arrival order
    horizon = max(times[-1], t) - _CUSTOMER_HORIZON_S - lateness_s
    keep = bisect.bisect_right(times, horizon)
    if t <= horizon:  # later than the lateness: scored, but already out of what the state holds
        return x, window.since(keep)
    return x, window.inserted(keep, at, t, amount, terminal_id, tx_id)


def _customer_x(
    times: Sequence[Any],
    amounts: Sequence[Any],
    terminals: Sequence[Any],
    ids: Sequence[Any],
    t: float,
    amount: float,
    terminal_id: str,
    frauds_known_s: Mapping[str, float] = _NO_FRAUDS,
) -> dict[str, float]:
    """Columns of what arrived before the transaction, sorted by time; the transaction itself is added here.

    The windows are nested and all end at ``t``. One pass backward from ``t``, shortest window first: each
    window adds the segment just older than the previous one (boundaries by binary search) to the running
    count, sum and maximum, one C-level ``sum``/``max`` per segment, and emits its values. The deviations are
    the reference's two-pass formula around each window's own mean, one C-level ``math.dist`` over the window
    (extended precision inside), never a sum of squares minus a squared sum, which cancels catastrophically
    when the spread is small against the mean.
    """
    x, end, start = _amount_x(times, amounts, t, amount)
    _terminal_counts(x, times, terminals, terminal_id, t, start, end)
    lo = bisect.bisect_right(times, t - _LEGIT_WINDOW_S, 0, end)
    return _legit_x(x, amounts, ids[lo:end] if frauds_known_s else None, lo, end, t, amount, frauds_known_s)


def _window_x(
    window: CustomerWindow, t: float, amount: float, terminal_id: str, frauds_known_s: Mapping[str, float]
) -> dict[str, float]:
    """:func:`_customer_x` over a window's columns as held: the terminals counted as the window's small integers,
    the tx ids split out of their text only for the fraud lookup."""
    times = window.times
    amounts = tuple(window.amounts)
    x, end, start = _amount_x(times, amounts, t, amount)
    j = window.terminal_index(terminal_id)
    _terminal_counts(x, times, window.tix, None if j < 0 else j, t, start, end)
    lo = bisect.bisect_right(times, t - _LEGIT_WINDOW_S, 0, end)
    ids = window.ids_between(lo, end) if frauds_known_s else None
    return _legit_x(x, amounts, ids, lo, end, t, amount, frauds_known_s)


def _terminal_counts(
    x: dict[str, float], times: Sequence[Any], terminals: Sequence[Any], terminal: Any, t: float, start: int, end: int
) -> None:
    """The customer's distinct terminals and its count at this one (see :func:`_customer_x`) into ``x``, over the
    terminal ids or over a window's indices of them (``terminal`` None: not among them)."""
    lo = start if _TERMINALS_FROM_START else bisect.bisect_right(times, t - _TERMINALS_WINDOW_S, 0, end)
    held = terminals[lo:end]
    recent = set(held)
    new = terminal is None or terminal not in recent
    x[_NEW_TERMINAL.name] = 1.0 if new else 0.0
    x[_NB_TERMINALS.name] = float(len(recent) + new)
    if _AT_TERMINAL_WINDOW_S != _TERMINALS_WINDOW_S:
        held = terminals[bisect.bisect_right(times, t - _AT_TERMINAL_WINDOW_S, 0, end) : end]
        new = terminal is None or terminal not in held
    x[_AT_TERMINAL.name] = 1.0 if new else float(held.count(terminal) + 1)


def _amount_x(
    times: Sequence[Any], amounts: Sequence[Any], t: float, amount: float
) -> tuple[dict[str, float], int, int]:
    """The amount windows, the z-score and the gap (see :func:`_customer_x`), with ``end`` (the entries at or before
    ``t``) and ``start`` (the first in the longest window)."""
    end = bisect.bisect_right(times, t)  # entries with time <= t
    start = bisect.bisect_right(times, t - _CUSTOMER_WINDOWS[-1][0], 0, end)
    x: dict[str, float] = {}
    total, top, done = amount, amount, end  # amounts[done:end] and this one are in ``total`` and ``top``
    for window_s, nb_tx, avg, std, max_ in _CUSTOMER_WINDOWS:  # shortest first
        lo = bisect.bisect_right(times, t - window_s, start, done)
        if lo < done:
            segment = amounts[lo:done]
            total += sum(segment)
            top = max(top, max(segment))
            done = lo
        n = end - lo + 1
        mean = total / n
        x[nb_tx] = float(n)
        x[avg] = mean
        if n == 1:
            x[std] = 0.0
        else:
            x[std] = math.sqrt((math.dist(amounts[lo:end], (mean,) * (n - 1)) ** 2 + (amount - mean) ** 2) / n)
        x[max_] = float(top)
    z_mean, z_std = x[_ZSCORE_OF[0]], x[_ZSCORE_OF[1]]
    x[_ZSCORE.name] = (amount - z_mean) / z_std if z_std > _STD_NOISE else 0.0
    x[_GAP.name] = min(t - times[end - 1], _GAP_CAP_S) if end else _GAP_CAP_S
    return x, end, start


def _legit_x(
    x: dict[str, float], amounts: Sequence[Any], ids: Sequence[Any] | None, lo: int, end: int, t: float,
    amount: float, frauds_known_s: Mapping[str, float],
) -> dict[str, float]:  # fmt: skip
    """The known-legit mean and z-score over ``amounts[lo:end]`` (tx ids ``ids``, None: no frauds known) and this
    one, into ``x``."""
    # Frauds are rare: one C-level intersection finds the window's (usually none); then the window is the 30-day one.
    flagged = frauds_known_s.keys() & ids if ids and lo < end else ()
    if not flagged and _LEGIT_SAME_AS_ZSCORE:
        x[_LEGIT_MEAN.name], x[_LEGIT_Z.name] = x[_ZSCORE_OF[0]], x[_ZSCORE.name]
        return x
    legit = [amount]
    if ids is None:
        legit.extend(amounts[lo:end])
    else:
        known = frauds_known_s.get
        legit.extend(a for a, i in zip(amounts[lo:end], ids, strict=True) if not known(i, math.inf) <= t)
    mean = sum(legit) / len(legit)
    std = math.sqrt(sum((a - mean) ** 2 for a in legit) / len(legit))
    x[_LEGIT_MEAN.name] = mean
    x[_LEGIT_Z.name] = (amount - mean) / std if std > _STD_NOISE else 0.0
    return x


class TerminalWindow(_EntryColumns):
    """A terminal's entries by column: times as C doubles, tx ids, seqs as C integers (-1: given without one).

    Every worker holds every terminal, ~40 entries each. By column the features bisect the times directly (no key
    function called per probe), a repeat check is one C-level search of the ids, the fraud lookup one C-level
    pass over the ids of the delayed windows, and the stored value is the raw columns
    (:func:`app.state.terminals.encode_state`). ``next_seq`` (above every seq held) is kept beside them, so an
    addition does not scan the seqs. Immutable: :func:`terminal_with_entry` returns a new window. Reads as a
    sequence of ``(t, tx_id, seq)`` tuples (iteration, ``len``, indexing, ``==`` with a list or tuple of entries).

    >>> w = TerminalWindow.of([(0.0, "a", 0), (60.0, "b", 1)])
    >>> len(w), w[-1], w == [(0.0, "a", 0), (60.0, "b", 1)], w.next_seq, TerminalWindow.of([(5.0, "x")])[0]
    (2, (60.0, 'b', 1), True, 2, (5.0, 'x', -1))
    """

    __slots__ = ("times", "ids", "seqs", "next_seq")

    def __init__(
        self, times: array[float], ids: tuple[str, ...], seqs: array[int], next_seq: int | None = None
    ) -> None:
        self.times = times
        self.ids = ids
        self.seqs = seqs
        self.next_seq: int = (max(seqs) + 1 if seqs else 0) if next_seq is None else next_seq

    @classmethod
    def of(cls, entries: Iterable[Sequence[Any]]) -> TerminalWindow:
        """From entries ``(t, tx_id, seq)`` sorted by time (ties by arrival); ``(t, tx_id)``: no seq (-1); fields
        past the third are ignored."""
        if isinstance(entries, TerminalWindow):
            return entries
        entries = entries if isinstance(entries, list | tuple) else list(entries)
        columns = tuple(zip(*entries, strict=False))  # as long as the shortest entry
        if not columns:
            return cls(array("d"), (), array("q"))
        seqs = columns[2] if len(columns) >= 3 else [e[2] if len(e) > 2 else -1 for e in entries]
        return cls(array("d", columns[0]), columns[1], array("q", seqs))

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return zip(self.times, self.ids, self.seqs, strict=True)

    def __getitem__(self, i: int) -> tuple[Any, ...]:
        return self.times[i], self.ids[i], self.seqs[i]

    def since(self, keep: int) -> TerminalWindow:
        """The entries from index ``keep`` on."""
        return TerminalWindow(self.times[keep:], self.ids[keep:], self.seqs[keep:], None if keep else self.next_seq)

    def inserted(self, keep: int, at: int, t: float, tx_id: str) -> TerminalWindow:
        """The entries from ``keep`` on with a new one at ``at`` (numbered after every entry held)."""
        seq = self.next_seq
        times, seqs = self.times[keep:], self.seqs[keep:]
        if at == len(self.ids):  # the common case: in event-time order
            times.append(t)
            seqs.append(seq)
            return TerminalWindow(times, self.ids[keep:] + (tx_id,), seqs, seq + 1)
        times.insert(at - keep, t)
        seqs.insert(at - keep, seq)
        return TerminalWindow(times, (*self.ids[keep:at], tx_id, *self.ids[at:]), seqs, seq + 1)

    def arrived_before(self, i: int) -> TerminalWindow:
        """The entries that arrived before entry ``i``: a lower seq (without one: without one, and before it)."""
        seqs = self.seqs
        seen = seqs[i]
        kept = [j for j, s in enumerate(seqs) if s < seen] if seen >= 0 else [j for j in range(i) if seqs[j] < 0]
        times, ids = self.times, self.ids
        return TerminalWindow(
            array("d", [times[j] for j in kept]), tuple(ids[j] for j in kept), array("q", [seqs[j] for j in kept])
        )


EMPTY_TERMINAL = TerminalWindow.of(())  # never changed: windows are immutable
TerminalState = TerminalWindow


def terminal_x(
    state: TerminalWindow | Sequence[Sequence[Any]], t: float, frauds_known_s: Mapping[str, float],
    delay_days: float = 7.0,
) -> dict[str, float]:  # fmt: skip
    """Terminal features of a transaction at ``t`` from the entries that arrived before it (read-only).

    Over ``[t - delay - n days, t - delay)`` for n in 1, 7, 30: the count, and the risk (entries whose fraud
    label is known by ``t``, ``frauds_known_s[tx_id] <= t``, over the count; 0 when empty); and
    ``terminal_nb_tx_1hour``: 1 (this one) plus the entries in ``(t - 1 hour, t]``; the fraud streak over
    ``[t - delay - 30 days, t - delay)``: how many of the latest entries there (in time order) are all known
    frauds, and the seconds from the first of them to ``t`` (0 without one). ``state`` must not hold the
    transaction itself (it would count in its own 1-hour window): see :func:`terminal_features`.

    >>> state = [(0.0, "t1", 0), (3600.0, "t2", 1)]
    >>> x = terminal_x(state, 7.5 * 86400, {"t1": 2 * 86400.0})  # t1 known to be fraud from day 2
    >>> x["terminal_nb_tx_1day_delay"], x["terminal_risk_1day_delay"], x["terminal_nb_tx_1hour"]
    (2.0, 0.5, 1.0)
    >>> x["terminal_fraud_streak_30day_delay"]  # t2, the latest, is not a known fraud: no streak
    0.0
    >>> x = terminal_x(state, 7.5 * 86400, {"t2": 2 * 86400.0})  # the latest is: a streak of 1 since t2's time
    >>> x["terminal_fraud_streak_30day_delay"], x["terminal_fraud_streak_age_s_30day_delay"] == 7.5 * 86400 - 3600
    (1.0, True)
    >>> terminal_x(state, 1.5 * 86400, {"t1": 2 * 86400.0}, delay_days=1)["terminal_risk_1day_delay"]  # not yet
    0.0
    """
    window = state if isinstance(state, TerminalWindow) else TerminalWindow.of(state)
    times = window.times
    end = t - delay_days * DAY_S
    stop = bisect.bisect_left(times, end)
    first = bisect.bisect_left(times, end - _TERMINAL_LONGEST_S, 0, stop)
    # Frauds are rare: one C-level pass finds the fraud labels of the longest window (usually none), then their times.
    known: list[float] = []
    streak, streak_age_s = 0, 0.0
    if frauds_known_s and first < stop:
        ids = window.ids[first:stop]
        flagged = frauds_known_s.keys() & ids
        if flagged:
            known_ids = {tx_id for tx_id in flagged if frauds_known_s[tx_id] <= t}
            known = [times[first + ids.index(tx_id)] for tx_id in known_ids]
            # The streak: the latest entries of the delayed span, all known frauds (walked back from the latest).
            lo = first if _STREAK_WINDOW_S == _TERMINAL_LONGEST_S else bisect.bisect_left(
                times, end - _STREAK_WINDOW_S, first, stop)  # fmt: skip
            j = stop - 1
            while j >= lo and ids[j - first] in known_ids:
                j -= 1
            streak = stop - 1 - j
            if streak:
                streak_age_s = t - times[j + 1]
    x: dict[str, float] = {}
    for window_s, nb_tx, risk in _TERMINAL_WINDOWS:
        lo = end - window_s
        count = stop - (first if window_s == _TERMINAL_LONGEST_S else bisect.bisect_left(times, lo, first, stop))
        x[nb_tx] = float(count)
        x[risk] = sum(lo <= e_t for e_t in known) / count if known and count else 0.0
    # (t - 1 hour, t]: in event-time order nothing held is after t; nothing before ``stop`` is in it (if it ends
    # after ``end``).
    hi = len(times) if not times or times[-1] <= t else bisect.bisect_right(times, t)
    since = t - _BURST_S
    x[_BURST.name] = float(hi - bisect.bisect_right(times, since, stop if since >= end else 0, hi) + 1)
    # The latest entry at or before t (the state holds delay + 30 days back, and the cap is at most 30 days).
    x[_TERMINAL_GAP.name] = min(t - times[hi - 1], _TERMINAL_GAP_CAP_S) if hi else _TERMINAL_GAP_CAP_S
    x[_STREAK.name] = float(streak)
    x[_STREAK_AGE.name] = streak_age_s
    return x


def terminal_with_entry(
    state: TerminalWindow | Sequence[Sequence[Any]], t: float, tx_id: str, delay_days: float = 7.0,
    lateness_s: float = DAY_S,
) -> TerminalWindow:  # fmt: skip
    """A new window with ``(t, tx_id, seq)`` added (after equal times) and pruned; on a repeat ``tx_id``, the
    window itself (``state`` unless given as a list: ``new is state`` tells a repeat).

    Pruning keeps what the longest window of the newest entry needs, plus the lateness: entries older than
    ``newest - (delay_days + 30) days - lateness_s`` go (the new entry too, when it is that late).

    >>> state = terminal_with_entry([(0.0, "t1", 0)], 60.0, "t2")
    >>> state, terminal_with_entry(state, 60.0, "t2") is state
    (TerminalWindow([(0.0, 't1', 0), (60.0, 't2', 1)]), True)
    >>> terminal_with_entry(state, 39 * 86400.0, "t3")  # t1 and t2 are past 37 days + 1 day
    TerminalWindow([(3369600.0, 't3', 2)])
    """
    window = state if isinstance(state, TerminalWindow) else TerminalWindow.of(state)
    if tx_id in window.ids:
        return window
    return _added(window, t, tx_id, delay_days, lateness_s)


def _added(window: TerminalWindow, t: float, tx_id: str, delay_days: float, lateness_s: float) -> TerminalWindow:
    times = window.times
    if not times:
        return TerminalWindow(array("d", (t,)), (tx_id,), array("q", (0,)))
    newest = times[-1]
    at = len(times) if newest <= t else bisect.bisect_right(times, t)
    horizon = max(newest, t) - delay_days * DAY_S - _TERMINAL_LONGEST_S - lateness_s
    keep = bisect.bisect_left(times, horizon) if times[0] < horizon else 0
    if t < horizon:  # later than the lateness: scored, but already out of what the state holds
        return window.since(keep)
    return window.inserted(keep, at, t, tx_id)


def terminal_features(
    state: TerminalWindow | Sequence[Sequence[Any]],
    t: float,
    tx_id: str,
    frauds_known_s: Mapping[str, float],
    delay_days: float = 7.0,
    lateness_s: float = DAY_S,
) -> tuple[dict[str, float], TerminalWindow]:
    """:func:`terminal_x` and the window with the transaction added (:func:`terminal_with_entry`).

    ``state`` is never modified. A ``tx_id`` already held returns the window itself and the features of its
    first arrival: its own time, the entries that arrived before it (by ``seq``), the labels known now.

    >>> frauds = {}
    >>> x, state = terminal_features([], 0.0, "t1", frauds)
    >>> x["terminal_nb_tx_1hour"], x["terminal_nb_tx_7day_delay"]
    (1.0, 0.0)
    >>> record_fraud(frauds, "t1", known_s=2 * 86400.0)
    >>> terminal_features(state, 7.5 * 86400, "t2", frauds)[0]["terminal_risk_1day_delay"]  # label known by then
    1.0
    >>> terminal_features(state, 1.5 * 86400, "t3", frauds, delay_days=1)[0]["terminal_risk_1day_delay"]  # not yet
    0.0
    >>> again = terminal_features(state, 0.0, "t1", frauds)  # a repeat: state unchanged, first features
    >>> again == (x, state), again[1] is state
    (True, True)
    """
    window = state if isinstance(state, TerminalWindow) else TerminalWindow.of(state)
    ids = window.ids
    if tx_id in ids:
        i = ids.index(tx_id)
        return terminal_x(window.arrived_before(i), window.times[i], frauds_known_s, delay_days), window
    x = terminal_x(window, t, frauds_known_s, delay_days)
    return x, _added(window, t, tx_id, delay_days, lateness_s)


def record_fraud(frauds_known_s: dict[str, float], tx_id: str, known_s: float) -> None:
    """Record a fraud label the moment it arrives: it counts from ``known_s`` on (the earliest, if sent twice)."""
    known = frauds_known_s.get(tx_id)
    frauds_known_s[tx_id] = known_s if known is None else min(known, known_s)


def newest_event_time_s(state: Sequence[Sequence[Any]] | CustomerWindow | TerminalWindow) -> float:
    """Event time of the key's newest entry (states are sorted), for expiring idle keys in stream time."""
    return _time(state[-1]) if state else float("-inf")


def customer_windows_at(state: CustomerWindow | Sequence[tuple[Any, ...]]) -> tuple[float, dict[str, float]]:
    """A customer's windows over ``(t - w, t]`` at its newest event time ``t`` (read-only, for lookups): count,
    mean, std and max per window and the distinct terminals in 30 days, over every entry held.

    >>> t, x = customer_windows_at([(0.0, 10.0, "k1", "a", 0), (60.0, 30.0, "k2", "b", 1)])
    >>> t, x["customer_nb_tx_1hour"], x["customer_avg_amount_1hour"], x["customer_nb_terminals_30day"]
    (60.0, 2.0, 20.0, 2.0)
    """
    if not state:
        raise ValueError("no entries")
    times, amounts, terminals, ids, _ = zip(*state, strict=True)
    t = times[-1]
    x = _customer_x(times[:-1], amounts[:-1], terminals[:-1], ids[:-1], t, amounts[-1], terminals[-1])
    return t, {name: x[name] for name in CUSTOMER_WINDOW_NAMES}


def terminal_windows_at(
    state: TerminalWindow | Sequence[Sequence[Any]], frauds_known_s: Mapping[str, float], delay_days: float = 7.0
) -> tuple[float, dict[str, float]]:
    """A terminal's windows at its newest event time ``t`` (read-only, for lookups): the delayed counts and risks
    as :func:`terminal_x` gives them, and the entries held in ``(t - 1 hour, t]``.

    >>> t, x = terminal_windows_at([(0.0, "a", 0), (600.0, "b", 1)], {})
    >>> t, x["terminal_nb_tx_1hour"], x["terminal_nb_tx_1day_delay"]
    (600.0, 2.0, 0.0)
    """
    window = state if isinstance(state, TerminalWindow) else TerminalWindow.of(state)
    if not window:
        raise ValueError("no entries")
    times = window.times
    t = times[-1]
    x = terminal_x(window, t, frauds_known_s, delay_days)
    x[_BURST.name] -= 1.0  # terminal_x counts the transaction being scored; here there is none
    # Between the newest entry and the one before it (terminal_x would measure from the newest to itself).
    x[_TERMINAL_GAP.name] = min(t - times[-2], _TERMINAL_GAP_CAP_S) if len(times) > 1 else _TERMINAL_GAP_CAP_S
    return t, x
