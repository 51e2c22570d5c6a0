"""How the worker's Kafka clients authenticate: one place turns ``Settings.kafka_security`` into client options.

Every client takes its TLS and SASL options from here: the transactional loops' consumers and producers, the
terminal feed, the admin client that creates the topics, the plain clients of scripts and tests, and the Faust
app's own producer (health events, through :func:`faust_credentials`). Before the worker starts,
:func:`check_credentials` connects once: a wrong password or an untrusted broker certificate is a configuration
error, not an outage, and is reported in one line instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from aiokafka.conn import collect_hosts, create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from app.settings import KafkaSecurity, Settings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 15.0


class KafkaSecurityError(Exception):
    """The broker refused this worker's credentials or this worker refused the broker's certificate: retrying
    cannot help; the message says what to change."""


def ssl_context(security: KafkaSecurity) -> ssl.SSLContext | None:
    """The TLS context of the SSL and SASL_SSL protocols (None for the others): the configured CA (else the
    system's), an optional client certificate, and hostname checking unless turned off."""
    if not security.uses_ssl:
        return None
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=security.ssl_cafile or None)
    if security.ssl_certfile:
        context.load_cert_chain(
            security.ssl_certfile, security.ssl_keyfile or None, password=security.ssl_key_password or None
        )
    # The certificate is still verified against the CA without it; only the name in it is not compared.
    context.check_hostname = security.ssl_check_hostname
    return context


def client_security_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin): protocol, TLS context, SASL."""
    security = settings.kafka_security
    options: dict[str, Any] = {"security_protocol": security.protocol}
    context = ssl_context(security)
    if context is not None:
        options["ssl_context"] = context
    if security.uses_sasl:
        options["sasl_mechanism"] = security.sasl_mechanism
        options["sasl_plain_username"] = security.sasl_username
        options["sasl_plain_password"] = security.sasl_password
    return options


def faust_credentials(settings: Settings) -> Any:
    """The same options for the Faust app's ``broker_credentials`` (its producer sends the health events)."""
    import faust  # only the worker needs it: the operator's commands never import faust

    security = settings.kafka_security
    context = ssl_context(security)
    if security.uses_sasl:
        return faust.SASLCredentials(
            username=security.sasl_username,
            password=security.sasl_password,
            mechanism=security.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


async def check_credentials(settings: Settings) -> None:
    """Connect to the first bootstrap server that answers, with the worker's options; raises
    :class:`KafkaSecurityError` when the broker refuses the credentials or TLS fails. A broker that does not
    answer is left to the clients' own retries (an outage is transient; a wrong password is not)."""
    security = settings.kafka_security
    if not security.uses_ssl and not security.uses_sasl:
        return  # nothing to refuse
    options = client_security_options(settings)
    failures: list[str] = []
    for host, port, _family in collect_hosts(settings.bootstrap_servers, randomize=False):
        where = f"{host}:{port}"
        try:
            conn = await asyncio.wait_for(
                create_conn(host, port, request_timeout_ms=int(CHECK_TIMEOUT_S * 1000), **options), CHECK_TIMEOUT_S
            )
        except SaslAuthenticationFailed as exc:
            raise KafkaSecurityError(
                f"Kafka authentication failed for user {security.sasl_username!r} with SASL mechanism "
                f"{security.sasl_mechanism} at {where} ({_broker_reason(exc)}): check KAFKA_SASL_USERNAME, "
                "KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM"
            ) from None
        except UnsupportedSaslMechanismError:
            raise KafkaSecurityError(
                f"the Kafka broker at {where} does not offer SASL mechanism {security.sasl_mechanism}: "
                "check KAFKA_SASL_MECHANISM"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise KafkaSecurityError(
                f"TLS: the certificate of the Kafka broker at {where} was refused ({exc.verify_message}): check "
                "KAFKA_SSL_CAFILE and KAFKA_SSL_CHECK_HOSTNAME"
            ) from None
        except ssl.SSLError as exc:
            raise KafkaSecurityError(
                f"TLS handshake with the Kafka broker at {where} failed ({exc.reason or exc}): is "
                f"KAFKA_SECURITY_PROTOCOL={security.protocol} the protocol of that listener?"
            ) from None
        except (OSError, TimeoutError, KafkaError) as exc:  # not answering: the next one, else the clients retry
            failures.append(f"{where}: {exc!r}")
            continue
        conn.close()
        return
    log.warning(
        "no Kafka bootstrap server answered with %s (%s); going on, the clients retry (a listener of another "
        "protocol closes the connection like this)",
        security.protocol,
        "; ".join(failures),
    )


def _broker_reason(exc: SaslAuthenticationFailed) -> str:
    """The broker's own words ("Authentication failed during authentication due to invalid credentials ...")."""
    text = str(exc)
    return text.split(": ", 1)[1] if ": " in text else text
