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

import math
from collections.abc import Callable, Sequence
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
    """

    def __init__(self, negatives: int, frauds: int) -> None:
        self.capacity = {False: negatives, True: frauds}
        self.names: tuple[str, ...] = ()
        self.rows: dict[bool, np.ndarray] = {}
        self.added_at: dict[bool, np.ndarray] = {}  # the clock when each row was added
        self.count = {False: 0, True: 0}  # rows added ever, per class (the ring's next slot is count % capacity)
        self.clock = 0

    def __len__(self) -> int:
        return self.held(False) + self.held(True)

    def held(self, y: bool) -> int:
        return min(self.count[y], self.capacity[y])

    def add(self, x: dict[str, float], y: bool) -> None:
        if not self.names:
            self.names = tuple(x)
            for cls in (False, True):
                self.rows[cls] = np.zeros((self.capacity[cls], len(self.names)), dtype=np.float32)
                self.added_at[cls] = np.zeros(self.capacity[cls], dtype=np.int64)
        slot = self.count[y] % self.capacity[y]
        self.rows[y][slot] = [x.get(name, 0.0) for name in self.names]
        self.added_at[y][slot] = self.clock
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


def train_booster(x: np.ndarray, y: np.ndarray, params: dict[str, Any], rounds: int) -> Any:
    """A LightGBM booster of ``rounds`` trees on ``x``, ``y`` (``params`` over :data:`_FIXED`)."""
    import lightgbm  # only the trainer trains: scorers load compiled trees and never import it

    dataset = lightgbm.Dataset(x, y, params={"verbose": -1}, free_raw_data=True)
    return lightgbm.train({**_FIXED, **params}, dataset, num_boost_round=rounds)


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
        """The node arrays only: the leaf tables are rebuilt from them where reasons are asked."""
        return {name: value for name, value in self.__dict__.items() if name not in ("_leaves", "_picker")} | {
            "_leaves": None
        }

    def row(self, x: dict[str, float]) -> np.ndarray:
        """:meth:`matrix` of one transaction, as a one-dimensional row."""
        try:
            values = self._pick(x)
        except KeyError:
            values = tuple(x.get(name, 0.0) for name in self.names)
        return np.array(values, dtype=np.float64).reshape(len(self.names))

    def matrix(self, xs: Sequence[dict[str, float]]) -> np.ndarray:
        """The rows of ``xs`` in the trees' feature order (a missing feature is 0, as the window stores it)."""
        names = self.names
        pick = self._pick
        try:
            rows = [pick(x) for x in xs]
        except KeyError:
            rows = [tuple(x.get(name, 0.0) for name in names) for x in xs]
        return np.array(rows, dtype=np.float64).reshape(len(xs), len(names))

    @property
    def _pick(self) -> Callable[[dict[str, float]], tuple[float, ...]]:
        pick = self.__dict__.get("_picker")
        if pick is None:
            getter = itemgetter(*self.names)
            pick = self.__dict__["_picker"] = getter if len(self.names) > 1 else (lambda x: (getter(x),))
        return pick

    def leaves(self, x: np.ndarray) -> np.ndarray:
        """The leaf each row of ``x`` (rows, features) reaches in each tree: (rows, trees) node indices."""
        rows = x.shape[0]
        flat = x.ravel()
        feature, threshold, left = self.feature, self.threshold, self.left
        if rows == 1:  # one transaction: one-dimensional arrays, no row offsets (the live path's common case)
            node = self.roots
            for _ in range(self.depth):
                node = left.take(node) + (flat.take(feature.take(node)) > threshold.take(node))
            return node.reshape(1, -1)
        offsets = (np.arange(rows, dtype=np.intp) * x.shape[1])[:, None]
        node = np.broadcast_to(self.roots, (rows, len(self.roots)))
        for _ in range(self.depth):
            columns = feature.take(node)
            columns += offsets
            node = left.take(node) + (flat.take(columns) > threshold.take(node))
        return node

    def raw(self, x: np.ndarray, leaves: np.ndarray | None = None) -> np.ndarray:
        """The raw scores (log-odds) of the rows of ``x``: the leaves' values summed tree by tree, plus the offset."""
        reached = self.leaves(x) if leaves is None else leaves
        total: np.ndarray = np.cumsum(self.value.take(reached), axis=1)[:, -1] if self.trees else np.zeros(len(x))
        return total + self.offset if self.offset else total

    def probabilities(self, x: np.ndarray, leaves: np.ndarray | None = None) -> list[float]:
        """LightGBM's sigmoid of the raw scores, one ``math.exp`` each: numpy's vectorised exp may differ from the C
        library's in the last bit, and a transaction must score the same alone or in any batch."""
        exp = math.exp
        return [1.0 / (1.0 + exp(-r)) for r in self.raw(x, leaves).tolist()]

    def score_row(self, row: np.ndarray, k: int) -> tuple[float, list[str]]:
        """:meth:`score` of one row (features,): the live path's most common batch is a single transaction, where
        each numpy call's fixed cost is what counts."""
        # Every node's next node for this row at once (three operations over all nodes), then one gather per level:
        # cheaper for one row than the batch walk's five operations per level over the trees.
        child = self.left + (row.take(self.feature) > self.threshold)
        node = self.roots
        for _ in range(self.depth):
            node = child.take(node)
        raw = float(np.cumsum(self.value.take(node))[-1]) if len(node) else 0.0
        probability = 1.0 / (1.0 + math.exp(-(raw + self.offset if self.offset else raw)))
        if not k:
            return probability, []
        leaf_feature, leaf_change = self._leaf_tables()
        credit = np.bincount(leaf_feature.take(node), weights=leaf_change.take(node), minlength=len(self.names))
        names = self.names
        return probability, [names[j] for j in np.argsort(-credit)[:k].tolist() if credit[j] > 0.0]

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
        """Up to ``k`` features with the largest positive credit over the leaves ``reached``: each tree credits the
        feature its path raised the value most with that rise (Saabas' contributions, the path's largest one per
        tree: one gather per tree instead of one per split, a fifth of the cost of the exact sum at depth 6)."""
        leaf_feature, leaf_change = self._leaf_tables()
        rows, width = reached.shape[0], len(self.names)
        features = leaf_feature.take(reached)
        if rows > 1:
            features += (np.arange(rows, dtype=np.intp) * width)[:, None]
        credit = np.bincount(features.ravel(), weights=leaf_change.take(reached).ravel(), minlength=rows * width)
        credit = credit.reshape(rows, width)
        top = np.argsort(-credit, axis=1)[:, :k]
        raising = np.take_along_axis(credit, top, axis=1) > 0.0  # only the top k go back to Python
        names = self.names
        return [
            [names[j] for j, up in zip(order, ups, strict=True) if up]
            for order, ups in zip(top.tolist(), raising.tolist(), strict=True)
        ]

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
