#!/usr/bin/env python3
"""A single-node KRaft Apache Kafka for tests, CI and the demo, built from Maven Central's artifacts.

There is no Docker engine on our machines, so the broker is ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, resolved by the machine's ``mvn`` into a cache folder and run by the machine's Java 17.
Standard library only: it runs with the system ``python3`` before any virtualenv exists.

    python3 scripts/kafka_local.py start [--port 9092] [--controller-port 9093] [--data-dir .kafka/data]
                                         [--cache-dir .cache/kafka] [--kafka-version 4.1.1] [--wipe]
                                         [--sasl-ssl-port 9094 --scram-user NAME:PASSWORD ...
                                          [--keystore broker.p12 --keystore-password PW]]
    python3 scripts/kafka_local.py certs --out .kafka/tls
    python3 scripts/kafka_local.py status [--port 9092] [--data-dir .kafka/data]
    python3 scripts/kafka_local.py stop [--data-dir .kafka/data]

Relative paths are relative to the repository root. Defaults come from KAFKA_LOCAL_PORT, KAFKA_LOCAL_DATA_DIR,
KAFKA_LOCAL_CACHE_DIR and KAFKA_VERSION; KAFKA_LOCAL_JAVA_OPTS adds JVM options. The pid file, the broker's
log (kafka.log), its console output (kafka.out) and its configuration live in the data folder's parent.

``--sasl-ssl-port`` adds a SASL_SSL listener (SCRAM-SHA-256, SCRAM-SHA-512 and PLAIN) beside the PLAINTEXT one,
which stays for the readiness probe and the broker itself. The SCRAM users are written when the data folder is
formatted (``--wipe`` to change them). Without ``--keystore`` a CA and a broker certificate for 127.0.0.1 and
localhost are generated (``certs``, with the ``openssl`` command) into ``tls/`` beside the data folder; clients
trust ``tls/ca.pem``.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple
from xml.sax.saxutils import escape

log = logging.getLogger("kafka_local")

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
DEFAULT_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
DEFAULT_PORT = int(os.environ.get("KAFKA_LOCAL_PORT", "9092"))
DEFAULT_DATA_DIR = Path(os.environ.get("KAFKA_LOCAL_DATA_DIR", ".kafka/data"))
DEFAULT_CACHE_DIR = Path(os.environ.get("KAFKA_LOCAL_CACHE_DIR", ".cache/kafka"))
DEFAULT_LOG4J_VERSION = "2.24.3"  # only used when Kafka itself brings no log4j-api
RESOLVED_MARKER = "resolved.json"  # written last: its presence means libs/ is complete

# Keep a handle on brokers started by this process so stop() can reap them (no zombies in a pytest session).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fraud</groupId><artifactId>kafka-runtime</artifactId><version>{version}</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version>
    </dependency>{extra}
  </dependencies>
</project>
"""
POM_DEPENDENCY = """
    <dependency><groupId>{group}</groupId><artifactId>{artifact}</artifactId><version>{version}</version></dependency>"""

LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <File name="file" fileName="{log_file}" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
  </Loggers>
</Configuration>
"""


class Layout(NamedTuple):
    """Where one broker keeps its files: everything but the data lives next to the data folder.

    A NamedTuple, not a dataclass: conftest loads this file with importlib without registering it in
    sys.modules, and dataclasses look their module up there.
    """

    data_dir: Path

    @property
    def home(self) -> Path:
        return self.data_dir.parent

    @property
    def pid(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def state(self) -> Path:
        return self.home / "kafka.state.json"

    @property
    def log(self) -> Path:
        return self.home / "kafka.log"

    @property
    def stdout(self) -> Path:
        return self.home / "kafka.out"

    @property
    def properties(self) -> Path:
        return self.home / "server.properties"

    @property
    def log4j2(self) -> Path:
        return self.home / "log4j2.xml"


class SaslSsl(NamedTuple):
    """A SASL_SSL listener: its port, the broker's PKCS#12 keystore, and the users (name -> password)."""

    port: int
    keystore: Path
    keystore_password: str
    users: dict[str, str]


