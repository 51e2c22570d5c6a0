"""Every setting of the worker, read from the environment in one place.

Other modules take a :class:`Settings` value instead of reading ``os.environ``, so tests can build one
with :func:`load` from any mapping.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOPICS_DIR = REPO_ROOT / "topics"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Health rules: a window whose error rate or p99 latency passes a limit degrades the worker."""

    degraded_error_rate: float = 0.01
    unhealthy_error_rate: float = 0.10
    degraded_p99_ms: float = 100.0
    unhealthy_p99_ms: float = 1000.0
    stale_after_s: float = 3600.0


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN")


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """How every Kafka client of the worker connects: TLS and SASL (built by :mod:`app.kafka.security`).
    Secrets stay out of ``repr`` (settings are logged)."""

    protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""  # empty: the system's trusted CAs
    ssl_certfile: str = ""  # a client certificate (PEM), for brokers that ask for one (mutual TLS)
    ssl_keyfile: str = ""
    ssl_key_password: str = field(default="", repr=False)
    ssl_check_hostname: bool = True

    @property
    def uses_ssl(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True, slots=True)
class Settings:
    bootstrap_servers: str = "127.0.0.1:9092"
    app_id: str = "fraud-detector"
    worker_id: str = field(default_factory=socket.gethostname)
    transactions_topic: str = "transactions"
    labels_topic: str = "labels"
    predictions_topic: str = "predictions"
    health_topic: str = "health"
    transactions_dlq_topic: str = "transactions-dlq"
    labels_dlq_topic: str = "labels-dlq"
    partitions: int = 4
    replication_factor: int = 1
    data_dir: str = str(REPO_ROOT / ".data")
    # Local state (issue 16, app/state/rocksdb_store.py): memory bounded by these, not by the data held.
    state_dir: str = ""  # empty: DATA_DIR/state
    # The defaults below are sized so that a 1x population (scripts/scale.py: ~500 customers a partition) fits the
    # parsed caches and a larger one spills into the packed tier and the store: memory set by these, not by the
    # population (BENCHMARKS.md "State at scale (issue 16), tenth part").
    # One LRU cache of data, index and filter blocks for every store and partition. 8, not 32: at 10x 32 MB filled and
    # was the largest part of the growth after the packed customers, for no decision-path CPU measured (a miss reads
    # the OS page cache, outside the RSS; BENCHMARKS.md "State at scale (issue 16), thirteenth part").
    state_block_cache_mb: int = 8
    state_write_buffer_mb: int = 8  # one memtable
    state_write_buffer_count: int = 2  # memtables per partition; times STATE_WRITE_BUFFER_MB: the worker's budget
    state_wal: bool = True  # a process crash loses no commit; off: it loses those since the last flush
    state_backend: str = "rocksdb"  # rocksdb (production) | memory (tests): where the customer windows live
    state_customer_cache: int = 1_000  # parsed customer states kept in memory, per decision partition (an LRU)
    state_customer_packed_mb: float = 16.0  # behind them, customers packed (~45 B an entry), MB per partition; 0: none
    state_terminal_cache: int = 5_000  # parsed terminal states kept in memory (an LRU; every worker holds all)
    state_terminal_packed_mb: float = 0.0  # behind them, terminals as stored (~1.2 KB at 38 entries), MB; 0: none
    state_sweep_customers: int = 5_000  # customers the idle-expiry sweep reads from the store per sweep interval
    # glibc's malloc (app/allocator.py; BENCHMARKS.md "State at scale (issue 16), twelfth part"): arenas its threads
    # share (0: glibc's default, 8 a core), and how often the free pages it keeps go back to the system (0: never).
    memory_arena_max: int = 2
    memory_trim_interval_s: float = 0.0  # off: a trim stalls the event loop's allocations while it runs
    # blocks of this many KiB or more mapped apart and returned when freed (0: glibc's threshold, which rises to the
    # largest block freed, up to 32 MiB, and then keeps every later large buffer in the heap)
    memory_mmap_threshold_kb: int = 256
    web_bind: str = "0.0.0.0"
    web_port: int = 6066
    web_advertised_url: str = ""  # load(): http://<WEB_BIND, or the hostname when it binds all>:<WEB_PORT>
    grpc_port: int = 6067  # 0: no gRPC server
    health_interval_s: float = 10.0
    # The event loop's health (app/monitoring/loop_lag.py): a probe's wake-up lateness every this many seconds (0:
    # off), and every step that holds the loop this long logged with its task and stack (0: off; a diagnosis tool).
    loop_lag_interval_s: float = 0.05
    loop_slow_step_ms: float = 0.0
    # The collector's first generation runs once this many more container objects were made than freed (0: Python's
    # 700, the default). 50,000: a batch in flight dies young instead of being promoted and full collections stay
    # rare at 1,000 tx/s, but the 10x worker of scripts/scale.py then held 742 MiB against 470 (BENCHMARKS.md
    # "State at scale (issue 16), fourteenth part"): memory is the default's side.
    gc_gen0_threshold: int = 0
    # Full collections (app/collector.py): Python's automatic ones off, one on the event loop between batches when
    # Python's allocator holds a quarter more blocks than after the last one, or every GC_FULL_INTERVAL_S (0:
    # Python's rule, which after the start's freeze fired every few seconds at 1,000 tx/s for 8-43 ms of CPU each,
    # freeing next to nothing: BENCHMARKS.md "The collector's full collections off the decision path"). 30, not 300:
    # the growth rule counts small blocks only, so garbage holding large buffers waits for the interval; at 10x
    # (scripts/scale.py) 300 s let the worker peak at 591 MiB (474 steady) against 513 (422) at 30 s and 426 (411)
    # with Python's rule (BENCHMARKS.md "State at scale (issue 16), twentieth part").
    gc_full_interval_s: float = 30.0
    health_window_s: float = 60.0
    # Drift without labels (app/monitoring/drift.py): one scored transaction in DRIFT_SAMPLE_EVERY is sampled (0:
    # off); windows of DRIFT_WINDOW_ROWS samples are compared with the first DRIFT_REFERENCE_ROWS after the start.
    drift_sample_every: int = 8
    drift_reference_rows: int = 5000
    drift_window_rows: int = 5000
    drift_skip_rows: int = 0  # samples left out before the reference (a new deployment's windows still filling)
    thresholds: Thresholds = field(default_factory=Thresholds)
    decision_threshold: float = 0.5
    max_message_bytes: int = 65536
    max_amount: float = 10_000_000.0
    lateness_s: float = 86400.0
    customer_ttl_s: float = 31 * 86400.0
    features_ttl_s: float = 35 * 86400.0
    features_sweep_interval_s: float = 300.0
    terminal_delay_days: float = 7.0
    terminal_ttl_s: float = 38 * 86400.0
    fetch_pause_ms: float = 5.0
    batch_max_records: int = 500
    session_timeout_ms: int = 10_000
    transaction_timeout_ms: int = 30_000
    terminal_checkpoint_interval_s: float = 60.0  # the terminal store to Kafka, for workers on an empty disk
    catchup_max_skew_s: float = 86400.0
    model_name: str = "logreg:opt=adagrad,lr=0.1,bins=8"  # app/learning/model.py DEFAULT_MODEL
    prior_fraud_rate: float = 0.01
    log_level: str = "info"
    producer_linger_ms: float = 2.0
    output_compression: str = "none"  # the worker's producers' codec (app/kafka/clients.py): none, gzip, lz4, zstd
    # true: the worker runs the trainer as its child process (`python -m app trainer`, app/learning/child.py); false:
    # it starts none (the deployment runs `python -m app trainer` on its own)
    trainer_enabled: bool = True
    trainer_web_port: int = 0  # the trainer process's /metrics, /ready, /status; 0: a free port (child), 6068 (alone)
    trainer_web_bind: str = ""  # empty: WEB_BIND (a worker's child binds 127.0.0.1 unless this is set)
    trainer_nice: int = 10  # the trainer lowers its CPU priority by this (0-19): decisions first on shared cores
    # Model versions (issue 9): one trainer per deployment publishes signed snapshots; every worker follows.
    models_topic: str = "models"
    model_events_topic: str = "model-events"
    model_signing_key: str = ""  # HMAC key of the snapshots; empty: a development key, with a warning at start
    model_publish_interval_s: float = 30.0
    model_publish_every_labels: int = 50_000
    early_label_window: int = 100_000  # recent predictions whose label is learned as soon as it comes
    trainer_standby_refresh_s: float = 5.0  # a standby trainer catches its label store up this often; 0: never
    label_horizon_s: float = 8 * 86400.0  # no label this long (event time) after scoring: learned as legitimate
    late_label_grace_s: float = 7 * 86400.0  # features kept after the horizon, for a late fraud label
    learning_audit_retention_s: float = 30 * 86400.0  # how long <APP_ID>-learning-audit keeps each learned pair
    challenger_model: str = ""  # a MODEL_NAME scored in shadow and learned beside the champion; empty: none
    auto_promote_margin: float = 0.02  # challenger AP over champion AP that promotes it; negative: never
    auto_promote_min_labels: int = 20_000  # labels between two comparisons of the lines
    auto_promote_min_frauds: int = 30  # frauds in the quality window a comparison needs to promote
    auto_promote_confidence: float = 0.95  # the AP difference's bootstrap interval must be > 0; 0: off
    auto_promote_cooldown_labels: int = -1  # labels after a promotion before the next comparison; negative: the window
    quality_window_labels: int = 5000
    # Analysts' rules (issue 18, app/rules/): compacted topics every worker folds into the current rule set
    rules_topic: str = "rules"
    rule_lists_topic: str = "rule-lists"
    review_cost: float = 0.0  # the expected-loss threshold: review when probability * amount passes it; 0: off
    kafka_security: KafkaSecurity = field(default_factory=KafkaSecurity)


