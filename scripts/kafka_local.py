#!/usr/bin/env python3
"""A single-node KRaft Apache Kafka for tests, CI and the demo, built from Maven Central's artifacts.

There is no Docker engine on our machines, so the broker is ``org.apache.kafka:kafka_2.13`` and its runtime
dependencies, resolved by the machine's ``mvn`` into a cache folder and run by the machine's Java 17.
Standard library only: it runs before any virtualenv exists.

    python3 scripts/kafka_local.py start [--port 9092] [--data-dir .kafka/data] [--wipe]
    python3 scripts/kafka_local.py status
    python3 scripts/kafka_local.py stop
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from pathlib import Path

log = logging.getLogger("kafka_local")

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
DEFAULT_PORT = int(os.environ.get("KAFKA_LOCAL_PORT", "9092"))
DEFAULT_DATA_DIR = Path(os.environ.get("KAFKA_LOCAL_DATA_DIR", REPO_ROOT / ".kafka" / "data"))
DEFAULT_CACHE_DIR = Path(os.environ.get("KAFKA_LOCAL_CACHE_DIR", REPO_ROOT / ".cache" / "kafka"))

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fraud</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
"""

LOG4J = """log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File={log_file}
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.org.apache.kafka.clients=WARN
"""


def _paths(data_dir: Path) -> dict[str, Path]:
    home = data_dir.parent
    return {
        "home": home,
        "pid": home / "kafka.pid",
        "log": home / "kafka.log",
        "stdout": home / "kafka.out",
        "properties": home / "server.properties",
        "log4j": home / "log4j.properties",
    }


def resolve_jars(version: str = DEFAULT_VERSION, cache_dir: Path = DEFAULT_CACHE_DIR) -> Path:
    """Folder of the broker's runtime jars; resolved once with Maven, then reused."""
    target = cache_dir / version
    libs = target / "libs"
    marker = target / ".resolved"
    if marker.exists():
        return libs
    if not shutil.which("mvn"):
        raise RuntimeError("mvn is not on PATH: install Maven (Debian package maven)")
    target.mkdir(parents=True, exist_ok=True)
    (target / "pom.xml").write_text(POM.format(version=version))
    command = [
        "mvn", "-q", "-B", "-f", str(target / "pom.xml"), "dependency:copy-dependencies",
        "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
    ]  # fmt: skip
    log.info("resolving Apache Kafka %s from Maven Central", version)
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"mvn could not resolve kafka_2.13:{version}:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
        )
    marker.write_text(version)
    return libs


def _properties(port: int, controller_port: int, data_dir: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={data_dir}",
            "num.partitions=1",
            "default.replication.factor=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "message.max.bytes=10485760",
            "replica.fetch.max.bytes=10485760",
            "log.segment.bytes=67108864",
            "log.retention.check.interval.ms=60000",
            "",
        ]
    )


def _java(libs: Path, main: str, *args: str, log4j: Path) -> list[str]:
    java = os.environ.get("JAVA_HOME") and str(Path(os.environ["JAVA_HOME"]) / "bin" / "java") or "java"
    return [java, "-Xms128m", "-Xmx768m", "-XX:+UseG1GC", f"-Dlog4j.configuration=file:{log4j}",
            "-cp", f"{libs}/*", main, *args]  # fmt: skip


# --- a Kafka protocol probe: ApiVersions, then Metadata in a version the broker supports -------------------


def _request(sock: socket.socket, api_key: int, version: int, correlation_id: int, body: bytes) -> bytes:
    client_id = b"kafka-local"
    header = struct.pack(">hhih", api_key, version, correlation_id, len(client_id)) + client_id
    if (api_key == 3 and version >= 9) or (api_key == 18 and version >= 3):
        header += b"\x00"  # flexible request header: empty tagged fields
    payload = header + body
    sock.sendall(struct.pack(">i", len(payload)) + payload)
    size = struct.unpack(">i", _read(sock, 4))[0]
    response = _read(sock, size)
    if struct.unpack(">i", response[:4])[0] != correlation_id:
        raise ConnectionError("correlation id mismatch")
    return response[4:]