class Certificates(NamedTuple):
    """What :func:`generate_certificates` made: the CA clients trust and the broker's keystore."""

    ca_file: Path
    keystore: Path
    keystore_password: str


class Broker(NamedTuple):
    """A running broker, as start() found or launched it."""

    bootstrap: str
    pid: int
    version: str
    already_running: bool


def _repo_path(path: Path | str) -> Path:
    """Relative paths mean the repository root, so commands behave the same from any cwd."""
    path = Path(path).expanduser()
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


# --- jars from Maven Central --------------------------------------------------------------------------------


@contextmanager
def _locked(lock_file: Path) -> Iterator[None]:
    """Serialise Maven runs on one cache folder (parallel test sessions share it)."""
    import fcntl

    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _copy_dependencies(target: Path, libs: Path, version: str, extra: list[tuple[str, str, str]]) -> None:
    pom = target / "pom.xml"
    deps = "".join(POM_DEPENDENCY.format(group=g, artifact=a, version=v) for g, a, v in extra)
    pom.write_text(POM.format(version=version, extra=deps))
    shutil.rmtree(libs, ignore_errors=True)
    command = [
        "mvn", "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise RuntimeError(f"mvn could not resolve org.apache.kafka:kafka_2.13:{version}:\n{output}")


def _jar_version(libs: Path, artifact: str) -> str | None:
    for jar in libs.glob(f"{artifact}-*.jar"):
        match = re.fullmatch(re.escape(artifact) + r"-(\d[\w.\-]*)\.jar", jar.name)
        if match:
            return match.group(1)
    return None


def resolve_jars(version: str = DEFAULT_VERSION, cache_dir: Path | str = DEFAULT_CACHE_DIR) -> Path:
    """Folder of the broker's runtime jars; resolved once with Maven, then reused from the cache.

    Kafka's pom declares log4j-api/log4j-core and slf4j-api but no SLF4J binding, so the broker would log
    nothing: a first pass finds which slf4j and log4j versions Kafka uses, a second adds the matching
    log4j2 binding (log4j-slf4j-impl for slf4j 1.7, log4j-slf4j2-impl for slf4j 2).
    """
    target = _repo_path(cache_dir) / version
    libs = target / "libs"
    marker = target / RESOLVED_MARKER
    if marker.exists():
        return libs
    if not shutil.which("mvn"):
        raise RuntimeError("mvn is not on PATH: install Maven (Debian package maven)")
    with _locked(target / ".lock"):
        if marker.exists():  # another process resolved it while we waited
            return libs
        started = time.monotonic()
        log.info("resolving org.apache.kafka:kafka_2.13:%s and its runtime dependencies with Maven", version)
        _copy_dependencies(target, libs, version, [])
        if _jar_version(libs, "kafka_2.13") != version:
            raise RuntimeError(f"mvn did not copy kafka_2.13-{version}.jar into {libs}")
        log4j = _jar_version(libs, "log4j-api") or DEFAULT_LOG4J_VERSION
        slf4j = _jar_version(libs, "slf4j-api") or "2"
        binding = "log4j-slf4j-impl" if slf4j.startswith("1.") else "log4j-slf4j2-impl"
        group = "org.apache.logging.log4j"
        extra = [(group, "log4j-api", log4j), (group, "log4j-core", log4j), (group, binding, log4j)]
        _copy_dependencies(target, libs, version, extra)
        marker.write_text(json.dumps({"kafka": version, "slf4j": slf4j, "log4j": log4j, "binding": binding}))
        log.info("resolved %d jars in %.1f s (slf4j %s, %s %s)", len(list(libs.glob("*.jar"))),
                 time.monotonic() - started, slf4j, binding, log4j)  # fmt: skip
    return libs


# --- TLS material ------------------------------------------------------------------------------------------


def _openssl(*args: str) -> None:
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is not on PATH: install it (Debian package openssl)")
    result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed:\n{result.stdout}{result.stderr}")


def generate_certificates(folder: Path | str, hosts: tuple[str, ...] = (HOST, "localhost"),
                          days: int = 30) -> Certificates:  # fmt: skip
    """A throwaway CA and a broker certificate it signed, for ``hosts`` (IP or DNS subject alternative names),
    packed with its key into a PKCS#12 keystore. For tests and local runs only: the keys are not protected."""
    folder = _repo_path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca_file = folder / "ca.key", folder / "ca.pem"
    key, csr, cert = folder / "broker.key", folder / "broker.csr", folder / "broker.pem"
    keystore, password = folder / "broker.p12", uuid.uuid4().hex
    names = ",".join(("IP:" if _is_ip(h) else "DNS:") + h for h in hosts)
    extensions = folder / "broker.ext"
    extensions.write_text(f"subjectAltName={names}\nextendedKeyUsage=serverAuth\n")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca_file),
             "-days", str(days), "-subj", "/CN=kafka-local test CA")  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={hosts[0]}")  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca_file), "-CAkey", str(ca_key), "-CAcreateserial",
             "-out", str(cert), "-days", str(days), "-extfile", str(extensions))  # fmt: skip
    _openssl("pkcs12", "-export", "-in", str(cert), "-inkey", str(key), "-name", "broker",
             "-out", str(keystore), "-passout", f"pass:{password}")  # fmt: skip
    (folder / "keystore.password").write_text(password + "\n")
    return Certificates(ca_file, keystore, password)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _scram_user(text: str) -> tuple[str, str]:
    """``NAME:PASSWORD`` from the command line; characters the format tool or the JAAS line would read as syntax
    are refused rather than escaped (these are test users)."""
    name, sep, password = text.partition(":")
    if not sep or not name or not password or re.search(r'[\s"\\,=\[\];]', name + password):
        raise argparse.ArgumentTypeError(f'expected NAME:PASSWORD without spaces or any of \\",=[];, got {text!r}')
    return name, password