def _get(env: Mapping[str, str], name: str, default: str) -> str:
    value = env.get(name)
    return default if value is None or value == "" else value


def _get_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = _get(env, name, str(default)).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def _kafka_security(env: Mapping[str, str]) -> KafkaSecurity:
    """The ``KAFKA_SECURITY_PROTOCOL``/``KAFKA_SASL_*``/``KAFKA_SSL_*`` block; a wrong combination is refused here,
    before any connection, with the setting's name."""
    d = KafkaSecurity()
    security = KafkaSecurity(
        protocol=_get(env, "KAFKA_SECURITY_PROTOCOL", d.protocol).upper(),
        sasl_mechanism=_get(env, "KAFKA_SASL_MECHANISM", d.sasl_mechanism).upper(),
        sasl_username=_get(env, "KAFKA_SASL_USERNAME", d.sasl_username),
        sasl_password=_get(env, "KAFKA_SASL_PASSWORD", d.sasl_password),
        ssl_cafile=_get(env, "KAFKA_SSL_CAFILE", d.ssl_cafile),
        ssl_certfile=_get(env, "KAFKA_SSL_CERTFILE", d.ssl_certfile),
        ssl_keyfile=_get(env, "KAFKA_SSL_KEYFILE", d.ssl_keyfile),
        ssl_key_password=_get(env, "KAFKA_SSL_KEY_PASSWORD", d.ssl_key_password),
        ssl_check_hostname=_get_bool(env, "KAFKA_SSL_CHECK_HOSTNAME", d.ssl_check_hostname),
    )
    if security.protocol not in SECURITY_PROTOCOLS:
        raise ValueError(f"KAFKA_SECURITY_PROTOCOL must be one of {', '.join(SECURITY_PROTOCOLS)}, "
                         f"not {security.protocol!r}")  # fmt: skip
    if security.uses_sasl:
        if security.sasl_mechanism not in SASL_MECHANISMS:
            raise ValueError(f"KAFKA_SASL_MECHANISM must be one of {', '.join(SASL_MECHANISMS)}, "
                             f"not {security.sasl_mechanism!r}")  # fmt: skip
        if not security.sasl_username or not security.sasl_password:
            raise ValueError(f"KAFKA_SECURITY_PROTOCOL={security.protocol} needs KAFKA_SASL_USERNAME and "
                             "KAFKA_SASL_PASSWORD")  # fmt: skip
    if security.ssl_keyfile and not security.ssl_certfile:
        raise ValueError("KAFKA_SSL_KEYFILE is set without KAFKA_SSL_CERTFILE")
    return security


