"""A zombie on the real broker: a worker paused (SIGSTOP) past its session timeout loses its partitions to the
other worker, which decides them; resumed (SIGCONT), it must be fenced and publish nothing for what it lost.

Every transaction published must come out as exactly one committed prediction, counted by tx_id (an extra copy
fails the test). The paused worker cannot score while stopped, so the predictions of its partitions' transactions
published during the pause, scored (``scored_at``) between the stop and the resume, are the other worker's; it
must have decided all of them before the resume, so a zombie that published any of them again shows as a
duplicate. A zombie that reopened a partition it lost (a new transactional producer) would fence the new owner:
the new owner's log must not say it was fenced.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from faultrun.measurement import Output, Published, tally  # scripts/ is on sys.path: tests/conftest.py puts it there

from app.kafka.clients import Connection, admin_client, consume, plain_producer
from app.serialization import dumps, loads
from app.serving.routing import owners_from_members
from tests.cases import transaction
from tests.conftest import WorkerProcess
from tests.test_features_kafka import metric, same_deployment
from tests.test_state_store_kafka import all_predictions

log = logging.getLogger(__name__)

WorkerFactory = Callable[..., WorkerProcess]
PARTITIONS = 2
SESSION_TIMEOUT_MS = 6000  # the paused worker is removed from the group after this; the default 10 s costs time
RATE_TPS = 100.0
TAKEOVER_BOUND_S = 30.0  # session timeout, a rebalance and the new owner's restore, on a loaded 2-core machine
FENCED = "was taken over by another worker (fenced)"


@dataclass(frozen=True, slots=True)
class Sent:
    tx_id: str
    partition: int
    acked_at: float  # wall time of the broker's acknowledgement


def assert_exactly_once(sent: Iterable[Sent], predicted_tx_ids: Iterable[str]) -> None:
    """Each published tx_id has exactly one prediction; none is lost, none comes twice, none is unknown."""
    counts = tally([Published(s.tx_id, False, s.acked_at) for s in sent],
                   [Output("p", tx_id, 0.0) for tx_id in predicted_tx_ids])  # fmt: skip
    wrong = {k: counts[k] for k in ("lost", "duplicated", "extra_copies", "unexpected")}
    samples = {k: counts[k] for k in ("lost_sample", "duplicated_sample", "unexpected_sample")}
    assert wrong == {"lost": 0, "duplicated": 0, "extra_copies": 0, "unexpected": 0}, samples


def test_the_exactly_once_check_fails_on_a_zombie_copy_a_loss_and_an_unknown_id() -> None:
    sent = [Sent("a", 0, 1.0), Sent("b", 1, 1.0)]
    assert_exactly_once(sent, ["b", "a"])
    for predicted in (["a", "b", "a"], ["a"], ["a", "b", "z"]):  # a second copy; b lost; z never published
        with pytest.raises(AssertionError):
            assert_exactly_once(sent, predicted)


class Publisher(threading.Thread):
    """Publishes transactions keyed by customer at ``rate_tps`` until stopped; notes each one's acknowledgement."""

    def __init__(self, bootstrap: str, topic: str, rate_tps: float) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.rate_tps = bootstrap, topic, rate_tps
        self.sent: list[Sent] = []
        self.halt = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._publish())
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    async def _publish(self) -> None:
        producer = plain_producer(Connection(self.bootstrap), acks="all", enable_idempotence=True, linger_ms=5)
        await producer.start()
        start = datetime(2018, 4, 1, tzinfo=UTC)
        i = 0
        began = time.monotonic()
        try:
            while not self.halt.is_set():
                chunk = []
                for _ in range(10):  # a chunk of 10 every 0.1 s at 100 tx/s
                    at = (start + timedelta(seconds=60 * i)).isoformat().replace("+00:00", "Z")
                    tx = transaction(i, customer_id=f"c-{i % 40}", terminal_id=f"t-{i % 60}", timestamp=at)
                    key = str(tx["customer_id"]).encode()
                    chunk.append((str(tx["tx_id"]), await producer.send(self.topic, key=key, value=dumps(tx))))
                    i += 1
                for tx_id, future in chunk:
                    metadata = await future
                    self.sent.append(Sent(tx_id, metadata.partition, time.time()))
                delay = began + i / self.rate_tps - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            await producer.stop()


def owners(bootstrap: str, worker: WorkerProcess) -> dict[int, str]:
    """Partition of the transactions topic -> the web URL of the worker the decisions group gives it to."""

    async def describe() -> dict[int, str]:
        admin = admin_client(Connection(bootstrap))
        await admin.start()
        try:
            (response,) = await admin.describe_consumer_groups([f"{worker.env['APP_ID']}-decisions"])
        finally:
            await admin.close()
        found: dict[int, str] = {}
        for group in response.groups:
            if group[0] == 0:
                found.update(owners_from_members(group[5], worker.topics["TRANSACTIONS_TOPIC"]))
        return found

    return asyncio.run(describe())


def tracebacks(log_text: str) -> tuple[int, list[str]]:
    """A worker's logged tracebacks: how many are asyncio's "Future exception was never retrieved" (what the fenced
    producer's failed batch leaves in aiokafka's futures, logged when they are collected: noise, not a crash), and
    the others, each with the lines before it.

    >>> tracebacks("Future exception was never retrieved\\nfuture: <Future>\\nTraceback (most recent call last):")
    (1, [])
    >>> tracebacks("[ERROR] boom\\nTraceback (most recent call last):\\n")[1]
    ['[ERROR] boom\\nTraceback (most recent call last):']
    """
    lines = log_text.splitlines()
    unretrieved, others = 0, []
    for i, line in enumerate(lines):
        if line.startswith("Traceback (most recent call last)"):
            before = lines[max(0, i - 2) : i]
            if any("Future exception was never retrieved" in b for b in before):
                unretrieved += 1
            else:
                others.append("\n".join([*before, line]))
    return unretrieved, others


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s} s"
        time.sleep(0.25)
    return time.monotonic() - started


