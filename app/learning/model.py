"""The model: one learner chosen by name (River's online families, or trees retrained on a window), that scores before
it learns.

Fraud is rare (about 0.8 % of transactions), so every family here learns frauds more heavily than legitimate
transactions: the linear model weighs positives in its loss, and any family can learn only a share of the
legitimate labels (``neg``, every fraud is always learned), which both rebalances the classes and keeps learning
cheap enough to follow the label rate. The probability is corrected for that share (odds times ``neg``), so the
decision threshold means the same with or without it.

Names are a family and optional parameters, ``family:key=value,key=value``; the candidates were measured on the
handbook's protocol by ``scripts/model_candidates.py`` (see BENCHMARKS.md, "Model candidates"):

- ``logreg``: standard scaling then logistic regression (``opt`` sgd, adam or adagrad, ``lr``, ``wpos`` the
  weight of a fraud in the loss, ``l2``); the intercept starts at the prior, so a cold model does not flag
  everything. ``bins`` (0: none) adds one indicator per quantile bin of each feature, the bins fixed after ``warm``
  labels from their quantiles and, with ``fq`` 1, the frauds' quantiles too (:mod:`app.learning.binning`): thresholds
  such as an amount over 220 that a straight line cannot draw. ``log`` 1 squashes every feature by a signed
  ``log1p`` before scaling. Reasons are the features whose scaled value times weight (plus their bin's weight)
  raised the score most: exact for a linear model, and what an analyst asks first.
- ``hoeffding``, ``arf`` and ``bagged-ht``: a Hoeffding tree, an adaptive random forest, online bagging of
  Hoeffding trees (``trees``, ``grace`` period, ``share`` the ``max_share_to_split``: River's default of 0.99
  never lets a leaf with 0.8 % fraud split, ``leaf`` prediction mc, nb or nba, ``depth``). Reasons are the
  features tested on the path to the leaf in the first tree, nearest the leaf first.
- ``gbdt``: gradient-boosted trees (LightGBM: ``trees``, ``leaves`` per tree, ``depth`` at most, ``lr``,
  ``minleaf`` examples per leaf) retrained from scratch every ``every`` labels on a window of the last ``negs``
  legitimate labels learned (after the ``neg`` sampling) and the last ``frauds`` frauds, which span far longer, so
  a rare old pattern is not forgotten (:mod:`app.learning.boosting`). It learns nothing between retrains and
  scores the prior before the first; the trees are compiled to numpy arrays that score a batch at once
  (:meth:`FraudModel.score_many`). Reasons: each tree's leaf credits the feature its path raised most. Meant to
  be trained off the decision path (the trainer's process) and enter as the challenger.
- ``blend``: the default linear model (``logreg:opt=adagrad,lr=0.1,bins=8``, ``warm`` as there) and a ``gbdt`` (its
  ``trees``, ``every``, ``minleaf``, and ``gneg`` its ``neg``) learning the same labels, scored by a fixed weighted
  average of their logits (``w``: the gbdt's weight; the linear model alone until the first retrain). Fixed, not
  learned: nothing to fit on the labels that also judge it. Reasons: the two parts' in turn.
- ``leaflr``: the linear model above on the scaled features plus one indicator per small Hoeffding tree for the
  leaf ``x`` falls in (``trees``, ``grace``, ``share``, ``depth``): the trees find thresholds, the linear model
  weighs them. Reasons as for ``logreg``, over the features only.

Every family also takes ``features``: ``product`` (the default: every declared feature) or ``protocol`` (the
handbook's 15 alone, :data:`app.features.spec.PROTOCOL_FEATURE_NAMES`: figures comparable with the published table).
"""

from __future__ import annotations

import copy
import logging
import math
import pickle
import random
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
from river import compose, ensemble, forest, linear_model, optim, preprocessing, tree
from river.tree.base import Branch

from app.features.spec import FEATURE_SUBSETS
from app.learning.binning import QuantileBins
from app.learning.boosting import CompiledTrees, LabelWindow, train_booster
from app.state.checkpoints import write_atomically

log = logging.getLogger(__name__)

# The measured choice (BENCHMARKS.md, "Model candidates (issue 9)"); app/settings.py has the same default.
DEFAULT_MODEL = "logreg:opt=adagrad,lr=0.1,bins=8"

Param = float | int | str