def _sasl_ssl_properties(sasl: SaslSsl) -> list[str]:
    """The SASL_SSL listener's mechanisms: SCRAM (users in the cluster metadata) and PLAIN (users listed here)."""
    plain_users = " ".join(f'user_{name}="{pw}"' for name, pw in sorted(sasl.users.items()))
    prefix = "listener.name.sasl_ssl"
    return [
        "sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512,PLAIN",
        f"{prefix}.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{prefix}.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;",
        f"{prefix}.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required "
        f"{plain_users};",
        f"{prefix}.ssl.keystore.type=PKCS12",
        f"{prefix}.ssl.keystore.location={sasl.keystore}",
        f"{prefix}.ssl.keystore.password={sasl.keystore_password}",
    ]


# --- configuration and the JVM ------------------------------------------------------------------------------


def _properties(port: int, controller_port: int, data_dir: Path, sasl: SaslSsl | None = None) -> str:
    """A combined broker+controller with a static one-voter quorum and single-replica internal topics."""
    listeners, advertised = (
        f"PLAINTEXT://{HOST}:{port},CONTROLLER://{HOST}:{controller_port}",
        f"PLAINTEXT://{HOST}:{port}",
    )
    protocols = "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"
    if sasl is not None:
        listeners += f",SASL_SSL://{HOST}:{sasl.port}"
        advertised += f",SASL_SSL://{HOST}:{sasl.port}"
        protocols += ",SASL_SSL:SASL_SSL"
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{HOST}:{controller_port}",
            f"listeners={listeners}",
            f"advertised.listeners={advertised}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            f"listener.security.protocol.map={protocols}",
            *(_sasl_ssl_properties(sasl) if sasl is not None else []),
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "auto.create.topics.enable=true",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",  # 50 by default: the first consumer group would wait for them
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "message.max.bytes=2097152",  # 2 MiB: a 900 kB record must be accepted
            "replica.fetch.max.bytes=2097152",
            "",
        ]
    )


