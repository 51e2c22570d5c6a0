"""Delivery and learning under faults: ``scripts/chaos.py`` on its own broker (it restarts it) with SIGKILLs (one of
the trainer's owner), a broker restart and a scale step 1 -> 2 -> 1 while transactions and their labels flow;
nothing may be lost or come out twice, and the trainer must learn each labelled transaction once, as its class.

The accounting the verdict rests on (``tally``, ``learning_tally``, ``recovery_s``, ``input_check``, the ids read
back from predictions, dead letters and the learning audit: ``scripts/faultrun/measurement.py``) is checked first
on crafted inputs, so a run that reports 0/0 means 0/0.
"""

from __future__ import annotations

import base64
import itertools
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import orjson
import pytest
from faultrun import measurement, scenarios  # scripts/ is on sys.path: tests/conftest.py puts it there
from faultrun.measurement import Learned, Output, Published
from faultrun.report import exit_code

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.kafka


def dead_letter(original: bytes) -> bytes:
    """A dead letter as the worker writes it: the original bytes in base64 under ``raw``."""
    return orjson.dumps({"error": "x", "reason": "x", "raw": base64.b64encode(original).decode()})


# --- the accounting, on crafted records -------------------------------------------------------------------------


def test_tally_finds_the_lost_the_duplicated_the_misrouted_and_the_unexpected() -> None:
    published = [
        Published("a", False, 1.0),
        Published("b", False, 1.0),
        Published("c", False, 1.0),  # never comes out: lost
        Published("d", False, 1.0),
        Published("x", True, 1.0),
        Published("y", True, 1.0),  # malformed but predicted: misrouted
    ]
    outputs = [
        Output("p", "a", 2.0),
        Output("p", "a", 3.0),  # a twice: one duplicated id, one extra copy
        Output("p", "b", 2.0),
        Output("p", "d", 2.0),
        Output("d", "d", 2.5),  # d predicted and dead-lettered: duplicated and misrouted
        Output("p", "d", 4.0),  # and a third time: two extra copies for d
        Output("d", "x", 2.0),
        Output("p", "y", 2.0),
        Output("p", "z", 2.0),  # never published
    ]
    t = measurement.tally(published, outputs)
    assert (t["published"], t["published_valid"], t["published_malformed"]) == (6, 4, 2)
    assert t["lost"] == 1 and t["lost_sample"] == ["c"]
    assert t["duplicated"] == 2 and t["duplicated_sample"] == {"a": 2, "d": 3}
    assert t["extra_copies"] == 3
    assert t["misrouted"] == 2 and t["misrouted_sample"] == ["d", "y"]
    assert t["unexpected"] == 1 and t["unexpected_sample"] == ["z"]
    assert (t["predicted"], t["dead_lettered"]) == (4, 2)  # a, b, d, y / d, x
    assert t["record_duplicates"] == 0


def test_tally_of_a_clean_run_is_all_zero_and_a_repeated_record_line_is_seen() -> None:
    published = [Published("a", False, 1.0), Published("x", True, 1.0), Published("a", False, 1.5)]
    t = measurement.tally(published, [Output("p", "a", 2.0), Output("d", "x", 2.0)])
    assert (t["lost"], t["duplicated"], t["extra_copies"], t["misrouted"], t["unexpected"]) == (0, 0, 0, 0, 0)
    assert t["published"] == 2 and t["record_duplicates"] == 1


def test_recovery_counts_only_outputs_of_messages_sent_after_the_fault() -> None:
    sent_at = {"before": 9.0, "after": 10.5, "later": 11.0}
    outputs = sorted(
        [
            Output("p", "before", 10.2),
            Output("p", "before", 11.5),
            Output("p", "later", 12.0),
            Output("p", "after", 13.0),
        ],
        key=lambda o: o.read_at,
    )
    assert measurement.recovery_s(10.0, sent_at, outputs) == pytest.approx(2.0)  # "later" at 12.0, not "before"
    assert measurement.recovery_s(11.2, sent_at, outputs) is None  # nothing sent after 11.2
    assert measurement.longest_gap(o.read_at for o in outputs) == (pytest.approx(1.3), 10.2)
    assert measurement.longest_gap([1.0]) == (0.0, None)