@pytest.mark.kafka
@pytest.mark.timing  # the takeover within TAKEOVER_BOUND_S, decisions during the pause
@pytest.mark.timeout(300)
def test_a_worker_paused_past_its_session_is_fenced_and_publishes_nothing_for_the_partitions_it_lost(
    worker_factory: WorkerFactory, kafka_bootstrap: str
) -> None:
    began = time.monotonic()
    session = {"SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS)}
    zombie = worker_factory(partitions=PARTITIONS, **session)
    other = worker_factory(partitions=PARTITIONS, **same_deployment(zombie, WORKER_ID="worker-1", **session))
    zombie.wait_ready()
    other.wait_ready()
    wait_for(lambda: set(owners(kafka_bootstrap, zombie).values()) == {zombie.web_url, other.web_url}, 30.0,
             "each worker holds a partition")  # fmt: skip
    lost = {p for p, url in owners(kafka_bootstrap, zombie).items() if url == zombie.web_url}
    publisher = Publisher(kafka_bootstrap, zombie.topics["TRANSACTIONS_TOPIC"], RATE_TPS)
    publisher.start()
    try:
        wait_for(lambda: metric(zombie, "fraud_transactions_total") >= 50, 30.0, "the worker to be paused decides")
        assert zombie.process is not None
        zombie.process.send_signal(signal.SIGSTOP)
        stopped_at = time.time()
        everything = {p: other.web_url for p in range(PARTITIONS)}
        takeover_s = wait_for(lambda: owners(kafka_bootstrap, zombie) == everything, TAKEOVER_BOUND_S,
                              "the other worker takes the paused one's partitions")  # fmt: skip
        time.sleep(3.0)  # the other worker decides the lost partitions' new transactions meanwhile
        marked_at = time.time()
        during = [s for s in list(publisher.sent) if s.acked_at <= marked_at]
        # Everything published so far is decided while the zombie still sleeps: any copy of it after the resume
        # is a second prediction.
        wanted = {s.tx_id.encode() for s in during}
        predicted = consume(kafka_bootstrap, zombie.topics["PREDICTIONS_TOPIC"],
                            lambda records: wanted <= {r.key for r in records}, timeout_s=60)  # fmt: skip
        assert wanted <= {r.key for r in predicted}, "not decided while the worker was paused"
        zombie.process.send_signal(signal.SIGCONT)
        resumed_at = time.time()
        # Rejoined: the group gives it partitions again (its /ready may answer 200 before it learns it was out).
        rejoined_s = wait_for(lambda: zombie.process is None or zombie.process.poll() is not None
                              or zombie.web_url in owners(kafka_bootstrap, zombie).values(), 30.0,
                              "the resumed worker rejoins or exits")  # fmt: skip
        time.sleep(3.0)  # traffic goes on across the group's rebalance
    finally:
        publisher.halt.set()
        publisher.join(timeout=30)
    assert publisher.error is None, publisher.error
    sent = publisher.sent

    records = all_predictions(kafka_bootstrap, zombie, len(sent))
    predictions = [loads(r.value) for r in records]
    assert_exactly_once(sent, [p["tx_id"] for p in predictions])

    by_id = {p["tx_id"]: p for p in predictions}
    paused = [s for s in sent if s.partition in lost and stopped_at < s.acked_at <= marked_at]
    assert len(paused) >= 100, f"only {len(paused)} transactions on the lost partitions during the pause"
    scored_at = [datetime.fromisoformat(by_id[s.tx_id]["scored_at"].replace("Z", "+00:00")).timestamp() for s in paused]
    assert all(stopped_at < t < resumed_at for t in scored_at), "decided by the paused worker?"

    other_log = other.log_path.read_text(errors="replace")
    assert FENCED not in other_log, f"the zombie took a partition back without a rebalance:\n{other.log_tail()}"
    assert zombie.process is not None and other.process is not None
    returncode = zombie.process.poll()
    if returncode is None:  # rejoined: ready, with partitions of its own again
        assert zombie.http_status("/ready") == 200, zombie.log_tail()
    else:
        assert returncode == 0, zombie.log_tail()
    assert other.process.poll() is None, other.log_tail()
    zombie.stop()
    assert zombie.process.returncode == 0, zombie.log_tail()  # it stops cleanly
    zombie_log = zombie.log_path.read_text(errors="replace")
    unretrieved, crashes = tracebacks(zombie_log)
    assert not crashes, crashes[0]
    log.warning(
        "zombie: lost partitions %s; taken over %.1f s after SIGSTOP (session %d ms); %d transactions on them "
        "decided by the other worker during the pause; resumed worker %s %.1f s after SIGCONT; its fenced lines %d, "
        "unretrieved-future tracebacks in its log %d; %d transactions, each predicted once; %.0f s in all",
        sorted(lost), takeover_s, SESSION_TIMEOUT_MS, len(paused), "ready again" if returncode is None else
        f"exited {returncode}", rejoined_s, zombie_log.count(FENCED), unretrieved, len(sent), time.monotonic() - began,
    )  # fmt: skip
