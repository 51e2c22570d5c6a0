from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PredictRequest(_message.Message):
    __slots__ = ("transaction_json",)
    TRANSACTION_JSON_FIELD_NUMBER: _ClassVar[int]
    transaction_json: bytes
    def __init__(self, transaction_json: _Optional[bytes] = ...) -> None: ...

class Prediction(_message.Message):
    __slots__ = ("tx_id", "customer_id", "terminal_id", "timestamp", "fraud_probability", "is_fraud", "threshold", "model_version", "feature_set", "reasons", "features", "latency_ms", "scored_at", "decision", "rules", "shadow_rules", "rule_set_version", "lists_version")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TX_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    FRAUD_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    IS_FRAUD_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    FEATURE_SET_FIELD_NUMBER: _ClassVar[int]
    REASONS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    SCORED_AT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    RULES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_RULES_FIELD_NUMBER: _ClassVar[int]
    RULE_SET_VERSION_FIELD_NUMBER: _ClassVar[int]
    LISTS_VERSION_FIELD_NUMBER: _ClassVar[int]
    tx_id: str
    customer_id: str
    terminal_id: str
    timestamp: str
    fraud_probability: float
    is_fraud: bool
    threshold: float
    model_version: str
    feature_set: str
    reasons: _containers.RepeatedScalarFieldContainer[str]
    features: _containers.ScalarMap[str, float]
    latency_ms: float
    scored_at: str
    decision: str
    rules: _containers.RepeatedScalarFieldContainer[str]
    shadow_rules: _containers.RepeatedScalarFieldContainer[str]
    rule_set_version: int
    lists_version: int
    def __init__(self, tx_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., terminal_id: _Optional[str] = ..., timestamp: _Optional[str] = ..., fraud_probability: _Optional[float] = ..., is_fraud: _Optional[bool] = ..., threshold: _Optional[float] = ..., model_version: _Optional[str] = ..., feature_set: _Optional[str] = ..., reasons: _Optional[_Iterable[str]] = ..., features: _Optional[_Mapping[str, float]] = ..., latency_ms: _Optional[float] = ..., scored_at: _Optional[str] = ..., decision: _Optional[str] = ..., rules: _Optional[_Iterable[str]] = ..., shadow_rules: _Optional[_Iterable[str]] = ..., rule_set_version: _Optional[int] = ..., lists_version: _Optional[int] = ...) -> None: ...

class Error(_message.Message):
    __slots__ = ("code", "reason", "status")
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    code: str
    reason: str
    status: int
    def __init__(self, code: _Optional[str] = ..., reason: _Optional[str] = ..., status: _Optional[int] = ...) -> None: ...

class PredictReply(_message.Message):
    __slots__ = ("prediction", "error")
    PREDICTION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    prediction: Prediction
    error: Error
    def __init__(self, prediction: _Optional[_Union[Prediction, _Mapping]] = ..., error: _Optional[_Union[Error, _Mapping]] = ...) -> None: ...

class FeaturesRequest(_message.Message):
    __slots__ = ("customer_id", "terminal_id")
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TERMINAL_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    terminal_id: str
    def __init__(self, customer_id: _Optional[str] = ..., terminal_id: _Optional[str] = ...) -> None: ...

class Features(_message.Message):
    __slots__ = ("entity", "id", "event_time", "features")
    class FeaturesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    entity: str
    id: str
    event_time: str
    features: _containers.ScalarMap[str, float]
    def __init__(self, entity: _Optional[str] = ..., id: _Optional[str] = ..., event_time: _Optional[str] = ..., features: _Optional[_Mapping[str, float]] = ...) -> None: ...

class ModelInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "version", "labels_learned", "threshold")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LABELS_LEARNED_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    labels_learned: int
    threshold: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., labels_learned: _Optional[int] = ..., threshold: _Optional[float] = ...) -> None: ...