OUTPUT_COMPRESSIONS = ("none", "gzip", "lz4", "zstd")


def _output_compression(env: Mapping[str, str], default: str) -> str:
    value = _get(env, "OUTPUT_COMPRESSION", default).strip().lower()
    if value not in OUTPUT_COMPRESSIONS:
        raise ValueError(f"OUTPUT_COMPRESSION must be one of {', '.join(OUTPUT_COMPRESSIONS)}, not {value!r}")
    return value


def default_advertised_url(web_bind: str, web_port: int) -> str:
    """Where other workers reach this one's web server (they forward requests for customers it owns).

    >>> default_advertised_url("127.0.0.1", 6066)
    'http://127.0.0.1:6066'
    """
    host = socket.gethostname() if web_bind in ("", "0.0.0.0", "::") else web_bind
    return f"http://{host}:{web_port}"


def _nice(value: str) -> int:
    """An increment of ``nice`` (0-19).

    >>> _nice("10")
    10
    """
    nice = int(value)
    if not 0 <= nice <= 19:
        raise ValueError(f"TRAINER_NICE must be between 0 and 19, not {value!r}")
    return nice


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from environment variables; unset variables keep their defaults."""
    env = os.environ if env is None else env
    d = Settings()
    t = Thresholds()
    web_bind = _get(env, "WEB_BIND", d.web_bind)
    web_port = int(_get(env, "WEB_PORT", str(d.web_port)))
    return Settings(
        bootstrap_servers=_get(env, "KAFKA_BOOTSTRAP_SERVERS", d.bootstrap_servers),
        app_id=_get(env, "APP_ID", d.app_id),
        worker_id=_get(env, "WORKER_ID", d.worker_id),
        transactions_topic=_get(env, "TRANSACTIONS_TOPIC", d.transactions_topic),
        labels_topic=_get(env, "LABELS_TOPIC", d.labels_topic),
        predictions_topic=_get(env, "PREDICTIONS_TOPIC", d.predictions_topic),
        health_topic=_get(env, "HEALTH_TOPIC", d.health_topic),
        transactions_dlq_topic=_get(env, "TRANSACTIONS_DLQ_TOPIC", d.transactions_dlq_topic),
        labels_dlq_topic=_get(env, "LABELS_DLQ_TOPIC", d.labels_dlq_topic),
        partitions=int(_get(env, "TOPIC_PARTITIONS", str(d.partitions))),
        replication_factor=int(_get(env, "TOPIC_REPLICATION_FACTOR", str(d.replication_factor))),
        data_dir=_get(env, "DATA_DIR", d.data_dir),
        state_dir=_get(env, "STATE_DIR", d.state_dir),
        state_block_cache_mb=int(_get(env, "STATE_BLOCK_CACHE_MB", str(d.state_block_cache_mb))),
        state_write_buffer_mb=int(_get(env, "STATE_WRITE_BUFFER_MB", str(d.state_write_buffer_mb))),
        state_write_buffer_count=int(_get(env, "STATE_WRITE_BUFFER_COUNT", str(d.state_write_buffer_count))),
        state_wal=_get_bool(env, "STATE_WAL", d.state_wal),
        state_backend=_get(env, "STATE_BACKEND", d.state_backend),
        state_customer_cache=int(_get(env, "STATE_CUSTOMER_CACHE", str(d.state_customer_cache))),
        state_customer_packed_mb=float(_get(env, "STATE_CUSTOMER_PACKED_MB", str(d.state_customer_packed_mb))),
        state_terminal_cache=int(_get(env, "STATE_TERMINAL_CACHE", str(d.state_terminal_cache))),
        state_terminal_packed_mb=float(_get(env, "STATE_TERMINAL_PACKED_MB", str(d.state_terminal_packed_mb))),
        state_sweep_customers=int(_get(env, "STATE_SWEEP_CUSTOMERS", str(d.state_sweep_customers))),
        memory_arena_max=int(_get(env, "MEMORY_ARENA_MAX", str(d.memory_arena_max))),
        memory_trim_interval_s=float(_get(env, "MEMORY_TRIM_INTERVAL_S", str(d.memory_trim_interval_s))),
        memory_mmap_threshold_kb=int(_get(env, "MEMORY_MMAP_THRESHOLD_KB", str(d.memory_mmap_threshold_kb))),
        web_bind=web_bind,
        web_port=web_port,
        web_advertised_url=_get(env, "WEB_ADVERTISED_URL", default_advertised_url(web_bind, web_port)),
        grpc_port=int(_get(env, "GRPC_PORT", str(d.grpc_port))),
        health_interval_s=float(_get(env, "HEALTH_INTERVAL_S", str(d.health_interval_s))),
        loop_lag_interval_s=float(_get(env, "LOOP_LAG_INTERVAL_S", str(d.loop_lag_interval_s))),
        loop_slow_step_ms=float(_get(env, "LOOP_SLOW_STEP_MS", str(d.loop_slow_step_ms))),
        gc_gen0_threshold=int(_get(env, "GC_GEN0_THRESHOLD", str(d.gc_gen0_threshold))),
        gc_full_interval_s=float(_get(env, "GC_FULL_INTERVAL_S", str(d.gc_full_interval_s))),
        health_window_s=float(_get(env, "HEALTH_WINDOW_S", str(d.health_window_s))),
        drift_sample_every=int(_get(env, "DRIFT_SAMPLE_EVERY", str(d.drift_sample_every))),
        drift_reference_rows=int(_get(env, "DRIFT_REFERENCE_ROWS", str(d.drift_reference_rows))),
        drift_window_rows=int(_get(env, "DRIFT_WINDOW_ROWS", str(d.drift_window_rows))),
        drift_skip_rows=int(_get(env, "DRIFT_SKIP_ROWS", str(d.drift_skip_rows))),
        thresholds=Thresholds(
            degraded_error_rate=float(_get(env, "DEGRADED_ERROR_RATE", str(t.degraded_error_rate))),
            unhealthy_error_rate=float(_get(env, "UNHEALTHY_ERROR_RATE", str(t.unhealthy_error_rate))),
            degraded_p99_ms=float(_get(env, "DEGRADED_P99_MS", str(t.degraded_p99_ms))),
            unhealthy_p99_ms=float(_get(env, "UNHEALTHY_P99_MS", str(t.unhealthy_p99_ms))),
            stale_after_s=float(_get(env, "STALE_AFTER_S", str(t.stale_after_s))),
        ),
        decision_threshold=float(_get(env, "DECISION_THRESHOLD", str(d.decision_threshold))),
        max_message_bytes=int(_get(env, "MAX_MESSAGE_BYTES", str(d.max_message_bytes))),
        max_amount=float(_get(env, "MAX_AMOUNT", str(d.max_amount))),
        lateness_s=float(_get(env, "LATENESS_S", str(d.lateness_s))),
        customer_ttl_s=float(_get(env, "CUSTOMER_TTL_S", str(d.customer_ttl_s))),
        features_ttl_s=float(_get(env, "FEATURES_TTL_S", str(d.features_ttl_s))),
        features_sweep_interval_s=float(_get(env, "FEATURES_SWEEP_INTERVAL_S", str(d.features_sweep_interval_s))),
        terminal_delay_days=float(_get(env, "TERMINAL_DELAY_DAYS", str(d.terminal_delay_days))),
        terminal_ttl_s=float(_get(env, "TERMINAL_TTL_S", str(d.terminal_ttl_s))),
        fetch_pause_ms=float(_get(env, "FETCH_PAUSE_MS", str(d.fetch_pause_ms))),
        batch_max_records=int(_get(env, "BATCH_MAX_RECORDS", str(d.batch_max_records))),
        session_timeout_ms=int(_get(env, "SESSION_TIMEOUT_MS", str(d.session_timeout_ms))),
        transaction_timeout_ms=int(_get(env, "TRANSACTION_TIMEOUT_MS", str(d.transaction_timeout_ms))),
        catchup_max_skew_s=float(_get(env, "CATCHUP_MAX_SKEW_S", str(d.catchup_max_skew_s))),
        terminal_checkpoint_interval_s=float(
            _get(env, "TERMINAL_CHECKPOINT_INTERVAL_S", str(d.terminal_checkpoint_interval_s))
        ),
        model_name=_get(env, "MODEL_NAME", d.model_name),
        trainer_enabled=_get_bool(env, "TRAINER_ENABLED", d.trainer_enabled),
        trainer_web_port=int(_get(env, "TRAINER_WEB_PORT", str(d.trainer_web_port))),
        trainer_web_bind=_get(env, "TRAINER_WEB_BIND", d.trainer_web_bind),
        trainer_nice=_nice(_get(env, "TRAINER_NICE", str(d.trainer_nice))),
        prior_fraud_rate=float(_get(env, "PRIOR_FRAUD_RATE", str(d.prior_fraud_rate))),
        log_level=_get(env, "LOG_LEVEL", d.log_level),
        producer_linger_ms=float(_get(env, "PRODUCER_LINGER_MS", str(d.producer_linger_ms))),
        output_compression=_output_compression(env, d.output_compression),
        models_topic=_get(env, "MODELS_TOPIC", d.models_topic),
        model_events_topic=_get(env, "MODEL_EVENTS_TOPIC", d.model_events_topic),
        model_signing_key=_get(env, "MODEL_SIGNING_KEY", d.model_signing_key),
        model_publish_interval_s=float(_get(env, "MODEL_PUBLISH_INTERVAL_S", str(d.model_publish_interval_s))),
        model_publish_every_labels=int(_get(env, "MODEL_PUBLISH_EVERY_LABELS", str(d.model_publish_every_labels))),
        early_label_window=int(_get(env, "EARLY_LABEL_WINDOW", str(d.early_label_window))),
        trainer_standby_refresh_s=float(_get(env, "TRAINER_STANDBY_REFRESH_S", str(d.trainer_standby_refresh_s))),
        label_horizon_s=float(_get(env, "LABEL_HORIZON_S", str(d.label_horizon_s))),
        late_label_grace_s=float(_get(env, "LATE_LABEL_GRACE_S", str(d.late_label_grace_s))),
        learning_audit_retention_s=float(_get(env, "LEARNING_AUDIT_RETENTION_S", str(d.learning_audit_retention_s))),
        challenger_model=_get(env, "CHALLENGER_MODEL", d.challenger_model),
        auto_promote_margin=float(_get(env, "AUTO_PROMOTE_MARGIN", str(d.auto_promote_margin))),
        auto_promote_min_labels=int(_get(env, "AUTO_PROMOTE_MIN_LABELS", str(d.auto_promote_min_labels))),
        auto_promote_min_frauds=int(_get(env, "AUTO_PROMOTE_MIN_FRAUDS", str(d.auto_promote_min_frauds))),
        auto_promote_confidence=float(_get(env, "AUTO_PROMOTE_CONFIDENCE", str(d.auto_promote_confidence))),
        auto_promote_cooldown_labels=int(
            _get(env, "AUTO_PROMOTE_COOLDOWN_LABELS", str(d.auto_promote_cooldown_labels))
        ),
        quality_window_labels=int(_get(env, "QUALITY_WINDOW_LABELS", str(d.quality_window_labels))),
        rules_topic=_get(env, "RULES_TOPIC", d.rules_topic),
        rule_lists_topic=_get(env, "RULE_LISTS_TOPIC", d.rule_lists_topic),
        review_cost=float(_get(env, "REVIEW_COST", str(d.review_cost))),
        kafka_security=_kafka_security(env),
    )


def state_directory(settings: Settings) -> Path:
    """Where the local stores live: ``STATE_DIR``, or ``DATA_DIR/state`` when it is unset.

    >>> state_directory(Settings(data_dir="/var/lib/fraud")), state_directory(Settings(state_dir="/ssd/state"))
    (PosixPath('/var/lib/fraud/state'), PosixPath('/ssd/state'))
    """
    return Path(settings.state_dir) if settings.state_dir else Path(settings.data_dir) / "state"


DEVELOPMENT_SIGNING_KEY = b"fraud-detector-development-key"


def signing_key(settings: Settings) -> bytes:
    """``MODEL_SIGNING_KEY`` as bytes; the development key when it is unset (the worker warns at start)."""
    return settings.model_signing_key.encode() if settings.model_signing_key else DEVELOPMENT_SIGNING_KEY