# Each family's parameters and their defaults; a name may override any of them and nothing else.
FAMILIES: dict[str, dict[str, Param]] = {
    "logreg": {
        "opt": "sgd",
        "lr": 0.05,
        "wpos": 5.0,
        "l2": 0.0,
        "neg": 1.0,
        "bins": 0,
        "warm": 50000,
        "fq": 1,
        "log": 0,
    },
    "hoeffding": {"grace": 200, "share": 1.0, "leaf": "mc", "depth": 0, "neg": 1.0},
    "arf": {"trees": 10, "grace": 50, "share": 1.0, "leaf": "mc", "depth": 0, "lam": 6, "neg": 1.0},
    "bagged-ht": {"trees": 10, "grace": 200, "share": 1.0, "leaf": "mc", "depth": 0, "neg": 1.0},
    "gbdt": {
        "trees": 100,
        "leaves": 31,
        "depth": 6,
        "lr": 0.1,
        "minleaf": 50,
        "every": 20000,
        "negs": 60000,
        "frauds": 10000,
        "neg": 0.2,
    },
    "blend": {"w": 0.5, "trees": 100, "every": 20000, "minleaf": 50, "gneg": 0.2, "warm": 50000, "neg": 1.0},
    "leaflr": {
        "opt": "sgd",
        "lr": 0.05,
        "wpos": 5.0,
        "l2": 0.0,
        "trees": 3,
        "grace": 200,
        "share": 1.0,
        "depth": 8,
        "neg": 1.0,
    },
}
# Parameters every family takes: the declared features it learns and scores with (app/features/spec.py).
COMMON: dict[str, Param] = {"features": "product"}
_CHOICES: dict[str, tuple[str, ...]] = {
    "opt": ("sgd", "adam", "adagrad"),
    "leaf": ("mc", "nb", "nba"),
    "features": tuple(FEATURE_SUBSETS),
}
_SEED = 42  # sampling and ensemble randomness: a replay of the same labels learns the same model


def parse_name(name: str) -> tuple[str, dict[str, Param]]:
    """The family and its parameters (defaults overridden by the name); ValueError for anything unknown.

    >>> parse_name("logreg:opt=adam,lr=0.01,bins=16")
    ('logreg', {'opt': 'adam', 'lr': 0.01, 'wpos': 5.0, 'l2': 0.0, 'neg': 1.0, 'bins': 16, 'warm': 50000, 'fq': 1, ...})
    """
    family, _, rest = name.partition(":")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r} in {name!r}; known: {', '.join(FAMILIES)}")
    defaults = FAMILIES[family] | COMMON
    params = dict(defaults)
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep or key not in defaults:
            raise ValueError(f"unknown parameter {item!r} in {name!r}; {family} takes {', '.join(defaults)}")
        default = defaults[key]
        try:
            params[key] = value if isinstance(default, str) else type(default)(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} in {name!r} is not a {type(default).__name__}") from None
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ValueError(f"{key}={value!r} in {name!r}: one of {', '.join(_CHOICES[key])}")
    if not 0.0 < float(params["neg"]) <= 1.0:
        raise ValueError(f"neg must be in (0, 1] in {name!r}: it is the share of legitimate labels learned")
    return family, params