def _read(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def broker_count(host: str, port: int, timeout_s: float = 3.0) -> int:
    """Brokers listed in a Metadata response; raises when the broker does not answer."""
    with socket.create_connection((host, port), timeout=timeout_s) as sock:
        sock.settimeout(timeout_s)
        response = _request(sock, 18, 0, 1, b"")  # ApiVersions v0
        error, count = struct.unpack(">hi", response[:6])
        if error != 0:
            raise ConnectionError(f"ApiVersions error {error}")
        versions = {}
        for i in range(count):
            key, lo, hi = struct.unpack(">hhh", response[6 + 6 * i : 12 + 6 * i])
            versions[key] = (lo, hi)
        lo, hi = versions[3]
        version = next((v for v in (8, 7, 6, 5, 4, 1) if lo <= v <= hi), None)
        if version is None:
            raise ConnectionError(f"no non-flexible Metadata version in {lo}..{hi}")
        body = struct.pack(">i", 0)  # topics: empty array (no topics)
        if version >= 4:
            body += b"\x00"  # allow_auto_topic_creation = false
        if version >= 8:
            body += b"\x00\x00"  # include cluster / topic authorized operations = false
        response = _request(sock, 3, version, 2, body)
        offset = 4 if version >= 3 else 0  # throttle_time_ms
        return int(struct.unpack(">i", response[offset : offset + 4])[0])


def is_ready(host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> bool:
    try:
        return broker_count(host, port) >= 1
    except (OSError, ConnectionError, struct.error, KeyError):
        return False


def _running_pid(data_dir: Path) -> int | None:
    pid_file = _paths(data_dir)["pid"]
    try:
        pid = int(pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def start(
    port: int = DEFAULT_PORT,
    controller_port: int | None = None,
    data_dir: Path = DEFAULT_DATA_DIR,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    version: str = DEFAULT_VERSION,
    timeout_s: float = 120.0,
    wipe: bool = False,
) -> str:
    """Start the broker in the background and return its bootstrap address once it answers Metadata."""
    data_dir = Path(data_dir).resolve()
    controller_port = controller_port or port + 1
    paths = _paths(data_dir)
    if wipe:
        stop(data_dir)
        shutil.rmtree(data_dir, ignore_errors=True)
    if _running_pid(data_dir) and is_ready("127.0.0.1", port):
        return f"127.0.0.1:{port}"
    libs = resolve_jars(version, Path(cache_dir))
    paths["home"].mkdir(parents=True, exist_ok=True)
    paths["properties"].write_text(_properties(port, controller_port, data_dir))
    paths["log4j"].write_text(LOG4J.format(log_file=paths["log"]))
    if not (data_dir / "meta.properties").exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _cluster_id()
        fmt = _java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(paths["properties"]),
                    log4j=paths["log4j"])  # fmt: skip
        result = subprocess.run(fmt, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"formatting storage failed:\n{result.stdout}{result.stderr}")
    with paths["stdout"].open("ab") as out:
        process = subprocess.Popen(
            _java(libs, "kafka.Kafka", str(paths["properties"]), log4j=paths["log4j"]),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    paths["pid"].write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Kafka exited with {process.returncode}:\n{_tail(paths)}")
        if is_ready("127.0.0.1", port):
            return f"127.0.0.1:{port}"
        time.sleep(0.3)
    stop(data_dir)
    raise RuntimeError(f"Kafka did not answer on port {port} within {timeout_s:g} s:\n{_tail(paths)}")


def _cluster_id() -> str:
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _tail(paths: dict[str, Path], lines: int = 40) -> str:
    text = []
    for name in ("stdout", "log"):
        try:
            text.extend(paths[name].read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            pass
    return "\n".join(text)


def stop(data_dir: Path = DEFAULT_DATA_DIR, timeout_s: float = 30.0) -> bool:
    """Stop the broker (SIGTERM, then SIGKILL); True when one was running."""
    data_dir = Path(data_dir).resolve()
    pid = _running_pid(data_dir)
    pid_file = _paths(data_dir)["pid"]
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
            finished = os.waitpid(pid, os.WNOHANG)[0] == pid
        except ChildProcessError:
            finished = False
        except OSError:
            finished = True
        if finished:
            break
        time.sleep(0.2)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["start", "stop", "status"])
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--controller-port", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE_DIR)
    parser.add_argument("--kafka-version", default=DEFAULT_VERSION)
    parser.add_argument("--timeout-s", type=float, default=120.0)
    parser.add_argument("--wipe", action="store_true", help="delete the data folder before starting")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.command == "start":
        try:
            bootstrap = start(args.port, args.controller_port, args.data_dir, args.cache_dir, args.kafka_version,
                              args.timeout_s, args.wipe)  # fmt: skip
        except RuntimeError as exc:
            print(f"kafka_local: {exc}", file=sys.stderr)
            return 1
        print(f"kafka {args.kafka_version} ready on {bootstrap} (pid {_running_pid(args.data_dir.resolve())})")
        return 0
    if args.command == "stop":
        print("stopped" if stop(args.data_dir) else "not running")
        return 0
    ready = is_ready("127.0.0.1", args.port)
    pid = _running_pid(args.data_dir.resolve())
    print(f"pid {pid or '-'}; {'answering' if ready else 'not answering'} on 127.0.0.1:{args.port}")
    return 0 if ready else 1


if __name__ == "__main__":
    sys.exit(main())
