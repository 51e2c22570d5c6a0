"""Kafka security settings and the client options built from them (no broker: the broker tests are in
``test_kafka_security_kafka.py``)."""

from __future__ import annotations

import ssl
from pathlib import Path

import faust
import kafka_local  # scripts/ is on sys.path (tests/conftest.py)
import pytest

from app.kafka.security import client_security_options, faust_credentials, ssl_context
from app.settings import load


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(kafka_local.generate_certificates(tmp_path_factory.mktemp("tls")).ca_file)


def test_plaintext_by_default_adds_no_tls_and_no_sasl() -> None:
    settings = load({})
    assert client_security_options(settings) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(settings) is None


def test_sasl_ssl_gives_every_client_the_same_tls_context_and_scram_login(ca_file: str) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "sasl_ssl", "KAFKA_SASL_MECHANISM": "scram-sha-256",
           "KAFKA_SASL_USERNAME": "alice", "KAFKA_SASL_PASSWORD": "pw", "KAFKA_SSL_CAFILE": ca_file}  # fmt: skip
    settings = load(env)
    options = client_security_options(settings)
    assert {k: v for k, v in options.items() if k != "ssl_context"} == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "pw",
    }
    context = options["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka-local test CA"),),)]
    credentials = faust_credentials(settings)
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.protocol.value, credentials.mechanism.value) == ("SASL_SSL", "SCRAM-SHA-256")
    assert credentials.ssl_context is not None


def test_hostname_check_can_be_turned_off_but_the_certificate_is_still_verified(ca_file: str) -> None:
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": ca_file, "KAFKA_SSL_CHECK_HOSTNAME": "false"}
    settings = load(env)
    context = ssl_context(settings.kafka_security)
    assert context is not None
    assert not context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert "sasl_mechanism" not in client_security_options(settings)
    assert isinstance(faust_credentials(settings), faust.SSLCredentials)


def test_a_client_certificate_is_loaded_for_mutual_tls(tmp_path: Path) -> None:
    made = kafka_local.generate_certificates(tmp_path)  # the broker's pair stands in for a client's here
    env = {"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": str(made.ca_file),
           "KAFKA_SSL_CERTFILE": str(tmp_path / "broker.pem"),
           "KAFKA_SSL_KEYFILE": str(tmp_path / "broker.key")}  # fmt: skip
    assert ssl_context(load(env).kafka_security) is not None
    env["KAFKA_SSL_KEYFILE"] = str(made.ca_file)  # not the certificate's key
    with pytest.raises(ssl.SSLError):
        ssl_context(load(env).kafka_security)


def test_the_password_never_appears_in_the_settings_repr() -> None:
    settings = load({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_USERNAME": "alice",
                     "KAFKA_SASL_PASSWORD": "hunter2-secret", "KAFKA_SSL_KEY_PASSWORD": "key-secret"})  # fmt: skip
    assert "alice" in repr(settings)
    assert "hunter2-secret" not in repr(settings) and "key-secret" not in repr(settings)
    assert "hunter2-secret" not in repr(faust_credentials(settings))


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL must be one of"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "alice"}, "needs KAFKA_SASL_USERNAME and"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "KAFKA_SASL_USERNAME": "a",
                "KAFKA_SASL_PASSWORD": "p",
                "KAFKA_SASL_MECHANISM": "GSSAPI",
            },
            "KAFKA_SASL_MECHANISM must be one of",
        ),  # fmt: skip
        ({"KAFKA_SSL_CHECK_HOSTNAME": "maybe"}, "KAFKA_SSL_CHECK_HOSTNAME must be true or false"),
        ({"KAFKA_SSL_KEYFILE": "client.key"}, "KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE"),
    ],
)
def test_a_wrong_combination_is_refused_naming_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(env)
