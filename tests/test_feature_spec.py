"""The feature set is one declaration: names, halves, packing layout and version come from it, and a state or a
model snapshot made for another feature set is refused with both versions named (pure: no broker)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest

from app import metrics
from app.features import engine, spec
from app.features.halves import CALENDAR_FEATURE_NAMES, FEATURE_NAMES, customer_side_features
from app.features.spec import (
    DAY_S,
    FEATURE_SET_VERSION,
    FEATURES,
    UNVERSIONED_FEATURE_SET,
    Feature,
    FeatureSetError,
    version_of,
)
from app.learning.follower import ModelFollower
from app.learning.label_store import LabelStore
from app.learning.model import FraudModel
from app.learning.snapshots import SnapshotRefused, check_feature_set, load_model_snapshot, model_snapshot, sign
from app.learning.trainer import STATE_HEAD, Trainer, _chunk_key
from app.learning.training import FeatureSetMismatch, Training
from app.records import Transaction
from app.serialization import dumps
from app.settings import REPO_ROOT, Settings

OTHER = "fs-00000000"


def _training() -> Training:
    return Training(FraudModel("logreg"), None, horizon_s=100.0, grace_s=50.0, ttl_s=1000.0, quality_window=100)


def _x(amount: float) -> dict[str, float]:
    return {name: 0.0 for name in FEATURE_NAMES} | {"amount": amount}


# ---- the declaration -------------------------------------------------------------------------------------------


def test_the_names_each_half_computes_and_the_layout_come_from_the_declaration() -> None:
    assert FEATURE_NAMES == tuple(f.name for f in FEATURES)
    assert spec.CUSTOMER_HALF_NAMES + spec.TERMINAL_HALF_NAMES == FEATURE_NAMES  # customer half first
    assert CALENDAR_FEATURE_NAMES == ("hour_of_day", "is_weekend", "is_night")
    tx = Transaction("t1", datetime(2018, 4, 2, 12, tzinfo=UTC), "c1", "k1", 40.0)
    customer_x, _ = customer_side_features(tx, [], lateness_s=DAY_S)
    assert list(customer_x) == list(spec.CUSTOMER_HALF_NAMES)  # exactly the customer half, in declared order
    assert list(engine.terminal_x([], 0.0, {})) == list(spec.TERMINAL_HALF_NAMES)
    x = customer_x | engine.terminal_x([], 0.0, {})
    assert spec.unpack(spec.pack(x)) == x and len(spec.pack(x)) == 8 * len(FEATURES)
    windows = sorted({f.window_s for f in FEATURES if f.half == "customer" and f.kind == "count"})
    assert list(engine.CUSTOMER_WINDOWS_S.values()) == windows


def test_the_version_is_a_stable_digest_that_changes_with_any_change_of_the_declaration() -> None:
    canonical = '[{"half":"customer","kind":"amount","name":"amount","window_s":null}]'
    assert version_of((Feature("amount", "customer", None, "amount"),)) == (
        "fs-" + hashlib.sha256(canonical.encode()).hexdigest()[:8]
    )
    assert version_of(FEATURES) == FEATURE_SET_VERSION == version_of(tuple(FEATURES))
    seven = next(i for i, f in enumerate(FEATURES) if f.name == "customer_nb_tx_7day")
    changed = {
        "added": (*FEATURES, Feature("customer_nb_tx_90day", "customer", 90 * DAY_S, "count")),
        "removed": FEATURES[:-1],
        "renamed": tuple(replace(f, name="customer_count_7day") if i == seven else f for i, f in enumerate(FEATURES)),
        "re-windowed": tuple(replace(f, window_s=14 * DAY_S) if i == seven else f for i, f in enumerate(FEATURES)),
        "re-kinded": tuple(replace(f, kind="max_amount") if i == seven else f for i, f in enumerate(FEATURES)),
        "reordered (another layout)": (FEATURES[1], FEATURES[0], *FEATURES[2:]),
    }
    versions = {how: version_of(features) for how, features in changed.items()}
    assert FEATURE_SET_VERSION not in versions.values(), versions
    assert len(set(versions.values())) == len(versions)


@pytest.mark.parametrize(
    ("features", "message"),
    [
        ((Feature("a", "customer", None, "amount"),) * 2, "declared twice"),
        ((Feature("a", "customer", None, "median"),), "unknown kind"),
        ((Feature("a", "terminal", None, "amount"),), "not computed in the 'terminal' half"),
        ((Feature("a", "customer", None, "count"),), "takes a positive window"),
        ((Feature("a", "customer", 60.0, "amount"),), "takes no window"),
    ],
)
def test_a_declaration_the_engine_cannot_compute_is_refused(features: tuple[Feature, ...], message: str) -> None:
    with pytest.raises(FeatureSetError, match=message):
        spec.check(features)


def test_the_engine_takes_its_windows_from_the_declaration() -> None:
    """Re-windowing the 7-day customer features to 14 days (renamed to match) changes what the engine computes."""
    program = """
