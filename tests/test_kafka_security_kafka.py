"""The worker on a SASL_SSL listener: a CA and a broker certificate generated for this module, SCRAM users written
into the broker's metadata, a worker that connects with them, and one that must refuse to start with a wrong
password (or an untrusted broker certificate) with one clear line."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import kafka_local  # scripts/ is on sys.path (tests/conftest.py)
import pytest
from local_processes import free_port

from app.kafka.clients import at_least, consume
from app.kafka.security import client_security_options
from app.serialization import dumps, loads
from app.settings import load
from tests.cases import transaction
from tests.conftest import WorkerProcess

pytestmark = pytest.mark.kafka

WorkerFactory = Callable[..., WorkerProcess]
USER = "fraud-worker"
PASSWORD = "s3cret-for-tests"
EXIT_CONFIG = 78


@dataclass(frozen=True)
class SecuredBroker:
    bootstrap: str  # the SASL_SSL listener
    ca_file: Path
    home: Path

    def env(self, mechanism: str = "SCRAM-SHA-512", password: str = PASSWORD) -> dict[str, str]:
        """The worker's settings for this listener."""
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": mechanism,
            "KAFKA_SASL_USERNAME": USER,
            "KAFKA_SASL_PASSWORD": password,
            "KAFKA_SSL_CAFILE": str(self.ca_file),
        }


@pytest.fixture(scope="module")
def secured_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecuredBroker]:
    """A broker of its own with a SASL_SSL listener on free ports, stopped after the module."""
    home = tmp_path_factory.mktemp("kafka-sasl")
    certificates = kafka_local.generate_certificates(home / "tls")
    sasl_port = free_port()
    try:
        kafka_local.start(
            port=free_port(),
            controller_port=free_port(),
            data_dir=home / "data",
            sasl_ssl_port=sasl_port,
            scram_users={USER: PASSWORD},
            keystore=certificates.keystore,
            keystore_password=certificates.keystore_password,
        )
    except Exception as exc:  # the reason must reach the test report
        pytest.fail(f"no SASL_SSL broker: scripts/kafka_local.py could not start one: {exc}", pytrace=False)
    try:
        yield SecuredBroker(f"127.0.0.1:{sasl_port}", certificates.ca_file, home)
    finally:
        kafka_local.stop(data_dir=home / "data")


def _exit_status(worker: WorkerProcess, timeout_s: float) -> int:
    assert worker.process is not None
    try:
        return worker.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker still runs after {timeout_s} s:\n{worker.log_tail()}", pytrace=False)


def test_worker_connects_over_sasl_ssl_and_decides_a_transaction(
    secured_broker: SecuredBroker, worker_factory: WorkerFactory
) -> None:
    worker = worker_factory(partitions=1, **secured_broker.env("SCRAM-SHA-512"))
    worker.wait_ready()
    assert f"Authenticated as {USER} via SCRAM-SHA-512" in worker.log_path.read_text()

    # Published by an independent client (kcat) over the same TLS listener. Debian's librdkafka (2.0) fails SCRAM
    # against Kafka 4 (a nonce bug fixed in librdkafka 2.6.1), so kcat authenticates with PLAIN.
    kcat = shutil.which("kcat") or shutil.which("kafkacat")
    assert kcat, "kcat is not installed: run scripts/install_system_packages.sh (Debian package kcat)"
    tx = transaction(1, tx_id="sasl-1", customer_id="c-sasl")
    subprocess.run(
        [kcat, "-P", "-b", secured_broker.bootstrap, "-t", worker.topics["TRANSACTIONS_TOPIC"], "-K", "|",
         "-X", "security.protocol=SASL_SSL", "-X", "sasl.mechanisms=PLAIN", "-X", f"sasl.username={USER}",
         "-X", f"sasl.password={PASSWORD}", "-X", f"ssl.ca.location={secured_broker.ca_file}"],
        input=b"c-sasl|" + dumps(tx) + b"\n", check=True, timeout=60,
    )  # fmt: skip

    # Read back over SASL_SSL with the worker's own option builder, this time with SCRAM-SHA-256.
    options = client_security_options(load(secured_broker.env("SCRAM-SHA-256")))
    predictions = consume(secured_broker.bootstrap, worker.topics["PREDICTIONS_TOPIC"], at_least(1), 60, options)
    assert [loads(r.value or b"")["tx_id"] for r in predictions] == ["sasl-1"]
    assert 0.0 <= loads(predictions[0].value or b"")["fraud_probability"] <= 1.0
    # The Faust app's own producer (health events) goes through the same credentials.
    health = consume(secured_broker.bootstrap, worker.topics["HEALTH_TOPIC"], at_least(1), 30, options)
    assert loads(health[0].value or b"")["worker"] == worker.env["WORKER_ID"]


def test_a_wrong_password_stops_the_worker_with_one_clear_line(
    secured_broker: SecuredBroker, worker_factory: WorkerFactory
) -> None:
    started = time.monotonic()
    worker = worker_factory(**secured_broker.env("SCRAM-SHA-256", password="not-the-password"))
    assert _exit_status(worker, timeout_s=60) == EXIT_CONFIG
    log = worker.log_path.read_text()
    errors = [line for line in log.splitlines() if "ERROR" in line]
    assert len(errors) == 1, log
    assert f"Kafka authentication failed for user '{USER}' with SASL mechanism SCRAM-SHA-256" in errors[0]
    assert secured_broker.bootstrap in errors[0]
    assert "Traceback" not in log and "not-the-password" not in log
    assert time.monotonic() - started < 60


def test_a_broker_certificate_from_another_ca_is_refused(
    secured_broker: SecuredBroker, worker_factory: WorkerFactory, tmp_path: Path
) -> None:
    other_ca = kafka_local.generate_certificates(tmp_path / "other-ca").ca_file
    worker = worker_factory(**{**secured_broker.env(), "KAFKA_SSL_CAFILE": str(other_ca)})
    assert _exit_status(worker, timeout_s=60) == EXIT_CONFIG
    log = worker.log_path.read_text()
    assert f"TLS: the certificate of the Kafka broker at {secured_broker.bootstrap} was refused" in log, log
    assert "Traceback" not in log