def _java(libs: Path, log4j2: Path, main: str, *args: str, heap: str = "-Xmx512m", tool: bool = False) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    options = [heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
               f"-Dlog4j2.configurationFile={log4j2}"]  # fmt: skip
    if tool:
        options.append("-XX:TieredStopAtLevel=1")  # a short-lived tool starts faster with C1 only
    else:
        options += ["-Xms128m", "-XX:+ExitOnOutOfMemoryError"]
    options += shlex.split(os.environ.get("KAFKA_LOCAL_JAVA_OPTS", ""))
    return [java, *options, "-cp", f"{libs}/*", main, *args]


def _cluster_id() -> str:
    """A Kafka Uuid string; never starting with '-', which the format tool would read as an option."""
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _format_storage(libs: Path, layout: Layout, scram_users: dict[str, str] | None = None) -> None:
    """KRaft refuses to start on an unformatted log dir; a static voter set needs no --standalone. SCRAM
    credentials (both hash sizes) go into the first metadata records, so they exist before the broker listens."""
    cluster_id = _cluster_id()
    log.info("formatting %s (cluster id %s)", layout.data_dir, cluster_id)
    scram = []
    for name, password in sorted((scram_users or {}).items()):
        for mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
            scram += ["--add-scram", f"{mechanism}=[name={name},password={password}]"]
    command = _java(libs, layout.log4j2, "kafka.tools.StorageTool", "format", "-t", cluster_id,
                    "-c", str(layout.properties), *scram, heap="-Xmx256m", tool=True)  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise RuntimeError(f"formatting {layout.data_dir} failed:\n{result.stdout}{result.stderr}")


# --- a Kafka protocol probe: ApiVersions, then Metadata in a version the broker supports --------------------