class _Linear:
    """Standard scaling then logistic regression; reasons are the largest positive contributions.

        Optional transforms before the regression (``log``: signed ``log1p`` of every feature, so counts, amounts and
        gaps weigh by order of magnitude; ``bins``: one indicator per quantile bin of each feature, fixed after ``warm``
        labels, see :mod:`app.learning.binning`). A feature's contribution is its scaled value times weight plus its
    bin's weight.
    """

    bins: QuantileBins | None = None  # class defaults: checkpoints of models from before the transforms load as-is
    log = False

    def __init__(self, params: dict[str, Param], prior_fraud_rate: float) -> None:
        lr = float(params["lr"])
        optimizers: dict[str, Callable[[], optim.base.Optimizer]] = {
            "sgd": lambda: optim.SGD(lr),
            "adam": lambda: optim.Adam(lr),
            "adagrad": lambda: optim.AdaGrad(lr),
        }
        self.scaler = preprocessing.StandardScaler()
        # Before any label the score is the prior, not 0.5: a cold model must not flag everything.
        self.classifier = linear_model.LogisticRegression(
            optimizer=optimizers[str(params["opt"])](),
            loss=optim.losses.Log(weight_pos=float(params["wpos"])),
            l2=float(params["l2"]),
            intercept_init=math.log(prior_fraud_rate / (1.0 - prior_fraud_rate)),
        )
        self.pipeline = compose.Pipeline(self.scaler, self.classifier)
        if int(params.get("bins", 0)) > 0:
            self.bins = QuantileBins(int(params["bins"]), int(params["warm"]), fraud_quantiles=bool(params["fq"]))
        if int(params.get("log", 0)):
            self.log = True

    def _inputs(self, x: dict[str, float]) -> dict[str, float]:
        """What the regression learns from: the scaled (and log-squashed) features plus the bin indicators."""
        squashed = {name: math.copysign(math.log1p(abs(v)), v) for name, v in x.items()} if self.log else x
        scaled = self.scaler.transform_one(squashed)
        bins = self.bins
        return scaled if bins is None or not bins.fitted else bins.indicators(x, scaled)

    def proba(self, x: dict[str, float]) -> float:
        if self.bins is None and not self.log:
            return float(self.pipeline.predict_proba_one(x).get(True, 0.0))
        return self._walk(x, 0)[0]

    def score(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        if self.bins is None and not self.log:
            scaled = self.scaler.transform_one(x)
            probability = float(self.classifier.predict_proba_one(scaled).get(True, 0.0))
            return probability, self._top_contributions(scaled, k)
        return self._walk(x, k)

    def _walk(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        """Probability and reasons in one pass over ``x``: each feature's scaled value times weight plus its bin's
        weight, summed into the logit, the positive ones kept as reasons. What the regression computes on
        :meth:`_inputs` (the same terms, summed per feature), without building the scaled and indicator dicts and
        without copying the weights (the decision path has about 30 µs for the model)."""
        means, variances = self.scaler.means, self.scaler.vars
        weight = self.classifier._weights.get
        log, bins = self.log, self.bins
        edges, names = (bins.edges, bins.names) if bins is not None and bins.fitted else ({}, {})
        logit = self.classifier.intercept
        raising: list[tuple[float, str]] = []
        for name, raw in x.items():
            value = math.copysign(math.log1p(abs(raw)), raw) if log else raw
            variance = variances.get(name, 0.0)
            contribution = weight(name, 0.0) * ((value - means[name]) / variance**0.5) if variance else 0.0
            cut = edges.get(name)
            if cut is not None:
                contribution += weight(names[name][bisect_left(cut, raw)], 0.0)
            logit += contribution
            if contribution > 0.0:
                raising.append((contribution, name))
        if not k:
            return _sigmoid(logit), []
        raising.sort(reverse=True)
        return _sigmoid(logit), [name for _, name in raising[:k]]

    def learn(self, x: dict[str, float], y: bool) -> None:
        if self.bins is None and not self.log:
            self.pipeline.learn_one(x, y)
            return
        self.scaler.learn_one({name: math.copysign(math.log1p(abs(v)), v) for name, v in x.items()} if self.log else x)
        self.classifier.learn_one(self._inputs(x), y)
        if self.bins is not None:
            self.bins.observe(x, y)

    def reasons(self, x: dict[str, float], k: int) -> list[str]:
        if self.bins is None and not self.log:
            return self._top_contributions(self.scaler.transform_one(x), k)
        return self._walk(x, k)[1]

    def _top_contributions(self, scaled: dict[str, float], k: int) -> list[str]:
        weights = self.classifier.weights
        if not weights:
            return []
        # Only positive contributions can be reasons: sorting those alone picks the same names, in the same order,
        # as sorting all of them and dropping the non-positive ones from the top k (half the work).
        raising = [(c, name) for name, value in scaled.items() if (c := weights.get(name, 0.0) * value) > 0.0]
        raising.sort(reverse=True)
        return [name for _, name in raising[:k]]


class _Trees:
    """A River tree learner on the raw features (trees need no scaling); reasons come from the first tree's path."""

    def __init__(self, family: str, params: dict[str, Param], prior_fraud_rate: float) -> None:
        self.prior = prior_fraud_rate
        depth = int(params["depth"]) or None
        common: dict[str, Any] = {
            "grace_period": int(params["grace"]),
            "max_share_to_split": float(params["share"]),
            "leaf_prediction": str(params["leaf"]),
            "max_depth": depth,
        }
        self.model: Any
        if family == "hoeffding":
            self.model = tree.HoeffdingTreeClassifier(**common)
        elif family == "arf":
            self.model = forest.ARFClassifier(
                n_models=int(params["trees"]), lambda_value=int(params["lam"]), seed=_SEED, **common
            )
        else:
            base = tree.HoeffdingTreeClassifier(**common)
            self.model = ensemble.BaggingClassifier(base, n_models=int(params["trees"]), seed=_SEED)
        # Majority-class leaves of a tree or a bagging: score by walking the trees ourselves (see _mean_leaf_share).
        self.fast = family in ("hoeffding", "bagged-ht") and params["leaf"] == "mc"

    def proba(self, x: dict[str, float]) -> float:
        if self.fast:
            return self._mean_leaf_share(x)
        return self._river_proba(x)

    def _mean_leaf_share(self, x: dict[str, float]) -> float:
        """What River's ``predict_proba_one`` gives with majority-class leaves - each tree's fraud share at the leaf
        ``x`` reaches, averaged over the trees whose leaf has seen labels - without the per-tree dictionaries and
        sorting River builds on the way (the decision path has about 30 µs for the model)."""
        members = (self.model,) if isinstance(self.model, tree.HoeffdingTreeClassifier) else self.model
        fraud = 0.0
        voting = 0
        for member in members:
            node = member._root
            if node is None:
                continue
            while isinstance(node, Branch):
                try:
                    node = node.children[node.branch_no(x)]  # type: ignore[attr-defined]  # River decision branch
                except KeyError:  # a feature missing from x: River's own fallback
                    return self._river_proba(x)
            stats = node.stats
            total = sum(stats.values())
            if total > 0:
                fraud += stats.get(True, 0.0) / total
                voting += 1
        return fraud / voting if voting else self.prior

    def _river_proba(self, x: dict[str, float]) -> float:
        distribution = self.model.predict_proba_one(x)
        if not distribution:  # nothing learned yet: the prior, like the linear model's intercept
            return self.prior
        return float(distribution.get(True, 0.0))

    def score(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        return self.proba(x), self.reasons(x, k)

    def learn(self, x: dict[str, float], y: bool) -> None:
        self.model.learn_one(x, y)

    def reasons(self, x: dict[str, float], k: int) -> list[str]:
        first = self.model if isinstance(self.model, tree.HoeffdingTreeClassifier) else next(iter(self.model), None)
        node = getattr(first, "_root", None)
        tested: list[str] = []
        while isinstance(node, Branch):
            tested.append(node.feature)  # type: ignore[attr-defined]  # every River decision branch has one
            try:
                node = node.next(x)
            except KeyError:  # a feature missing from x: the path stops there
                break
        names: list[str] = []
        for name in reversed(tested):
            if name not in names:
                names.append(name)
        return names[:k]


class _LeafLinear(_Linear):
    """Logistic regression on the scaled features plus one indicator per tree: the leaf ``x`` falls in.

    The trees (Hoeffding trees, each learning with Poisson(1) weights so they differ) find the thresholds a linear
    model cannot draw (amount over 220, a risky terminal with few transactions); the linear model weighs their
    leaves against the features. A leaf is named by its tree and path (``t0:101``); when it splits, its children
    start at weight 0 and the linear model learns them. Reasons are the raw features' contributions only.
    """

    def __init__(self, params: dict[str, Param], prior_fraud_rate: float) -> None:
        super().__init__(params, prior_fraud_rate)
        self.trees = [
            tree.HoeffdingTreeClassifier(
                grace_period=int(params["grace"]),
                max_share_to_split=float(params["share"]),
                max_depth=int(params["depth"]) or None,
                leaf_prediction="mc",
            )
            for _ in range(int(params["trees"]))
        ]
        self._bootstrap = random.Random(_SEED)

    def _with_leaves(self, scaled: dict[str, float], x: dict[str, float]) -> dict[str, float]:
        z = dict(scaled)
        for i, model in enumerate(self.trees):
            node = model._root
            path = ""
            while isinstance(node, Branch):
                try:
                    branch = node.branch_no(x)  # type: ignore[attr-defined]  # every River decision branch has one
                except KeyError:
                    break
                path += str(branch)
                node = node.children[branch]
            z[f"t{i}:{path}"] = 1.0
        return z

    def proba(self, x: dict[str, float]) -> float:
        z = self._with_leaves(self.scaler.transform_one(x), x)
        return float(self.classifier.predict_proba_one(z).get(True, 0.0))

    def score(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        scaled = self.scaler.transform_one(x)
        probability = float(self.classifier.predict_proba_one(self._with_leaves(scaled, x)).get(True, 0.0))
        return probability, self._top_contributions(scaled, k)

    def learn(self, x: dict[str, float], y: bool) -> None:
        self.scaler.learn_one(x)
        scaled = self.scaler.transform_one(x)
        self.classifier.learn_one(self._with_leaves(scaled, x), y)
        for model in self.trees:
            weight = _poisson1(self._bootstrap)
            if weight:
                model.learn_one(x, y, w=weight)


class _Boosted:
    """LightGBM on a window of labels, retrained every ``every`` labels, scored through compiled trees.

    A retrain (LightGBM on one thread over the window: about a CPU second for a full default window, many more on a
    loaded machine) runs in the trainer's own process, never on a decision path. Offline (the evaluator, the tests)
    it runs inside ``learn_one``, so the same labels give the same trees at the same label. In the trainer
    (:meth:`FraudModel.train_in_background`) it runs on a thread of its own (LightGBM releases the GIL) while the
    old trees keep scoring and the window keeps filling: the trainer's event loop, and with it the lease's
    heartbeats, never waits for it (a retrain longer than ``SESSION_TIMEOUT_MS`` would cost the lease). The new trees
    are taken at the first label after they are ready; one retrain at a time.
    """

    # Class defaults: versions pickled before these attributes load as-is.
    background = False
    _pending: Future[tuple[CompiledTrees, float]] | None = None
    _pending_from = 0  # labels_at_training before the pending retrain (a checkpoint taken meanwhile goes back to it)
    _executor: ThreadPoolExecutor | None = None

    def __init__(self, params: dict[str, Param], prior_fraud_rate: float) -> None:
        self.prior = prior_fraud_rate  # the real prior: the sampling is corrected in the logit, see after_label
        self.negative_share = float(params["neg"])
        self.rounds = int(params["trees"])
        self.every = int(params["every"])
        self.lightgbm = {
            "num_leaves": int(params["leaves"]),
            "max_depth": int(params["depth"]),
            "learning_rate": float(params["lr"]),
            "min_data_in_leaf": int(params["minleaf"]),
        }
        self.window_sizes = (int(params["negs"]), int(params["frauds"]))
        self.window: LabelWindow | None = LabelWindow(*self.window_sizes)
        self.trees: CompiledTrees | None = None
        self.labels_at_training = 0  # the model's label count at the last retrain (or the last one due)
        self.retrains = 0
        self.train_s = 0.0  # the last retrain's wall time (LightGBM and the compilation)

    def __getstate__(self) -> dict[str, Any]:
        """Neither the thread nor a retrain in flight (a checkpoint taken during one says it is still due), nor the
        background setting: it is the process's (the trainer sets it on what it restores), not the model's."""
        state = self.__dict__.copy()
        pending = state.pop("_pending", None)
        state.pop("_executor", None)
        state.pop("background", None)
        if pending is not None:
            state["labels_at_training"] = self._pending_from
        return state

    def proba(self, x: dict[str, float]) -> float:
        trees = self.trees
        if trees is None:
            return self.prior
        return trees.score_row(trees.row(x), 0)[0]

    def score(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        trees = self.trees
        if trees is None:
            return self.prior, []
        return trees.score_row(trees.row(x), k)

    def score_many(self, xs: Sequence[dict[str, float]], k: int) -> list[tuple[float, list[str]]]:
        trees = self.trees
        if trees is None:
            return [(self.prior, []) for _ in xs]
        if len(xs) == 1:
            return [trees.score_row(trees.row(xs[0]), k)]
        return trees.score(trees.matrix(xs), k)

    def reasons(self, x: dict[str, float], k: int) -> list[str]:
        return self.score(x, k)[1]

    def learn(self, x: dict[str, float], y: bool) -> None:
        if self.window is None:  # a published version that learns again (a warm start): a new window, same trees
            self.window = LabelWindow(*self.window_sizes)
        self.window.add(x, y)

    def after_label(self, labels: int) -> None:
        """Retrain once ``every`` labels came since the last retrain (given or sampled out alike), when the window
        holds both classes (else wait another ``every``); in the background, take a finished retrain's trees."""
        pending = self._pending
        if pending is not None:
            if not pending.done():
                return
            self._pending = None
            self._install(*pending.result())
        if labels - self.labels_at_training < self.every or self.window is None:
            return
        previous, self.labels_at_training = self.labels_at_training, labels
        window = self.window
        if not window.held(True) or not window.held(False):
            return
        x, y = window.arrays()  # copies: the window goes on filling while a background retrain reads them
        # The window's fraud odds are overstated by the ratio of the spans (frauds held longer) and by 1 / neg (the
        # negatives sampled): both come off the logit, one addition per transaction (FraudModel's odds-times-neg
        # correction is the same for the other families).
        offset = math.log(self.negative_share) - math.log(window.span_ratio())
        names, held_frauds, span_ratio = window.names, window.held(True), window.span_ratio()
        log.info("gbdt retraining on %d labels (%d frauds, spans %.1f times the negatives')%s", len(y), held_frauds,
                 span_ratio, " in the background" if self.background else "")  # fmt: skip
        if not self.background:
            self._install(*self._train(x, y, names, offset))
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gbdt-retrain")
        self._pending_from = previous
        self._pending = self._executor.submit(self._train, x, y, names, offset)

    def _train(
        self, x: np.ndarray, y: np.ndarray, names: tuple[str, ...], offset: float
    ) -> tuple[CompiledTrees, float]:
        started = time.perf_counter()
        booster = train_booster(x, y, self.lightgbm, self.rounds)
        return CompiledTrees(booster, names, offset=offset), time.perf_counter() - started

    def _install(self, trees: CompiledTrees, train_s: float) -> None:
        self.trees, self.train_s = trees, train_s
        self.retrains += 1
        log.info("gbdt retrain %d in use (%.2f s)", self.retrains, train_s)

    def wait_for_retrain(self, timeout_s: float | None = None) -> None:
        """Block until a background retrain in flight is done (tests, a clean stop); its trees are taken at the
        next label."""
        if self._pending is not None:
            wait([self._pending], timeout=timeout_s)

    def for_scoring(self) -> _Boosted:
        """A copy without the window nor a retrain in flight: what a published version carries (the trees only)."""
        copy_ = copy.copy(self)
        copy_.window = None
        copy_._pending = None
        copy_._executor = None
        return copy_


class _Blend:
    """The default linear model and a gbdt on the same labels, scored by a fixed weighted average of their logits.

    The two err differently (a straight line per feature plus bins against trees over interactions), so an average
    of their logits can rank better than either; its weight is a parameter, not fitted, so no label judges a blend
    it also trained. The gbdt learns a ``gneg`` share of the legitimate labels it is given (its own sampler, the
    one a plain ``gbdt`` model uses: the same labels give the same trees); both logits are already corrected for
    their own sampling, and the combined one for the model's ``neg``.
    """

    background = False

    def __init__(self, params: dict[str, Param], prior_fraud_rate: float) -> None:
        _, linear = parse_name(f"{DEFAULT_MODEL},warm={int(params['warm'])}")
        _, boosted = parse_name(
            f"gbdt:trees={int(params['trees'])},every={int(params['every'])},minleaf={int(params['minleaf'])},"
            f"neg={float(params['gneg'])}"
        )
        self.weight = float(params["w"])
        self.linear = _Linear(linear, prior_fraud_rate)
        self.boosted = _Boosted(boosted, prior_fraud_rate)
        self.boosted_share = float(boosted["neg"])
        self._sampler = random.Random(_SEED)
        self.labels = 0
        self.log_share = 0.0  # log of the model's ``neg``: FraudModel sets it

    def __getstate__(self) -> dict[str, Any]:
        """Without the background setting: the process's, not the model's (as for a plain gbdt)."""
        state = self.__dict__.copy()
        state.pop("background", None)
        return state

    def _combine(self, p_linear: float, p_boosted: float | None) -> float:
        logit_linear = _logit(p_linear)
        if p_boosted is None:
            return _sigmoid(logit_linear + self.log_share)
        w = self.weight
        return _sigmoid((1.0 - w) * logit_linear + w * _logit(p_boosted) + self.log_share)

    def proba(self, x: dict[str, float]) -> float:
        return self.score(x, 0)[0]

    def score(self, x: dict[str, float], k: int) -> tuple[float, list[str]]:
        p_linear, linear_reasons = self.linear.score(x, k)
        if self.boosted.trees is None:
            return self._combine(p_linear, None), linear_reasons
        p_boosted, boosted_reasons = self.boosted.score(x, k)
        return self._combine(p_linear, p_boosted), _interleave(linear_reasons, boosted_reasons, k)

    def score_many(self, xs: Sequence[dict[str, float]], k: int) -> list[tuple[float, list[str]]]:
        linear = [self.linear.score(x, k) for x in xs]
        if self.boosted.trees is None:
            return [(self._combine(p, None), reasons) for p, reasons in linear]
        boosted = self.boosted.score_many(xs, k)
        return [
            (self._combine(p_l, p_b), _interleave(r_l, r_b, k))
            for (p_l, r_l), (p_b, r_b) in zip(linear, boosted, strict=True)
        ]

    def reasons(self, x: dict[str, float], k: int) -> list[str]:
        return self.score(x, k)[1]

    def learn(self, x: dict[str, float], y: bool) -> None:
        self.labels += 1
        self.linear.learn(x, y)
        if y or self.boosted_share >= 1.0 or self._sampler.random() < self.boosted_share:
            self.boosted.learn(x, y)
        self.boosted.background = self.background
        self.boosted.after_label(self.labels)

    def wait_for_retrain(self, timeout_s: float | None = None) -> None:
        self.boosted.wait_for_retrain(timeout_s)

    def for_scoring(self) -> _Blend:
        """A copy without the gbdt's window nor the linear model's warm-up sample (what a published version carries)."""
        lean = copy.copy(self)
        lean.boosted = self.boosted.for_scoring()
        if self.linear.bins is not None and not self.linear.bins.fitted:
            lean.linear = copy.copy(self.linear)
            lean.linear.bins = self.linear.bins.without_sample()
        return lean


def _logit(p: float) -> float:
    """The inverse of :func:`_sigmoid`, clamped to its range."""
    if p <= 0.0:
        return -30.0
    if p >= 1.0:
        return 30.0
    return max(-30.0, min(30.0, math.log(p / (1.0 - p))))


def _interleave(first: list[str], second: list[str], k: int) -> list[str]:
    """Up to ``k`` names, the two lists' in turn, each name once."""
    out: list[str] = []
    for pair in zip(first, second, strict=False):
        for name in pair:
            if name not in out:
                out.append(name)
    for name in first[len(second) :] + second[len(first) :]:
        if name not in out:
            out.append(name)
    return out[:k]


def _sigmoid(logit: float) -> float:
    """River's logistic function (``utils.math.sigmoid``), clamped the same way."""
    if logit < -30.0:
        return 0.0
    if logit > 30.0:
        return 1.0
    return 1.0 / (1.0 + math.exp(-logit))


def _poisson1(rng: random.Random) -> int:
    """A Poisson(1) draw (online bagging's bootstrap weight), by inversion."""
    k, p, u = 0, math.exp(-1.0), rng.random()
    cumulative = p
    while u > cumulative:
        k += 1
        p /= k
        cumulative += p
    return k


class FraudModel:
    """Scores ``x`` with :meth:`predict_proba_one` and learns delayed labels with :meth:`learn_one`.

    ``name`` picks the family and its parameters (see the module docstring and :func:`parse_name`).
    """

    # The features it learns and scores with; None: all of ``x`` (the default, and checkpoints from before subsets).
    feature_subset: frozenset[str] | None = None

    def __init__(self, name: str = DEFAULT_MODEL, prior_fraud_rate: float = 0.01) -> None:
        family, params = parse_name(name)
        self.name = name
        self.negative_share = float(params["neg"])
        self._sampler = random.Random(_SEED)
        # The learner sees frauds at odds 1 / neg times the real ones: so must its cold prior.
        prior = prior_fraud_rate / (prior_fraud_rate + self.negative_share * (1.0 - prior_fraud_rate))
        self.learner: _Linear | _Trees | _Boosted | _Blend
        if family == "logreg":
            self.learner = _Linear(params, prior)
        elif family == "leaflr":
            self.learner = _LeafLinear(params, prior)
        elif family == "gbdt":
            self.learner = _Boosted(params, prior_fraud_rate)
        elif family == "blend":  # its parts learn at the real prior; the model's ``neg`` comes off the logit
            self.learner = _Blend(params, prior_fraud_rate)
            self.learner.log_share = math.log(self.negative_share)
        else:
            self.learner = _Trees(family, params, prior)
        self.labels_learned = 0  # labels given to learn_one, sampled out or not
        self.labels_skipped = 0  # legitimate labels left out by the sampling
        self.version_id: str | None = None  # set when loaded from a published snapshot (app/learning/snapshots.py)
        if params["features"] != COMMON["features"]:
            self.feature_subset = frozenset(FEATURE_SUBSETS[str(params["features"])])

    @property
    def version(self) -> str:
        """The published version this model was loaded from; ``<name>@prior`` for one that learned nothing yet."""
        return self.__dict__.get("version_id") or f"{self.name}@prior"

    @property
    def label_window(self) -> LabelWindow | None:
        """A gbdt line's window of labels, a blend's gbdt's too (None for the other families, and in a published
        version): the trainer keeps its rows in the label store, not in its published state."""
        learner = self.learner
        if isinstance(learner, _Blend):
            return learner.boosted.window
        return learner.window if isinstance(learner, _Boosted) else None

    @property
    def scaler(self) -> preprocessing.StandardScaler:
        return self._linear().scaler

    @property
    def classifier(self) -> linear_model.LogisticRegression:
        return self._linear().classifier

    @property
    def pipeline(self) -> compose.Pipeline:
        return self._linear().pipeline

    def _restricted(self, x: dict[str, float]) -> dict[str, float]:
        """``x`` without the features outside the model's ``features`` subset (none left out by default)."""
        keep = self.feature_subset
        return x if keep is None else {name: value for name, value in x.items() if name in keep}

    def predict_proba_one(self, x: dict[str, float]) -> float:
        """Probability that the transaction described by ``x`` is fraud."""
        if isinstance(self.learner, _Boosted | _Blend):  # its logit is corrected for the sampling already
            return self.learner.proba(self._restricted(x))
        return self._unsampled(self.learner.proba(self._restricted(x)))

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        """Probability and :meth:`reasons` together, in one pass where the family allows (the per-transaction path)."""
        if isinstance(self.learner, _Boosted | _Blend):
            return self.learner.score(self._restricted(x), k)
        probability, reasons = self.learner.score(self._restricted(x), k)
        return self._unsampled(probability), reasons

    def score_many(self, xs: Sequence[dict[str, float]], k: int = 3) -> list[tuple[float, list[str]]]:
        """:meth:`score_one` of each of ``xs``, the same figures: in one pass over the batch where the family scores
        batches at once (``gbdt``), one at a time otherwise."""
        learner = self.learner
        if isinstance(learner, _Boosted | _Blend):
            return learner.score_many(xs if self.feature_subset is None else [self._restricted(x) for x in xs], k)
        score_one = self.score_one
        return [score_one(x, k) for x in xs]

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        """Learn every fraud and a ``neg`` share of legitimate transactions, drawn at random."""
        self.labels_learned += 1
        if not y and self.negative_share < 1.0 and self._sampler.random() >= self.negative_share:
            self.labels_skipped += 1
        else:
            self.learner.learn(self._restricted(x), y)
        if isinstance(self.learner, _Boosted):  # a blend calls its gbdt's itself, in learn
            self.learner.after_label(self.labels_learned)

    def train_in_background(self, on: bool = True) -> None:
        """A family that retrains in batches (``gbdt``) does it on a thread of its own, ``learn_one`` never waiting
        for it: the trainer's process sets this (its event loop keeps the lease); offline replays keep the default
        (retrains inside ``learn_one``, the same trees at the same label)."""
        if isinstance(self.learner, _Boosted | _Blend):
            self.learner.background = on

    def wait_for_retrain(self, timeout_s: float | None = None) -> None:
        """Block until a background retrain in flight is done (its trees are taken at the next label)."""
        if isinstance(self.learner, _Boosted | _Blend):
            self.learner.wait_for_retrain(timeout_s)

    def for_scoring(self) -> FraudModel:
        """The model as a scorer needs it (scorers never learn): without a warm-up sample of bins not fitted yet
        (about 12 MB) nor a gbdt's window of labels; the same model when it carries neither."""
        learner = self.learner
        if isinstance(learner, _Boosted) and learner.window is not None:
            lean: _Linear | _Trees | _Boosted | _Blend = learner.for_scoring()
        elif isinstance(learner, _Blend):
            lean = learner.for_scoring()
        elif isinstance(learner, _Linear) and learner.bins is not None and not learner.bins.fitted:
            lean = copy.copy(learner)
            lean.bins = learner.bins.without_sample()
        else:
            return self
        model = copy.copy(self)
        model.learner = lean
        return model

    def reasons(self, x: dict[str, float], k: int = 3) -> list[str]:
        """Up to ``k`` feature names behind the score (see the family in the module docstring).

        >>> m = FraudModel("logreg")
        >>> for _ in range(50):
        ...     m.learn_one({"amount": 500.0, "hour_of_day": 3.0}, True)
        ...     m.learn_one({"amount": 20.0, "hour_of_day": 3.0}, False)
        >>> m.reasons({"amount": 600.0, "hour_of_day": 3.0})
        ['amount']
        """
        return self.learner.reasons(self._restricted(x), k)

    def _unsampled(self, p: float) -> float:
        """The probability the model would give had it learned every legitimate label: odds times ``neg``."""
        share = self.negative_share
        if share >= 1.0:
            return p
        return p * share / (p * share + (1.0 - p))

    def _linear(self) -> _Linear:
        if not isinstance(self.learner, _Linear):
            raise AttributeError(f"{self.name} is not a linear model")
        return self.learner

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Checkpoints written before the families (a bare scaler and classifier) load as ``logreg``."""
        if "learner" not in state:
            linear = _Linear.__new__(_Linear)
            linear.scaler, linear.classifier, linear.pipeline = state["scaler"], state["classifier"], state["pipeline"]
            state = {
                "name": state.get("name", DEFAULT_MODEL),
                "negative_share": 1.0,
                "_sampler": random.Random(_SEED),
                "learner": linear,
                "labels_learned": state.get("labels_learned", 0),
                "labels_skipped": 0,
            }
        self.__dict__.update(state)


def model_bytes(model: FraudModel) -> bytes:
    """The checkpoint of ``model`` (write it with :mod:`app.state.checkpoints`)."""
    return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)


def save_model(model: FraudModel, path: Path) -> None:
    """Write a checkpoint atomically, so a crash never leaves half a model."""
    write_atomically(path, [model_bytes(model)])


def load_model(path: Path) -> FraudModel | None:
    """The checkpoint at ``path``, or None when there is none yet. Only read files this worker wrote."""
    if not path.exists():
        return None
    with path.open("rb") as f:
        model = pickle.load(f)  # noqa: S301 - our own checkpoint in the worker's data folder
    return model if isinstance(model, FraudModel) else None
