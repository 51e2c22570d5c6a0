"""Gradient-boosted trees off the decision path: a bounded window of labels, LightGBM retrained on it, and the
trees compiled to flat numpy arrays that score a whole batch at once.

LightGBM learns far better thresholds and interactions than an online learner, but it learns in batches and its
``predict`` costs tens of microseconds per call whatever the batch (and over a millisecond when its thread pool
wakes), too much for the decision path. So the trainer (its own process) retrains on a window of recent labels
and the scorers walk the compiled trees with a few numpy operations per tree level for the whole batch
(:class:`CompiledTrees`): the same scores as LightGBM's own predict, without it.

Pure: numpy and LightGBM, no I/O; everything pickles (LightGBM itself is only needed to train).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import itemgetter
from typing import Any

import numpy as np

# LightGBM's parameters that are not the family's (app/learning/model.py): one thread (the trainer is one process
# among the worker's), the same trees for the same window, no console output.
_FIXED: dict[str, Any] = {
    "objective": "binary",
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "seed": 42,
    "verbose": -1,
}


class LabelWindow:
    """The labelled examples a retrain learns from: the last ``negatives`` legitimate ones and the last ``frauds``
    frauds, in two rings of float32 rows (features in the order of the first example).

    Frauds are rare (about 0.8 %), so a ring of the same length would hold a few weeks of them and forget a
    scenario that has not recurred lately; with their own ring they are kept many times longer than the negatives.
    A model learnt on frauds of a longer span than the negatives overstates the fraud odds by the ratio of the
    spans: :meth:`span_ratio` gives it (spans counted in labels added), and the trainer subtracts its log from the
    logit so the probability keeps its meaning for the decision threshold.

    The trainer keeps the rows out of its published state (they were most of it: 10.9 MB at the default sizes):
    each ring slot is a record of its own (:meth:`changed`, the slots written since the last call, keyed by class
    and slot in the trainer's label store, so a compacted changelog holds one record per slot), the state carries
    :meth:`without_rows` (the counters and the window's ``id``), and a new owner puts the rows back with
    :meth:`restore`. A plain pickle (a checkpoint, the offline replay) still carries everything.
    """

    def __init__(self, negatives: int, frauds: int) -> None:
        self._reset(negatives, frauds)

    def _reset(self, negatives: int, frauds: int) -> None:
        self.capacity = {False: negatives, True: frauds}
        self.id = secrets.token_hex(4)  # names this window's records in the trainer's label store
        self.names: tuple[str, ...] = ()
        self.rows: dict[bool, np.ndarray] = {}
        self.added_at: dict[bool, np.ndarray] = {}  # the clock when each row was added
        self.dirty: dict[bool, np.ndarray] = {}  # the slots written since the last :meth:`changed`
        self.count = {False: 0, True: 0}  # rows added ever, per class (the ring's next slot is count % capacity)
        self.clock = 0

    def __len__(self) -> int:
        return self.held(False) + self.held(True)

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A window pickled before its rows were records of their own: every row it holds is still to be written."""
        self.__dict__.update(state)
        if "id" not in state:
            self.id = secrets.token_hex(4)
        if "dirty" not in state:
            self._allocate_dirty()
            for cls in (False, True):
                if cls in self.dirty:
                    self.dirty[cls][: self.held(cls)] = True

    def held(self, y: bool) -> int:
        return min(self.count[y], self.capacity[y])

    def _allocate(self, names: tuple[str, ...]) -> None:
        self.names = names
        for cls in (False, True):
            self.rows[cls] = np.zeros((self.capacity[cls], len(names)), dtype=np.float32)
            self.added_at[cls] = np.zeros(self.capacity[cls], dtype=np.int64)
        self._allocate_dirty()

    def _allocate_dirty(self) -> None:
        self.dirty = {cls: np.zeros(self.capacity[cls], dtype=bool) for cls in self.rows}

    def add(self, x: dict[str, float], y: bool) -> None:
        if not self.names:
            self._allocate(tuple(x))
        slot = self.count[y] % self.capacity[y]
        self.rows[y][slot] = [x.get(name, 0.0) for name in self.names]
        self.added_at[y][slot] = self.clock
        self.dirty[y][slot] = True
        self.count[y] += 1
        self.clock += 1

    def span(self, y: bool) -> int:
        """Labels added since the oldest row of class ``y`` still held (all of them while its ring is not full)."""
        if self.count[y] <= self.capacity[y]:
            return self.clock
        return int(self.clock - self.added_at[y][self.count[y] % self.capacity[y]])

    def span_ratio(self) -> float:
        """How much longer the frauds held span than the negatives held (1.0 while neither ring has wrapped)."""
        return self.span(True) / max(1, self.span(False))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """The held rows (float64, negatives then frauds) and their classes."""
        negatives, frauds = self.rows[False][: self.held(False)], self.rows[True][: self.held(True)]
        x = np.concatenate([negatives, frauds]).astype(np.float64)
        y = np.concatenate([np.zeros(len(negatives)), np.ones(len(frauds))])
        return x, y

    # ---- the rows as records of their own (the trainer's label store) -----------------------------------------

    def changed(self) -> list[tuple[bool, int, bytes]]:
        """``(class, slot, record)`` of every slot written since the last call (each once, however often the ring
        wrote it meanwhile), and forget them: what one publication of the trainer carries of the window."""
        out: list[tuple[bool, int, bytes]] = []
        for cls, dirty in self.dirty.items():
            slots = np.flatnonzero(dirty)
            if not len(slots):
                continue
            rows, added_at = self.rows[cls], self.added_at[cls]
            out += [(cls, slot, encode_row(int(added_at[slot]), rows[slot])) for slot in slots.tolist()]
            dirty[:] = False
        return out

    def without_rows(self) -> LabelWindow:
        """A copy with the counters, the feature names and the id but no rows: what the trainer's state carries."""
        copy = LabelWindow.__new__(LabelWindow)
        copy.__dict__.update(self.__dict__)
        copy.capacity, copy.count = dict(self.capacity), dict(self.count)
        copy.rows, copy.added_at, copy.dirty = {}, {}, {}
        return copy

    def restore(self, records: Iterable[tuple[bool, int, bytes]]) -> bool:
        """Put back the rows of a window from :meth:`without_rows`, from the records :meth:`changed` gave (the
        newest per slot). False, with the window emptied (a new id, nothing held), when a slot it holds has no
        record: a window that learns again from nothing rather than from rows of zeros."""
        if not self.names:  # nothing was ever added: nothing to put back
            return True
        self._allocate(self.names)
        width = len(self.names)
        seen = {cls: np.zeros(self.capacity[cls], dtype=bool) for cls in (False, True)}
        for cls, slot, record in records:
            if slot >= self.capacity[cls]:
                continue  # a record of a larger window of the same id: not this one's
            added_at, row = decode_row(record, width)
            self.rows[cls][slot], self.added_at[cls][slot] = row, added_at
            seen[cls][slot] = True
        if all(seen[cls][: self.held(cls)].all() for cls in (False, True)):
            return True
        self._reset(self.capacity[False], self.capacity[True])
        return False

    def digest(self) -> str:
        """A hash of what a retrain would learn from (held rows, when each was added, the counters): two windows
        with the same digest train the same trees."""
        h = hashlib.sha256(repr((self.names, self.count, self.clock)).encode())
        for cls in (False, True):
            if cls in self.rows:
                h.update(self.rows[cls][: self.held(cls)].tobytes())
                h.update(self.added_at[cls][: self.held(cls)].tobytes())
        return h.hexdigest()[:16]


def window_from_state(state: dict[str, Any]) -> LabelWindow:
    """The window :meth:`LabelWindow.without_rows` pickled (the trainer's state); its rows come back with
    :meth:`LabelWindow.restore`, from the label store."""
    window = LabelWindow.__new__(LabelWindow)
    window.__dict__.update(state)
    return window


_ADDED_AT = struct.Struct(">q")


def encode_row(added_at: int, row: np.ndarray) -> bytes:
    """One ring slot's record: when the row was added (the window's clock), then its float32 features.

    >>> added_at, row = decode_row(encode_row(7, np.array([1.5, -2.0], dtype=np.float32)), 2)
    >>> added_at, row.tolist()
    (7, [1.5, -2.0])
    """
    return _ADDED_AT.pack(added_at) + np.asarray(row, dtype="<f4").tobytes()


def decode_row(record: bytes, width: int) -> tuple[int, np.ndarray]:
    (added_at,) = _ADDED_AT.unpack_from(record)
    row = np.frombuffer(record, dtype="<f4", count=width, offset=_ADDED_AT.size)
    return int(added_at), row


def _sigmoid(raw: float) -> float:
    """LightGBM's sigmoid, 0.0 below a raw score whose ``exp(-raw)`` overflows a float (a leaf of a retrain whose
    earlier trees put a region's odds near 1 can be a large negative correction: raw scores under -709 were met in
    a full-size replay, and ``math.exp`` raises there rather than return infinity).

    >>> _sigmoid(0.0), _sigmoid(-1000.0), _sigmoid(1000.0)
    (0.5, 0.0, 1.0)
    """
    return 1.0 / (1.0 + math.exp(-raw)) if raw > -700.0 else 0.0


def train_booster(x: np.ndarray, y: np.ndarray, params: dict[str, Any], rounds: int) -> Any:
    """A LightGBM booster of ``rounds`` trees on ``x``, ``y`` (``params`` over :data:`_FIXED`)."""
    import lightgbm  # only the trainer trains: scorers load compiled trees and never import it

    dataset = lightgbm.Dataset(x, y, params={"verbose": -1}, free_raw_data=True)
    return lightgbm.train({**_FIXED, **params}, dataset, num_boost_round=rounds)


# What a :class:`CompiledTrees` derives from its node arrays where it scores: never pickled (a version carries the
# node arrays only), rebuilt on first use.
_DERIVED = ("_leaves", "_picker", "_one", "_names")


@dataclass(frozen=True, slots=True)
class _OneRow:
    """The nodes of :meth:`CompiledTrees._one_row`: the first ``evaluated`` (the splits and their leaf siblings) with
    their feature, threshold and left child; ``child`` every node's own id (the template of a row's next nodes);
    the roots, the values and the leaf tables in the same numbering."""

    evaluated: int
    feature: np.ndarray
    threshold: np.ndarray
    left: np.ndarray
    child: np.ndarray
    roots: np.ndarray
    value: np.ndarray
    leaf_feature: np.ndarray
    leaf_change: np.ndarray


class CompiledTrees:
    """Trees as flat node arrays, walked one level at a time for a whole batch.

    Every node (split or leaf, all trees together) has a feature, a threshold, the index of its left child (the
    right child is the next node) and a value (LightGBM's leaf value, or its internal value for a split). A leaf
    points to itself with an infinite threshold, so walking ``depth`` levels from every root ends on each tree's
    leaf whatever its depth: per level, one gather of the nodes' features and thresholds, one comparison and one
    gather of the children, over the batch times the trees at once. LightGBM sends ``x <= threshold`` left; the
    features are finite (NaN is not a value the feature engine produces, it would go left).

    The raw score is the leaves' sum in LightGBM's order (a cumulative sum, so it is the same sum bit for bit) plus
    ``offset``. Reasons come from Saabas' contributions (each split on the path credits its feature with the change
    of value it makes), see :meth:`reasons`.
    """

    def __init__(self, booster: Any, names: Sequence[str], offset: float = 0.0) -> None:
        model = booster.dump_model()
        self.names = tuple(names)
        self.offset = offset
        feature: list[int] = []
        threshold: list[float] = []
        left: list[int] = []
        value: list[float] = []
        roots: list[int] = []
        depth = 0

        def new() -> int:
            feature.append(0)
            threshold.append(math.inf)
            left.append(len(left))
            value.append(0.0)
            return len(feature) - 1

        def fill(i: int, node: dict[str, Any], level: int) -> int:
            if "split_index" not in node:
                value[i] = float(node["leaf_value"])
                return level
            if node["decision_type"] != "<=":
                raise ValueError(f"cannot compile a {node['decision_type']!r} split (categorical features?)")
            feature[i] = int(node["split_feature"])
            threshold[i] = float(node["threshold"])
            value[i] = float(node["internal_value"])
            left[i] = new()
            new()  # the right child is always the node after the left one
            return max(fill(left[i], node["left_child"], level + 1), fill(left[i] + 1, node["right_child"], level + 1))

        for tree in model["tree_info"]:
            root = new()
            roots.append(root)
            depth = max(depth, fill(root, tree["tree_structure"], 0))
        self.feature = np.array(feature, dtype=np.intp)
        self.threshold = np.array(threshold, dtype=np.float64)
        self.left = np.array(left, dtype=np.intp)
        self.value = np.array(value, dtype=np.float64)
        self.roots = np.array(roots, dtype=np.intp)
        self.depth = depth
        self._leaves: tuple[np.ndarray, np.ndarray] | None = None

    @property
    def trees(self) -> int:
        return len(self.roots)

    def __getstate__(self) -> dict[str, Any]:
        """The node arrays only: the leaf tables and the one-row layout are rebuilt from them where they are used."""
        return {name: value for name, value in self.__dict__.items() if name not in _DERIVED} | {"_leaves": None}

    def row(self, x: dict[str, float]) -> np.ndarray:
        """:meth:`matrix` of one transaction, as a one-dimensional row."""
        try:
            values = self._pick(x)
        except KeyError:
            values = tuple(x.get(name, 0.0) for name in self.names)
        return np.fromiter(values, np.float64, len(self.names))

    def matrix(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        """The rows of ``xs`` in the trees' feature order (a missing feature is 0, as the window stores it)."""
        names = self.names
        try:  # one flat pass from the picked tuples: cheaper than numpy finding the shape of a list of tuples
            flat = np.fromiter(chain.from_iterable(map(self._pick, xs)), np.float64, len(xs) * len(names))
        except KeyError:
            flat = np.array([x.get(name, 0.0) for x in xs for name in names], dtype=np.float64)
        return flat.reshape(len(xs), len(names))

    @property
    def _pick(self) -> Callable[[dict[str, float]], tuple[float, ...]]:
        pick = self.__dict__.get("_picker")
        if pick is None:
            getter = itemgetter(*self.names)
            pick = self.__dict__["_picker"] = getter if len(self.names) > 1 else (lambda x: (getter(x),))
        return pick

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf each row of ``x`` (rows, features) reaches in each tree: (trees, rows) node indices.

        Tree-major, so the sum over the trees is a reduction over the first axis (sequential, see :meth:`raw`) and
        the batch's features are read from ``x`` transposed, a row of it per feature. The first two levels need no
        gather of nodes: every row starts at the same roots, so the roots' and their children's values are whole
        rows of ``x`` transposed, compared with each node's threshold at once, and the second level's node is chosen
        between the two children's outcomes by the first comparison. Each level after is a gather of the nodes'
        features, of their values in ``x`` and of their thresholds, one comparison and one gather of the children,
        over trees x rows."""
        rows = x.shape[0]
        columns_t = np.ascontiguousarray(x.T)  # (features, rows): a root level's values are whole rows of it
        if not len(self.roots):
            return np.zeros((0, rows), dtype=np.intp)
        feature, threshold, left = self.feature, self.threshold, self.left

        def outcome(nodes: np.ndarray) -> np.ndarray:
            """Each of ``nodes``' next node for every row (trees, rows): its left child, plus 1 where x goes right."""
            right = columns_t.take(feature.take(nodes), axis=0) > threshold.take(nodes)[:, None]
            return left.take(nodes)[:, None] + right

        roots = self.roots
        if self.depth <= 1:
            return outcome(roots)
        first = left.take(roots)  # a leaf root is its own child, and has no right one: it never goes right
        goes_right = columns_t.take(feature.take(roots), axis=0) > threshold.take(roots)[:, None]
        node = np.where(goes_right, outcome(first + (first != roots)), outcome(first))
        flat = columns_t.ravel()
        feature_at = feature * rows  # the start of each node's feature row in ``flat``
        row = np.arange(rows, dtype=np.intp)
        for _ in range(self.depth - 2):
            columns = feature_at.take(node)
            columns += row
            following = left.take(node)
            following += flat.take(columns) > threshold.take(node)
            node = following
        return node

    def raw(self, x: np.ndarray, leaves: np.ndarray | None = None) -> np.ndarray:
        """The raw scores (log-odds) of the rows of ``x``: the leaves' values summed tree by tree, plus the offset.

        LightGBM adds the trees one after the other; so does a reduction over the first axis of (trees, rows) for two
        rows or more (numpy adds whole rows, no pairwise summation), and a cumulative sum for a single row (its
        reduction would be pairwise): the same sum, bit for bit."""
        reached = self.leaves(x) if leaves is None else leaves
        values = self.value.take(reached)
        if not self.trees:
            total = np.zeros(reached.shape[1])
        elif reached.shape[1] == 1:
            total = np.cumsum(values[:, 0])[-1:]
        else:
            total = np.add.reduce(values, axis=0)
        return total + self.offset if self.offset else total

    def probabilities(self, x: np.ndarray, leaves: np.ndarray | None = None) -> list[float]:
        """LightGBM's sigmoid of the raw scores, one ``math.exp`` each: numpy's vectorised exp may differ from the C
        library's in the last bit, and a transaction must score the same alone or in any batch."""
        return [_sigmoid(r) for r in self.raw(x, leaves).tolist()]

    def score_row(self, row: np.ndarray, k: int) -> tuple[float, list[str]]:
        """:meth:`score` of one row (features,): the live path's most common batch is a single transaction, where
        each numpy call's fixed cost is what counts.

        Every split's next node for this row at once (three operations over the splits, in the layout of
        :meth:`_one_row`), then one gather per level: cheaper for one row than the batch walk's operations per level
        over the trees. The raw score is the leaves' sum in the trees' order (an accumulation: sequential, as
        LightGBM's), the reasons the top ``k`` of the credits by arg-max (the first of equal credits first, as in a
        batch's :meth:`reasons`)."""
        one = self.__dict__.get("_one") or self._one_row()
        child = one.child.copy()  # the leaves point to themselves; the splits' part is written below
        np.add(one.left, row.take(one.feature) > one.threshold, out=child[: one.evaluated])
        node = one.roots
        for _ in range(self.depth):
            node = child.take(node)
        raw = float(np.add.accumulate(one.value.take(node))[-1]) if len(node) else 0.0
        probability = _sigmoid(raw + self.offset if self.offset else raw)
        if not k:
            return probability, []
        credit = np.bincount(one.leaf_feature.take(node), weights=one.leaf_change.take(node), minlength=len(self.names))
        names = self.names
        reasons: list[str] = []
        for _ in range(min(k, len(names))):
            best = int(credit.argmax())
            if not credit[best] > 0.0:  # the rest are no higher: sorted, they would all be left out
                break
            reasons.append(names[best])
            credit[best] = -math.inf
        return probability, reasons

    def _one_row(self) -> _OneRow:
        """The nodes renumbered for :meth:`score_row` (built once where a single row is scored; not pickled).

        Siblings stay side by side (the right child is the node after the left one) and every node whose next node
        can differ from itself comes first: the splits, with the leaves that are a split's sibling (their infinite
        threshold sends them to themselves). The pairs of leaves and the leaf roots come after, their next node
        themselves whatever the row: so a row's comparisons cover the splits and a few leaves (about 60 % of the
        nodes at the default sizes), not every node."""
        count = len(self.left)
        is_leaf = self.left == np.arange(count)
        first: list[int] = []  # old ids, in the new order: the part compared for each row
        last: list[int] = []  # the part that points to itself
        for root in self.roots.tolist():
            (last if is_leaf[root] else first).append(root)
        for split in np.flatnonzero(~is_leaf).tolist():
            pair = [int(self.left[split]), int(self.left[split]) + 1]
            (first if not (is_leaf[pair[0]] and is_leaf[pair[1]]) else last).extend(pair)
        old = np.array(first + last, dtype=np.intp)
        new = np.empty(count, dtype=np.intp)
        new[old] = np.arange(count, dtype=np.intp)
        evaluated = len(first)
        leaf_feature, leaf_change = self._leaf_tables()
        one = _OneRow(
            evaluated=evaluated,
            feature=self.feature.take(old[:evaluated]),
            threshold=self.threshold.take(old[:evaluated]),
            left=new.take(self.left.take(old[:evaluated])),
            child=np.arange(count, dtype=np.intp),
            roots=new.take(self.roots),
            value=self.value.take(old),
            leaf_feature=leaf_feature.take(old),
            leaf_change=leaf_change.take(old).astype(np.float64),
        )
        self.__dict__["_one"] = one
        return one

    def score(self, x: np.ndarray, k: int) -> list[tuple[float, list[str]]]:
        """Probability and up to ``k`` reasons for each row of ``x``."""
        if x.shape[0] == 1:
            return [self.score_row(x[0], k)]
        reached = self.leaves(x)
        probabilities = self.probabilities(x, reached)
        if not k:
            return [(p, []) for p in probabilities]
        return list(zip(probabilities, self.reasons(reached, k), strict=True))

    def reasons(self, reached: np.ndarray, k: int) -> list[list[str]]:
        """Up to ``k`` features with the largest positive credit over the leaves ``reached`` (trees, rows): each tree
        credits the feature its path raised the value most with that rise (Saabas' contributions, the path's largest
        one per tree: one gather per tree instead of one per split, a fifth of the cost of the exact sum at depth 6).

        The top ``k`` by ``k`` arg-maxes over the batch's credits (the first of equal credits first, as the one
        row's stable sort): cheaper than sorting every row's credits."""
        leaf_feature, leaf_change = self._leaf_tables()
        rows, width = reached.shape[1], len(self.names)
        features = leaf_feature.take(reached)
        features += np.arange(0, rows * width, width, dtype=np.intp)
        # bincount adds in the order given: each row's credits tree after tree, as the one row's bincount does
        counted = np.bincount(features.ravel(), weights=leaf_change.take(reached).ravel(), minlength=rows * width)
        credit = counted.astype(np.float64, copy=False)  # int64 when no tree or row at all
        by_row = credit.reshape(rows, width)
        offsets = np.arange(0, rows * width, width, dtype=np.intp)
        picks = min(k, width)
        top = np.empty((rows, picks), dtype=np.intp)
        raising = np.zeros(rows, dtype=np.intp)  # how many of each row's picks have a positive credit
        for i in range(picks):
            best = by_row.argmax(axis=1)
            top[:, i] = best
            best += offsets
            raising += credit.take(best) > 0.0
            credit.put(best, -math.inf)
        # A row's picks come in decreasing credit, so the positive ones are its first ``raising``: one slice a row.
        named = self._names_array().take(top).tolist()
        return [names if up == picks else names[:up] for names, up in zip(named, raising.tolist(), strict=True)]

    def _names_array(self) -> np.ndarray:
        names = self.__dict__.get("_names")
        if names is None:
            names = self.__dict__["_names"] = np.array(self.names, dtype=object)
        return names

    def _path(self, leaf: int, parent: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The (feature, change of value) of each split from the root down to ``leaf`` (``parent``: :meth:`_parents`,
        computed once by a caller that walks many leaves)."""
        if parent is None:
            parent = self._parents()
        steps: list[tuple[int, float]] = []
        node = leaf
        while parent[node] >= 0:
            up = int(parent[node])
            steps.append((int(self.feature[up]), float(self.value[node] - self.value[up])))
            node = up
        return steps[::-1]

    def _parents(self) -> np.ndarray:
        parent = np.full(len(self.feature), -1, dtype=np.intp)
        splits = np.flatnonzero(self.left != np.arange(len(self.left)))
        parent[self.left[splits]] = splits
        parent[self.left[splits] + 1] = splits
        return parent

    def _leaf_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """For every leaf, the feature whose splits on its path raised the value most (summed per feature) and that
        rise; built once where reasons are asked (not pickled: a version carries the node arrays only)."""
        if self._leaves is None:
            leaf_feature = np.zeros(len(self.feature), dtype=np.intp)
            leaf_change = np.zeros(len(self.feature), dtype=np.float64)
            # The parents once for every leaf: per leaf they cost a pass over all nodes, which made a loaded version's
            # first reasons quadratic in its size (the evaluator, loading a snapshot an hour, spent most of a gbdt
            # replay there).
            parent = self._parents()
            for leaf in np.flatnonzero(self.left == np.arange(len(self.left))).tolist():
                summed: dict[int, float] = {}
                for feature, change in self._path(leaf, parent):
                    summed[feature] = summed.get(feature, 0.0) + change
                if summed:
                    best = max(summed, key=lambda f: summed[f])
                    leaf_feature[leaf], leaf_change[leaf] = best, summed[best]
            self._leaves = (leaf_feature, leaf_change)
        return self._leaves

    def nbytes(self) -> int:
        """The node arrays' size (what a version carries besides pickle's framing)."""
        return sum(a.nbytes for a in (self.feature, self.threshold, self.left, self.value, self.roots))