def test_input_check_catches_a_publisher_that_duplicated_or_dropped() -> None:
    assert measurement.input_check(["a", "b"], ["b", "a"])["consistent"]
    twice = measurement.input_check(["a", "b"], ["a", "b", "b"])
    assert not twice["consistent"] and twice["duplicated"] == 1 and twice["messages"] == 3
    dropped = measurement.input_check(["a", "b"], ["a"])
    assert not dropped["consistent"] and dropped["recorded_not_in_topic"] == 1
    unrecorded = measurement.input_check(["a"], ["a", "c"])
    assert not unrecorded["consistent"] and unrecorded["not_in_record"] == 1


def test_published_ids_are_the_ids_read_back_from_predictions_and_dead_letters() -> None:
    msgs = list(scenarios.messages(600, "r1", seed=0, bad_share=0.02))
    ids = [m[0] for m in msgs]
    assert len(msgs) == 600 and len(set(ids)) == 600
    assert {m[1] for m in msgs} == {measurement.GOOD, measurement.BAD}  # no label unless asked for
    bad = [m for m in msgs if m[1] == measurement.BAD]
    assert len(bad) == 12 and all(m[0].startswith("bad-r1-") for m in bad)
    for msg_id, kind, key, value in msgs:
        assert measurement.input_id(key, value) == msg_id
        if kind == measurement.BAD:
            assert key == msg_id.encode()
            assert measurement.output_id(measurement.DEAD_LETTER, key, dead_letter(value)) == msg_id
        else:
            wire = orjson.loads(value)
            assert wire["tx_id"] == msg_id and key == wire["customer_id"].encode()
            assert measurement.output_id(measurement.PREDICTION, msg_id.encode(), b"{}") == msg_id
            # a valid transaction dead-lettered is still recognised (as misrouted, not as unexpected)
            assert measurement.output_id(measurement.DEAD_LETTER, key, dead_letter(value)) == msg_id
    assert {orjson.loads(scenarios.malformed("b", v)).get("tx_id") for v in (3, 4, 5)} == {"b"}


def test_records_round_trip_and_a_torn_last_line_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "published.tsv").write_text("a\tg\t1.5\t1.6\t0\t7\nx\tb\t2.0\t2.1\t1\t3\ny\tb\t2.")
    (tmp_path / "outputs.tsv").write_text("p\ta\t3.0\t2\t0\nd\tx\t3.5\t0\t4\np\ta")
    assert measurement.read_published(tmp_path / "published.tsv") == [
        Published("a", False, 1.5, 1.6, 0, 7),
        Published("x", True, 2.0, 2.1, 1, 3),
    ]
    assert measurement.read_outputs(tmp_path / "outputs.tsv") == [
        Output("p", "a", 3.0, 2, 0),
        Output("d", "x", 3.5, 0, 4),
    ]