def _uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_uvarint(data: bytes, offset: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset
        shift += 7


def _skip_tagged_fields(data: bytes, offset: int) -> int:
    count, offset = _read_uvarint(data, offset)
    for _ in range(count):
        _tag, offset = _read_uvarint(data, offset)
        size, offset = _read_uvarint(data, offset)
        offset += size
    return offset


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("connection closed by the broker")
        chunks += chunk
    return bytes(chunks)


def _request(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes,
             flexible: bool) -> bytes:  # fmt: skip
    """Send one request (header v1, or v2 when flexible) and return the response body after its header."""
    client_id = b"kafka-local"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    if flexible:
        header += b"\x00"  # empty tagged fields
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _recv_exact(sock, 4))[0]
    response = _recv_exact(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation_id:
        raise ConnectionError("correlation id mismatch")
    # ApiVersions responses always use header v0, whatever their version (KIP-511).
    return response[_skip_tagged_fields(response, 4) :] if flexible and api_key != 18 else response[4:]


def _metadata_request(version: int) -> bytes:
    """Metadata request for no topics; v4..v8 are non-flexible, v9+ flexible (compact arrays, tags)."""
    if version >= 9:
        body = _uvarint(1) + b"\x00"  # topics: empty compact array; allow_auto_topic_creation=false
        if version <= 10:
            body += b"\x00"  # include_cluster_authorized_operations
        return body + b"\x00" + b"\x00"  # include_topic_authorized_operations; tagged fields
    body = struct.pack(">i", 0) + b"\x00"  # topics: empty array; allow_auto_topic_creation=false
    if version >= 8:
        body += b"\x00\x00"  # include cluster / topic authorized operations
    return body


def broker_count(host: str, port: int, timeout_s: float = 3.0) -> int:
    """Brokers listed in a Metadata response; raises when the broker does not answer the protocol."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        response = _request(sock, 18, 0, 1, b"", flexible=False)  # ApiVersions v0: every broker has it
        error, count = struct.unpack(">hi", response[:6])
        if error != 0:
            raise ConnectionError(f"ApiVersions error code {error}")
        ranges = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", response[6 + 6 * i : 12 + 6 * i])
            ranges[key] = (lo, hi)
        if 3 not in ranges:
            raise ConnectionError("the broker does not offer the Metadata API")
        lo, hi = ranges[3]
        # Kafka 4.0 dropped Metadata v0..v3 (KIP-896); v13 is the newest layout this probe knows.
        candidates = [v for v in (8, 7, 6, 5, 4, 13, 12, 11, 10, 9) if lo <= v <= hi]
        if not candidates:
            raise ConnectionError(f"no Metadata version this probe speaks in the broker's range {lo}..{hi}")
        version = candidates[0]
        response = _request(sock, 3, version, 2, _metadata_request(version), flexible=version >= 9)
        if version >= 9:
            brokers, _ = _read_uvarint(response, 4)  # after throttle_time_ms; compact array length is N+1
            return max(brokers - 1, 0)
        return int(struct.unpack(">i", response[4:8])[0])  # after throttle_time_ms


def is_ready(host: str = HOST, port: int = DEFAULT_PORT, timeout_s: float = 3.0) -> bool:
    """True when a broker answers Metadata on host:port and lists at least one broker."""
    try:
        return broker_count(host, port, timeout_s) >= 1
    except (OSError, ConnectionError, struct.error, IndexError):
        return False


# --- processes ----------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    """Whether pid is a live Kafka broker (not a zombie, not a recycled pid of some other program)."""
    child = _CHILDREN.get(pid)
    if child is not None:  # ours: trust poll(), the cmdline is still python's until the fork has exec'd java
        if child.poll() is None:
            return True
        del _CHILDREN[pid]
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our exited child
    except ChildProcessError:
        pass
    proc = Path("/proc") / str(pid)
    if Path("/proc/self").exists():
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state != "Z" and b"kafka.Kafka" in cmdline
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    return True


def _running_pid(layout: Layout) -> int | None:
    try:
        pid = int(layout.pid.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _read_state(layout: Layout) -> dict[str, object]:
    try:
        state = json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _foreign_owner(layout: Layout) -> str | None:
    """The other data dir whose broker owns this folder's pid file (data dirs sharing a parent collide)."""
    owner = _read_state(layout).get("data_dir")
    return owner if isinstance(owner, str) and owner != str(layout.data_dir) else None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the JVM: TIME_WAIT is no conflict
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _tail(path: Path, since: int = 0, lines: int = 40) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(since)
            text = handle.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_ready(port: int, pid: int, deadline: float) -> bool:
    while time.monotonic() < deadline:
        if not _alive(pid):
            return False
        if is_ready(HOST, port):
            return True
        time.sleep(0.25)
    return False


def launch(
    port: int = DEFAULT_PORT,
    controller_port: int | None = None,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    cache_dir: Path | str = DEFAULT_CACHE_DIR,
    version: str = DEFAULT_VERSION,
    timeout_s: float = 120.0,
    wipe: bool = False,
    sasl_ssl_port: int | None = None,
    scram_users: dict[str, str] | None = None,
    keystore: Path | str | None = None,
    keystore_password: str | None = None,
) -> Broker:
    """Start a broker in the background (or find data_dir's broker running); wait until it answers.

    With ``sasl_ssl_port``, also a SASL_SSL listener for ``scram_users`` (name -> password) presenting
    ``keystore`` (PKCS#12), or a certificate generated into ``tls/`` beside the data folder when none is given."""
    layout = Layout(_repo_path(data_dir))
    controller_port = controller_port or port + 1
    for name, password in (scram_users or {}).items():
        _scram_user(f"{name}:{password}")
    deadline = time.monotonic() + timeout_s
    owner = _foreign_owner(layout)
    if owner is not None and _running_pid(layout) is not None:
        raise RuntimeError(f"{layout.pid} belongs to the running broker of {owner}: "
                           "give each data dir its own parent folder")  # fmt: skip
    if wipe:
        stop(layout.data_dir)
        shutil.rmtree(layout.data_dir, ignore_errors=True)
    pid = _running_pid(layout)
    if pid is not None:
        state = _read_state(layout)
        running_port = state.get("port")
        if running_port != port:
            raise RuntimeError(f"the broker of {layout.data_dir} (pid {pid}) listens on port {running_port}, "
                               f"not {port}: stop it first")  # fmt: skip
        if sasl_ssl_port and state.get("sasl_ssl_port") != sasl_ssl_port:
            raise RuntimeError(f"the broker of {layout.data_dir} (pid {pid}) has no SASL_SSL listener on port "
                               f"{sasl_ssl_port}: stop it first")  # fmt: skip
        if not _wait_ready(port, pid, deadline):
            raise RuntimeError(f"the broker of {layout.data_dir} (pid {pid}) does not answer on port {port}")
        return Broker(f"{HOST}:{port}", pid, str(state.get("version", "?")), already_running=True)
    for wanted in (port, controller_port, *([sasl_ssl_port] if sasl_ssl_port else [])):
        if not _port_free(wanted):
            raise RuntimeError(f"port {wanted} on {HOST} is taken by another process")

    libs = resolve_jars(version, cache_dir)
    layout.home.mkdir(parents=True, exist_ok=True)
    sasl = None
    if sasl_ssl_port:
        if keystore is None:
            generated = generate_certificates(layout.home / "tls")
            keystore, keystore_password = generated.keystore, generated.keystore_password
            log.info("SASL_SSL listener: clients trust the CA %s", generated.ca_file)
        if keystore_password is None:
            raise RuntimeError("a keystore needs its password (--keystore-password)")
        sasl = SaslSsl(sasl_ssl_port, _repo_path(keystore), keystore_password, dict(scram_users or {}))
    layout.properties.write_text(_properties(port, controller_port, layout.data_dir, sasl))
    layout.log4j2.write_text(LOG4J2_XML.format(log_file=escape(str(layout.log), {'"': "&quot;"})))
    if not (layout.data_dir / "meta.properties").exists():
        layout.data_dir.mkdir(parents=True, exist_ok=True)
        _format_storage(libs, layout, sasl.users if sasl is not None else None)

    log_offset = layout.log.stat().st_size if layout.log.exists() else 0
    with layout.stdout.open("wb") as out:
        process = subprocess.Popen(
            _java(libs, layout.log4j2, "kafka.Kafka", str(layout.properties)),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # detached: survives this script and the caller's Ctrl-C
        )
    _CHILDREN[process.pid] = process
    layout.pid.write_text(f"{process.pid}\n")
    state = {"pid": process.pid, "port": port, "controller_port": controller_port, "version": version,
             "libs": str(libs), "data_dir": str(layout.data_dir), "sasl_ssl_port": sasl_ssl_port}  # fmt: skip
    layout.state.write_text(json.dumps(state))
    log.info("started kafka %s (pid %d), waiting for port %d", version, process.pid, port)
    if _wait_ready(port, process.pid, deadline):
        return Broker(f"{HOST}:{port}", process.pid, version, already_running=False)
    exited = process.poll()
    stop(layout.data_dir)
    reason = f"exited with code {exited}" if exited is not None else f"did not answer within {timeout_s:g} s"
    raise RuntimeError(f"Kafka {version} on port {port} {reason}; the end of its logs:\n"
                       f"{_tail(layout.stdout)}\n{_tail(layout.log, log_offset)}")  # fmt: skip


def start(
    port: int = DEFAULT_PORT,
    controller_port: int | None = None,
    data_dir: Path | str = DEFAULT_DATA_DIR,
    cache_dir: Path | str = DEFAULT_CACHE_DIR,
    version: str = DEFAULT_VERSION,
    timeout_s: float = 120.0,
    wipe: bool = False,
    sasl_ssl_port: int | None = None,
    scram_users: dict[str, str] | None = None,
    keystore: Path | str | None = None,
    keystore_password: str | None = None,
) -> str:
    """Start (or reuse) the broker of data_dir and return its (PLAINTEXT) bootstrap address, for fixtures and
    scripts; the SASL_SSL listener, when asked for, is ``127.0.0.1:<sasl_ssl_port>``."""
    return launch(port, controller_port, data_dir, cache_dir, version, timeout_s, wipe, sasl_ssl_port, scram_users,
                  keystore, keystore_password).bootstrap  # fmt: skip


def stop(data_dir: Path | str = DEFAULT_DATA_DIR, timeout_s: float = 30.0) -> bool:
    """Stop the broker of data_dir: SIGTERM for a clean shutdown, SIGKILL after timeout_s; True if one ran."""
    layout = Layout(_repo_path(data_dir))
    pid = _running_pid(layout)
    if pid is None:
        layout.pid.unlink(missing_ok=True)
        return False
    owner = _foreign_owner(layout)
    if owner is not None:
        log.warning("not stopping pid %d: it is the broker of %s, not of %s", pid, owner, layout.data_dir)
        return False
    log.info("stopping kafka (pid %d)", pid)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        log.warning("kafka (pid %d) ignored SIGTERM for %g s: killing it", pid, timeout_s)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
    _CHILDREN.pop(pid, None)
    layout.pid.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("command", choices=["start", "stop", "status", "certs"])
    parser.add_argument("--port", type=int, default=None, help=f"broker port (default {DEFAULT_PORT})")
    parser.add_argument("--controller-port", type=int, default=None, help="controller port (default port+1)")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--kafka-version", default=DEFAULT_VERSION)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--wipe", action="store_true", help="delete the data folder before starting")
    parser.add_argument("--sasl-ssl-port", type=int, default=None, help="also listen with SASL_SSL on this port")
    parser.add_argument("--scram-user", type=_scram_user, action="append", default=[], metavar="NAME:PASSWORD",
                        help="a SCRAM (and PLAIN) user of the SASL_SSL listener; repeat for more")  # fmt: skip
    parser.add_argument("--keystore", type=Path, default=None, help="the broker's PKCS#12 keystore (default: "
                        "a CA and certificate generated into tls/ beside the data folder)")  # fmt: skip
    parser.add_argument("--keystore-password", default=None)
    parser.add_argument("--out", type=Path, default=None, help="certs: where to write ca.pem and broker.p12")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="kafka_local: %(message)s")
    layout = Layout(_repo_path(args.data_dir))

    if args.command == "start":
        port = args.port or DEFAULT_PORT
        try:
            broker = launch(port, args.controller_port, layout.data_dir, args.cache_dir, args.kafka_version,
                            args.timeout_s, args.wipe, args.sasl_ssl_port, dict(args.scram_user), args.keystore,
                            args.keystore_password)  # fmt: skip
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"kafka_local: {exc}", file=sys.stderr)
            return 1
        if broker.already_running:
            print(f"kafka {broker.version} already running on {broker.bootstrap} (pid {broker.pid})")
        else:
            print(f"kafka {broker.version} ready on {broker.bootstrap} (pid {broker.pid})")
        return 0

    if args.command == "certs":
        try:
            made = generate_certificates(args.out or layout.home / "tls")
        except RuntimeError as exc:
            print(f"kafka_local: {exc}", file=sys.stderr)
            return 1
        print(f"CA {made.ca_file}; keystore {made.keystore} (password in {made.keystore.parent}/keystore.password)")
        return 0

    if args.command == "stop":
        print("stopped" if stop(layout.data_dir) else "not running")
        return 0

    recorded = _read_state(layout).get("port")
    port = args.port or (recorded if isinstance(recorded, int) else DEFAULT_PORT)
    pid = _running_pid(layout)
    ready = is_ready(HOST, port)
    process = f"pid {pid}" if pid else "no process for this data dir"
    print(f"kafka {'answering' if ready else 'not answering'} on {HOST}:{port} ({process})")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