from dataclasses import replace
import app.features.spec as spec
spec.FEATURES = tuple(
    replace(f, name=f.name.replace("7day", "14day"), window_s=14 * spec.DAY_S)
    if f.half == "customer" and f.window_s == 7 * spec.DAY_S else f
    for f in spec.FEATURES
)
from app.features.engine import CUSTOMER_WINDOWS_S, customer_features
x, _ = customer_features([(0.0, 10.0, "k", "a", 0)], 10 * spec.DAY_S, 20.0, "k", "b")
print(sorted(CUSTOMER_WINDOWS_S), x["customer_nb_tx_14day"], x["customer_avg_amount_14day"], "customer_nb_tx_7day" in x)
"""
    out = subprocess.run([sys.executable, "-c", program], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["['10min',", "'14day',", "'1day',", "'1hour',", "'30day']", "2.0", "15.0", "False"]


# ---- the version travels, and another one is refused ----------------------------------------------------------


def test_a_restored_trainer_state_of_another_feature_set_is_refused_naming_both_versions() -> None:
    t = _training()
    t.on_prediction("a", _x(10), 0.0, 0.1)
    assert Training.from_parts(list(t.state_parts())).feature_set == FEATURE_SET_VERSION  # its own: resumes
    t.feature_set = OTHER
    with pytest.raises(FeatureSetMismatch, match=f"trainer state was made for feature set {OTHER}; "
                       f"this process computes {FEATURE_SET_VERSION}"):  # fmt: skip
        Training.from_parts(list(t.state_parts()))
    del t.feature_set  # a state published before feature sets were versioned: read as UNVERSIONED_FEATURE_SET
    assert Training.from_parts(list(t.state_parts()), UNVERSIONED_FEATURE_SET).feature_set == UNVERSIONED_FEATURE_SET
    with pytest.raises(FeatureSetMismatch, match=f"feature set {UNVERSIONED_FEATURE_SET}; this process computes"):
        Training.from_parts(list(t.state_parts()), OTHER)


def test_a_prediction_of_another_feature_set_is_counted_and_not_learned() -> None:
    t = _training()
    t.on_prediction("old", _x(10), 0.0, 0.1, feature_set=OTHER)  # a worker of the previous release
    t.on_prediction("older", _x(10), 0.0, 0.1, feature_set=None)  # from before versions: UNVERSIONED_FEATURE_SET
    t.on_label("old", True, 1.0)
    t.on_label("older", True, 1.0)
    t.on_prediction("new", _x(10), 0.0, 0.1, feature_set=FEATURE_SET_VERSION)
    t.on_label("new", False, 1.0)
    expected_other = 2 if FEATURE_SET_VERSION != UNVERSIONED_FEATURE_SET else 1
    assert t.counts["other_feature_set"] == expected_other and t.labels_seen == 3 - expected_other


def test_a_model_snapshot_of_another_feature_set_is_refused_before_it_is_unpickled() -> None:
    header = {"version": "v7", "role": "champion", "sequence": 7}
    raw = model_snapshot(header, FraudModel("logreg"), b"key")
    assert load_model_snapshot(raw, b"key")[0]["feature_set"] == FEATURE_SET_VERSION
    with pytest.raises(SnapshotRefused, match=f"feature_set: model snapshot v7 was made for feature set {OTHER}"):
        load_model_snapshot(sign(header | {"feature_set": OTHER}, b"not even a pickle", b"key"), b"key")
    # one from before versions reads as UNVERSIONED_FEATURE_SET: refused once the declaration moved past it
    check_feature_set(header, expected=UNVERSIONED_FEATURE_SET)
    with pytest.raises(SnapshotRefused, match=f"made for feature set {UNVERSIONED_FEATURE_SET}; this process"):
        check_feature_set(header, expected=OTHER)


def _follower() -> ModelFollower:
    return ModelFollower(bootstrap_servers="unused:9092", models_topic="models", events_topic="model-events",
                         key=b"key", on_champion=lambda model: None)  # fmt: skip


def test_the_follower_refuses_a_snapshot_of_another_feature_set_counts_it_and_shows_it() -> None:
    follower = _follower()
    counter = metrics.MODEL_SNAPSHOTS_REFUSED.labels("feature_set")
    before = counter._value.get()
    header = {"version": "v7", "role": "champion", "sequence": 7}
    follower._snapshot(b"v7", sign(header | {"feature_set": OTHER}, b"never unpickled", b"key"))
    follower._snapshot(b"v9", model_snapshot(header | {"version": "v9", "sequence": 9}, FraudModel("logreg"), b"key"))
    assert counter._value.get() == before + 1
    assert [code for _, _, code, _ in follower.refused] == ["feature_set"]
    assert set(follower.registry.headers) == {"v9"} and set(follower.snapshots) == {"v9"}
    issues = follower.issues()
    assert issues[0] == (f"model snapshot v7 refused: feature_set (model snapshot v7 was made for feature set "
                         f"{OTHER}; this process computes {FEATURE_SET_VERSION})")  # fmt: skip
    assert follower.newest_sequence == 9  # a new line numbers its versions past the refused ones


class _StateTopic:
    """The consumer calls ``Trainer._restore`` makes, over the given records of the trainer-state topic."""

    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records = [type("Record", (), {"key": k, "value": v}) for k, v in records.items()]
        self.at = 0

    def assign(self, tps: Any) -> None:
        pass

    async def seek_to_beginning(self, tp: Any) -> None:
        self.at = 0

    async def end_offsets(self, tps: list[Any]) -> dict[Any, int]:
        return {tp: len(self.records) for tp in tps}

    async def position(self, tp: Any) -> int:
        return self.at

    async def getmany(self, tp: Any, timeout_ms: int, max_records: int | None = None) -> dict[Any, list[Any]]:
        batch, self.at = self.records[self.at :], len(self.records)
        return {tp: batch}


def test_the_trainer_starts_a_new_line_instead_of_resuming_a_state_of_another_feature_set(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings()
    old = _training()
    old.champion = FraudModel(settings.model_name)
    for i in range(20):
        old.on_prediction(f"a{i}", _x(10 + i), float(i), 0.1)
        old.on_label(f"a{i}", i % 5 == 0, float(i))
    old.sequence, old.feature_set = 12, OTHER
    parts = list(old.state_parts())
    blob = sign({"kind": "trainer-state", "sequence": 12, "parts": [len(p) for p in parts]}, b"".join(parts), b"key")
    head = dumps({"chunks": 1, "sha256": hashlib.sha256(blob).hexdigest(), "sequence": 12, "positions": {}})
    trainer = Trainer(settings, _follower(), b"key", {})
    with caplog.at_level(logging.WARNING, logger="app.learning.trainer"):
        restored = asyncio.run(
            trainer._restore(
                _StateTopic({_chunk_key(0): blob, STATE_HEAD: head}),  # type: ignore[arg-type]
                LabelStore.in_memory(),
            )
        )
    assert restored.feature_set == FEATURE_SET_VERSION and restored.labels_seen == 0 and not restored.positions
    assert restored.sequence == 12  # the new line's versions follow the old ones (v13, ...)
    refusals = [r.getMessage() for r in caplog.records if "trainer state refused" in r.getMessage()]
    assert len(refusals) == 1 and OTHER in refusals[0] and FEATURE_SET_VERSION in refusals[0], refusals