def test_each_valid_transaction_gets_one_label_its_delay_later_merged_in_event_time() -> None:
    delay_s = 0.25 * 86400
    msgs = list(scenarios.messages(3000, "r2", seed=0, bad_share=0.01, label_delay_s=delay_s))
    plain = list(scenarios.messages(3000, "r2", seed=0, bad_share=0.01))
    label_kinds = (measurement.LABEL_FRAUD, measurement.LABEL_LEGIT)
    # the transactions topic's messages are those of a run without labels, in the same order
    assert [m for m in msgs if m[1] not in label_kinds] == plain
    txs = {m[0]: orjson.loads(m[3]) for m in plain if m[1] == measurement.GOOD}
    labels = [(m[0], m[1], m[2], orjson.loads(m[3])) for m in msgs if m[1] in label_kinds]
    assert [m[0] for m in labels] == sorted(txs, key=lambda i: (txs[i]["timestamp"], i))  # one each, none for bad
    assert 0 < sum(kind == measurement.LABEL_FRAUD for _, kind, _, _ in labels) < len(labels)
    valid_at = [i for i, m in enumerate(plain) if m[1] == measurement.GOOD]
    simulated = itertools.islice(scenarios.simulated_transactions(0), len(valid_at))
    truth = {f"tx-r2-{i:09d}": tx.is_fraud for i, tx in zip(valid_at, simulated, strict=True)}
    for tx_id, kind, key, value in labels:
        # the app's label contract (app.records.parse_label), keyed by tx_id, the simulator's truth
        assert key == tx_id.encode() and set(value) == {"tx_id", "is_fraud", "timestamp"} and value["tx_id"] == tx_id
        assert value["is_fraud"] is (kind == measurement.LABEL_FRAUD) is truth[tx_id]
        assert parse_time(value["timestamp"]) - parse_time(txs[tx_id]["timestamp"]) == delay_s
    # in event time: each message's time (a label's is when it became known) is never before the one before it
    times = [parse_time(orjson.loads(m[3])["timestamp"]) for m in msgs if m[1] != measurement.BAD]
    assert all(a <= b for a, b in itertools.pairwise(times))
    # the labels after the last transaction: the ones the publisher paces after it
    last_tx = max(i for i, m in enumerate(msgs) if m[1] not in label_kinds)
    assert len(msgs) - 1 - last_tx == scenarios.trailing_labels(3000, 0, 0.01, delay_s) > 0


