"""The online model: a River pipeline that scores before it learns.

Standard scaling then logistic regression. Fraud is rare (about 0.8 % of transactions), so positives weigh
more in the loss; otherwise the model learns to say "never fraud". ``reasons`` names the features whose
scaled value times weight raised the score most: cheap, exact for a linear model, and what an analyst asks
first.
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

from river import compose, linear_model, optim, preprocessing


class FraudModel:
    """Scores ``x`` with :meth:`predict_proba_one` and learns delayed labels with :meth:`learn_one`."""

    def __init__(
        self,
        name: str = "logreg",
        learning_rate: float = 0.05,
        weight_pos: float = 5.0,
        prior_fraud_rate: float = 0.01,
    ) -> None:
        self.name = name
        self.scaler = preprocessing.StandardScaler()
        # Before any label the score is the prior, not 0.5: a cold model must not flag everything.
        self.classifier = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate),
            loss=optim.losses.Log(weight_pos=weight_pos),
            intercept_init=math.log(prior_fraud_rate / (1.0 - prior_fraud_rate)),
        )
        self.pipeline = compose.Pipeline(self.scaler, self.classifier)
        self.labels_learned = 0

    @property
    def version(self) -> str:
        """Name of the model family and its configuration; weights change with every label."""
        return f"{self.name}-v1"

    def predict_proba_one(self, x: dict[str, float]) -> float:
        """Probability that the transaction described by ``x`` is fraud."""
        return float(self.pipeline.predict_proba_one(x).get(True, 0.0))

    def score_one(self, x: dict[str, float], k: int = 3) -> tuple[float, list[str]]:
        """Probability and :meth:`reasons` together, scaling ``x`` once (the per-transaction path)."""
        scaled = self.scaler.transform_one(x)
        probability = float(self.classifier.predict_proba_one(scaled).get(True, 0.0))
        return probability, self._top_contributions(scaled, k)

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.pipeline.learn_one(x, y)
        self.labels_learned += 1

    def reasons(self, x: dict[str, float], k: int = 3) -> list[str]:
        """Up to ``k`` feature names that raised the score most (positive contributions only).

        >>> m = FraudModel()
        >>> for _ in range(50):
        ...     m.learn_one({"amount": 500.0, "hour_of_day": 3.0}, True)
        ...     m.learn_one({"amount": 20.0, "hour_of_day": 3.0}, False)
        >>> m.reasons({"amount": 600.0, "hour_of_day": 3.0})
        ['amount']
        """
        return self._top_contributions(self.scaler.transform_one(x), k)

    def _top_contributions(self, scaled: dict[str, float], k: int) -> list[str]:
        weights = self.classifier.weights
        if not weights:
            return []
        # Only positive contributions can be reasons: sorting those alone picks the same names, in the same order,
        # as sorting all of them and dropping the non-positive ones from the top k (half the work).
        raising = [(c, name) for name, value in scaled.items() if (c := weights.get(name, 0.0) * value) > 0.0]
        raising.sort(reverse=True)
        return [name for _, name in raising[:k]]


def save_model(model: FraudModel, path: Path) -> None:
    """Write a checkpoint atomically (temporary file, then rename), so a crash never leaves half a model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def load_model(path: Path) -> FraudModel | None:
    """The checkpoint at ``path``, or None when there is none yet. Only read files this worker wrote."""
    if not path.exists():
        return None
    with path.open("rb") as f:
        model = pickle.load(f)  # noqa: S301 - our own checkpoint in the worker's data folder
    return model if isinstance(model, FraudModel) else None