def parse_time(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def labelled(*items: tuple[str, bool | None]) -> list[Published]:
    """A record: each transaction ``(id, is_fraud)``, then its label (none for is_fraud None)."""
    record = [Published(tx_id, False, 1.0) for tx_id, _ in items]
    return record + [Published(tx_id, False, 2.0, label=y) for tx_id, y in items if y is not None]


def test_learning_tally_finds_the_double_the_missing_the_fraud_learned_as_legitimate_and_the_wrong_class() -> None:
    published = labelled(("f1", True), ("f2", True), ("f3", True), ("f4", True), ("n1", False), ("n2", False),
                         ("n3", False), ("n4", False), ("lost", True), ("nolabel", None))  # fmt: skip
    outputs = [Output("p", i, 1.5) for i in ("f1", "f2", "f3", "f4", "n1", "n2", "n3", "n4", "nolabel")]
    audit = [
        Learned("f1", "fraud", "explicit", "v2"),  # right
        Learned("f2", "fraud", "explicit", "v2"),
        Learned("f2", "fraud", "explicit", "v5"),  # a double: learned twice
        Learned("f3", "legitimate", "implicit", "v3"),  # the horizon passed before its label was read...
        Learned("f3", "fraud", "late", "v4"),  # ... then the late fraud: a fraud learned as legitimate, not a double
        # f4: never learned
        Learned("n1", "legitimate", "explicit", "v2"),  # right
        Learned("n2", "legitimate", "implicit", "v3"),  # right too: a legitimate one, learned once as legitimate
        Learned("n3", "fraud", "explicit", "v3"),  # wrong class
        Learned("n4", "legitimate", "explicit", "v3"),
        Learned("n4", "legitimate", "implicit", "v4"),  # learned twice
        Learned("nolabel", "legitimate", "implicit", "v4"),  # audited, never labelled
        Learned("zzz", "fraud", "explicit", "v4"),  # never published at all
    ]
    t = measurement.learning_tally(published, outputs, audit)
    assert (t["labels_published"], t["fraud_labels"], t["labelled_decided"], t["labelled_not_decided"]) == (9, 5, 8, 1)
    assert (t["learned_as_fraud"], t["learned_as_legitimate"], t["learned_once"]) == (1, 2, 3)
    assert t["learned_twice"] == 2 and set(t["learned_twice_sample"]) == {"f2", "n4"}
    assert t["learned_twice_sample"]["f2"] == [["fraud", "explicit", "v2"], ["fraud", "explicit", "v5"]]
    assert t["never_learned"] == 1 and t["never_learned_sample"] == {"f4": []}
    assert t["frauds_learned_as_legitimate"] == 1
    flal = {"f3": [["legitimate", "implicit", "v3"], ["fraud", "late", "v4"]]}
    assert t["frauds_learned_as_legitimate_sample"] == flal
    assert t["wrong_class"] == 1 and list(t["wrong_class_sample"]) == ["n3"]
    assert t["audit_unexpected"] == 2 and list(t["audit_unexpected_sample"]) == ["nolabel", "zzz"]
    assert sum(t[name] for name in measurement.LEARNING_OUTCOMES) == t["labelled_decided"]  # each in one outcome
    assert t["audit_records"] == 12 and t["learned_how"] == {"explicit": 7, "implicit": 4, "late": 1}
    # a fraud learned as legitimate twice is one fraud learned as legitimate, not also a double
    twice_wrong = [Learned("f1", "legitimate", "implicit"), Learned("f1", "legitimate", "implicit")]
    t = measurement.learning_tally(labelled(("f1", True)), [Output("p", "f1", 1.5)], twice_wrong)
    assert (t["frauds_learned_as_legitimate"], t["learned_twice"]) == (1, 0)


def test_a_clean_learning_tally_passes_and_each_learning_failure_fails_the_run() -> None:
    published = labelled(("f", True), ("n", False), ("m", None))
    outputs = [Output("p", "f", 1.5), Output("p", "n", 1.5), Output("d", "m", 1.5)]
    audit = [Learned("f", "fraud", "explicit", "v1"), Learned("n", "legitimate", "explicit", "v1")]
    t = measurement.learning_tally(published, outputs, audit)
    assert (t["learned_as_fraud"], t["learned_as_legitimate"], t["learned_once"], t["labelled_decided"]) == (1, 1, 2, 2)
    assert all(t[name] == 0 for name in measurement.LEARNING_FAILURES) and t["audit_unexpected"] == 0
    # labels are not transactions: the delivery accounting of the same record does not see them
    d = measurement.tally(published, outputs)
    assert (d["published"], d["lost"], d["duplicated"], d["record_duplicates"]) == (3, 0, 0, 0)
    clean = {"measurement_valid": True, "lost": 0, "duplicated": 0, "misrouted": 0, "unexpected": 0,
             "learning": {**t, "audit_unexpected": 0}}  # fmt: skip
    assert exit_code(clean) == 0
    for failure in (*measurement.LEARNING_FAILURES, "audit_unexpected"):
        assert exit_code({**clean, "learning": {**clean["learning"], failure: 1}}) == 1, failure


def test_labels_and_the_audit_round_trip_through_their_records(tmp_path: Path) -> None:
    (tmp_path / "published.tsv").write_text("a\tg\t1.5\t1.6\t0\t7\na\tlf\t2.0\t2.1\t1\t3\nb\tll\t2.0\t2.1\t2\t4\n")
    assert measurement.read_published(tmp_path / "published.tsv") == [
        Published("a", False, 1.5, 1.6, 0, 7),
        Published("a", False, 2.0, 2.1, 1, 3, label=True),
        Published("b", False, 2.0, 2.1, 2, 4, label=False),
    ]
    (tmp_path / "audit.tsv").write_text("a\tfraud\texplicit\tv3\t5.0\t1\t0\nb\tlegitimate\timplicit\tv4\t5.5\t0")
    assert measurement.read_audit(tmp_path / "audit.tsv") == [Learned("a", "fraud", "explicit", "v3", 5.0, 1, 0)]
    value = orjson.dumps({"tx_id": "a", "learned_as": "fraud", "how": "explicit", "version": "v3"})
    assert measurement.audit_entry(value) == ("a", "fraud", "explicit", "v3")


def test_the_trainers_availability_counts_the_stretches_without_one_and_its_moves() -> None:
    probes = [(0.0, "w0"), (1.0, None), (2.0, None), (4.0, "w0"), (5.0, "w1"), (8.0, None), (9.0, "w1"), (10.0, None)]
    a = measurement.trainer_availability(probes)
    assert a["active_share"] == pytest.approx(0.6) and a["probes"] == 8
    assert (a["longest_inactive_s"], a["longest_inactive_from"]) == (3.0, 1.0)  # 1.0 to 4.0, not the 1 s at 8.0
    assert a["moves"] == 1 and a["trained_s"] == {"w0": 2.0, "w1": 4.0}  # w0 restarted in place: not a move
    assert measurement.trainer_availability([(0.0, None)])["active_share"] is None


def test_faults_are_spread_evenly_and_the_exit_code_follows_the_counts() -> None:
    schedule = schedule_without = scenarios.fault_schedule(70.0, kills=3, broker_restart=True, scale=True)  # 6
    assert [f.planned_at_s for f in schedule] == pytest.approx([10.0 * i for i in range(1, 7)])
    assert sorted(f.kind for f in schedule) == ["broker_restart", "scale_down", "scale_up", *["sigkill"] * 3]
    kinds = [f.kind for f in schedule]
    assert kinds.index("scale_up") < kinds.index("scale_down")
    # A pause wants another worker to take the paused one's partitions: with the scale step, while two run and
    # before the broker restart; the other faults keep their places and the spacing stays even.
    schedule = scenarios.fault_schedule(140.0, kills=3, broker_restart=True, scale=True, pauses=1)  # 7 faults
    kinds = [f.kind for f in schedule]
    assert [f.planned_at_s for f in schedule] == pytest.approx([17.5 * i for i in range(1, 8)])
    assert sorted(kinds) == ["broker_restart", "pause", "scale_down", "scale_up", *["sigkill"] * 3]
    assert kinds.index("scale_up") < kinds.index("pause") < kinds.index("broker_restart") < kinds.index("scale_down")
    two = scenarios.fault_schedule(100.0, kills=0, broker_restart=False, scale=True, pauses=2)
    assert [f.kind for f in two] == ["scale_up", "pause", "pause", "scale_down"]
    alone = scenarios.fault_schedule(90.0, kills=1, broker_restart=False, scale=False, pauses=2)  # spread evenly
    assert [(f.kind, f.planned_at_s) for f in alone] == [("pause", 22.5), ("sigkill", 45.0), ("pause", 67.5)]
    assert scenarios.fault_schedule(70.0, kills=3, broker_restart=True, scale=True, pauses=0) == schedule_without
    # a kill of the trainer's owner goes with the kills; tied with the broker restart, before it (not into the catch-up)
    trainer = scenarios.fault_schedule(70.0, kills=2, broker_restart=True, scale=True, trainer_kills=1)
    assert [f.kind for f in trainer] == ["scale_up", "sigkill", "trainer_sigkill", "broker_restart", "scale_down",
                                         "sigkill"]  # fmt: skip
    assert [f.planned_at_s for f in trainer] == pytest.approx([10.0 * i for i in range(1, 7)])
    clean = {"measurement_valid": True, "lost": 0, "duplicated": 0, "misrouted": 0, "unexpected": 0}
    assert exit_code(clean) == 0
    assert exit_code({**clean, "lost": 1}) == 1
    assert exit_code({**clean, "duplicated": 1}) == 1
    assert exit_code({**clean, "measurement_valid": False}) == 2


# --- the run ----------------------------------------------------------------------------------------------------

# About 75 s of publishing transactions, then 8 s of the last labels; each fault waits until every running worker is
# ready (--fault-after-ready), so a slow start on a loaded machine delays the next fault instead of overlapping it,
# and each recovery is measured whole; the publishing waits with it, so the faults keep their places in the stream
# (on a loaded host the workers' 30 s starts had pushed four of the six faults past the last transaction).
TRANSACTIONS, MALFORMED = 12000, 60
# The run spans 2.4 days of event time (5,000 transactions a day): labels come a quarter day after their transactions
# (from a tenth of the run on, and a quarter day of them after the last transaction), and the horizon is 0.55 day, so
# the 0.3 day between a label and its horizon (about 9 s of publishing, as the default 7 and 8 days give at 500 tx/s)
# is crossed for most transactions while the faults hit: a fraud whose label is on Kafka must not be learned as
# legitimate first.
LABEL_DELAY_DAYS, LABEL_HORIZON_S = 0.25, 0.55 * 86400
RUN = [
    "--transactions", str(TRANSACTIONS), "--rate-tps", "160", "--bad-share", "0.005", "--fault-after-ready",
    "--kills", "2", "--scale", "--broker-restart", "--broker-down-s", "5", "--trainer-kills", "1",
    "--labels", "--label-delay-days", str(LABEL_DELAY_DAYS), "--worker-env", f"LABEL_HORIZON_S={LABEL_HORIZON_S:g}",
    "--drain-timeout-s", "120", "--settle-s", "5", "--progress-s", "10",
]  # fmt: skip
# Ready again within READY_BOUND_S. The README says a restarted worker decides again within seconds; the full run in
# BENCHMARKS.md had replacements ready in 2.8-9.5 s and the added worker in 14.7 s (it reads the terminal log from
# its start). On the shared 2-core machine, with other sessions' brokers and workers beside this run, 30 s still
# tells a slow recovery from a stuck one (a worker that waits out a 10 s session or a rebalance twice stays under it).
READY_BOUND_S = 30.0
SIGKILL_READY_S = 15.0  # a SIGKILLed worker restarts with the same id and static membership: no session to wait out


# Exclusive: recovery bounds of 15 and 30 s, which a neighbour's CPU would stretch. Last of the exclusive tests under
# xdist: run right after it, test_features_kafka's SIGKILL test came out with delayed terminal features short, also
# in one process (pytest -p no:xdist this test, then that one). An open problem: this order does not explain it.
@pytest.mark.exclusive(last=True)
@pytest.mark.timeout(900)
def test_sigkills_a_broker_restart_and_a_scale_step_lose_and_duplicate_nothing() -> None:
    """About 83 s of publishing with six faults (12,000 messages at 160/s and their labels), then up to 2 minutes to
    drain, and the trainer's last versions."""
    work = REPO_ROOT / ".kafka" / f"chaos-test-{uuid.uuid4().hex[:8]}"
    out = work / "report.json"
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    command = [sys.executable, "scripts/chaos.py", *RUN, "--work-dir", str(work), "--out", str(out)]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as process:  # fmt: skip
        try:
            stdout, stderr = process.communicate(timeout=840)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)  # the script stops its broker and workers on SIGTERM
            stdout, stderr = process.communicate(timeout=120)
    output = f"{' '.join(command)}\nexit {process.returncode}\n{stdout[-6000:]}\n{stderr[-3000:]}"
    assert out.exists(), f"no report:\n{output}"
    report = orjson.loads(out.read_bytes())

    # the measurement: the publisher's count, its record and the input topic agree
    assert report["published"] == report["publisher_count"] == TRANSACTIONS, output
    assert report["input_topic"]["messages"] == TRANSACTIONS and report["input_topic"]["consistent"], output
    assert report["published_malformed"] == MALFORMED, output
    # the verdict
    assert report["lost"] == 0, output
    assert report["duplicated"] == 0 and report["extra_copies"] == 0, output
    assert report["misrouted"] == 0 and report["unexpected"] == 0, output
    assert report["predicted"] == report["published_valid"] and report["dead_lettered"] == MALFORMED, output
    assert report["complete"], output
    kinds = [f["kind"] for f in report["faults"]]
    assert kinds == ["scale_up", "sigkill", "trainer_sigkill", "broker_restart", "scale_down", "sigkill"], output
    # the learning: each labelled transaction learned once, as its class, from the audit the versions carry
    learning = report["learning"]
    assert learning["labels_published"] == learning["publisher_labels"] == TRANSACTIONS - MALFORMED, output
    assert learning["labels_topic"]["consistent"] and learning["fraud_labels"] > 0, output
    assert learning["labelled_decided"] == TRANSACTIONS - MALFORMED, output
    assert learning["frauds_learned_as_legitimate"] == 0 and learning["wrong_class"] == 0, output
    assert learning["learned_twice"] == 0 and learning["never_learned"] == 0, output
    assert learning["audit_unexpected"] == 0, output
    assert learning["learned_once"] == learning["labelled_decided"], output
    assert learning["learned_as_fraud"] == learning["fraud_labels"], output
    # and each from its label: every label was on Kafka 0.3 day (event time) before its transaction's horizon, so an
    # implicit negative here is the race that teaches frauds as legitimate, seen on the legitimate ones too (a
    # trainer without the labels watermark, same run: 3,127 implicit negatives, 2 of them frauds)
    assert learning["learned_how"] == {"explicit": learning["labelled_decided"]}, output
    trainer_kill = next(f for f in report["faults"] if f["kind"] == "trainer_sigkill")
    assert trainer_kill["target"] is not None and trainer_kill["trainer_again_after_s"] is not None, output
    # each fault's recovery, measured on the transactions first sent after it: none for one that came after the last
    # transaction (while the last labels are published, or delayed there by --fault-after-ready)
    assert all(f["recovery_s"] is not None or f.get("after_last_transaction") for f in report["faults"]), output
    assert sum(f["recovery_s"] is not None for f in report["faults"]) >= 3, output
    # Every worker is ready again within READY_BOUND_S of each fault that took it away: a SIGKILLed worker from its
    # kill, the added worker from its start, every running worker from the broker's return after the restart. A wait
    # the script itself cut short (its next fault hit that worker first) is excused if it was shorter than the
    # bound; never a SIGKILL's: each SIGKILLed worker must be ready again, as before.
    ready: dict[str, float | None] = {}
    for i, fault in enumerate(report["faults"]):
        if fault["kind"] in ("sigkill", "trainer_sigkill", "scale_up"):
            waits = {fault["target"]: (fault["ready_after_s"], fault.get("waited_before_hit_s"))}
        elif fault["kind"] == "broker_restart":
            assert fault["ready_again_after_s"], output  # some worker was running: its readiness was awaited
            hit = fault.get("hit_again_before_ready", {})
            waits = {w: (after_s, hit.get(w)) for w, after_s in fault["ready_again_after_s"].items()}
        else:
            continue
        for worker, (after_s, cut_after_s) in waits.items():
            if (
                after_s is None
                and cut_after_s is not None
                and cut_after_s < READY_BOUND_S
                and fault["kind"] not in ("sigkill", "trainer_sigkill")
            ):
                continue  # not measured: stopped or killed by the script before the bound ran out
            ready[f"{fault['kind']} {i} {worker}"] = after_s
    late = {k: v for k, v in ready.items() if v is None or v > READY_BOUND_S}
    assert not late, f"not ready again within {READY_BOUND_S} s: {late}\n{output}"
    slow_kills = {k: v for k, v in ready.items() if "sigkill" in k and (v or 0) > SIGKILL_READY_S}
    assert not slow_kills, f"a SIGKILLed worker not ready again within {SIGKILL_READY_S} s: {slow_kills}\n{output}"
    for fault in report["faults"]:
        if fault["kind"] == "scale_down":  # SIGTERM: the batches in flight commit, then the worker exits promptly
            assert fault.get("exited_after_s") is not None and fault["exited_after_s"] <= 15.0, output
            # the added worker took part: it committed decisions of its own (its /metrics before the SIGTERM and
            # before any SIGKILL that restarted it: the trainer owner's kill may hit it)
            assert fault["target"] == "worker-1" and (fault["decided_before_stop"] or 0) >= 1, output
        if fault["kind"] == "broker_restart":  # not ready while the broker is away; a line per change, not per message
            assert 503 in fault["ready_while_down"], output
            assert fault["log_lines_while_down"] <= 60, output
    # every exit of a worker was one the script caused (SIGKILL, the scale-down's SIGTERM, the end of the run)
    assert report["unexpected_exits"] == [], output
    assert process.returncode == 0, output
    shutil.rmtree(work, ignore_errors=True)  # kept for a look when the test fails
