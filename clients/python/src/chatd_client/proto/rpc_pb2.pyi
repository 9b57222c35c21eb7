from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
STATUS_CODE_ABORTED: StatusCode
STATUS_CODE_ALREADY_EXISTS: StatusCode
STATUS_CODE_CANCELLED: StatusCode
STATUS_CODE_DATA_LOSS: StatusCode
STATUS_CODE_DEADLINE_EXCEEDED: StatusCode
STATUS_CODE_FAILED_PRECONDITION: StatusCode
STATUS_CODE_INTERNAL: StatusCode
STATUS_CODE_INVALID_ARGUMENT: StatusCode
STATUS_CODE_NOT_FOUND: StatusCode
STATUS_CODE_OK: StatusCode
STATUS_CODE_OUT_OF_RANGE: StatusCode
STATUS_CODE_PERMISSION_DENIED: StatusCode
STATUS_CODE_RESOURCE_EXHAUSTED: StatusCode
STATUS_CODE_UNAUTHENTICATED: StatusCode
STATUS_CODE_UNAVAILABLE: StatusCode
STATUS_CODE_UNIMPLEMENTED: StatusCode
STATUS_CODE_UNKNOWN: StatusCode

class CallHeader(_message.Message):
    __slots__ = ["attempt", "authorization", "idempotency_key", "metadata", "method", "timeout_us", "trace"]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    AUTHORIZATION_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_US_FIELD_NUMBER: _ClassVar[int]
    TRACE_FIELD_NUMBER: _ClassVar[int]
    attempt: int
    authorization: str
    idempotency_key: bytes
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    method: str
    timeout_us: int
    trace: TraceContext
    def __init__(self, method: _Optional[str] = ..., timeout_us: _Optional[int] = ..., authorization: _Optional[str] = ..., idempotency_key: _Optional[bytes] = ..., attempt: _Optional[int] = ..., trace: _Optional[_Union[TraceContext, _Mapping]] = ..., metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class CallStatus(_message.Message):
    __slots__ = ["code", "details", "message", "not_processed", "trailing_metadata"]
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    NOT_PROCESSED_FIELD_NUMBER: _ClassVar[int]
    TRAILING_METADATA_FIELD_NUMBER: _ClassVar[int]
    code: StatusCode
    details: _containers.RepeatedCompositeFieldContainer[StatusDetail]
    message: str
    not_processed: bool
    trailing_metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    def __init__(self, code: _Optional[_Union[StatusCode, str]] = ..., message: _Optional[str] = ..., details: _Optional[_Iterable[_Union[StatusDetail, _Mapping]]] = ..., not_processed: bool = ..., trailing_metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class ErrorInfo(_message.Message):
    __slots__ = ["domain", "metadata", "reason"]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    domain: str
    metadata: _containers.RepeatedCompositeFieldContainer[MetadataEntry]
    reason: str
    def __init__(self, reason: _Optional[str] = ..., domain: _Optional[str] = ..., metadata: _Optional[_Iterable[_Union[MetadataEntry, _Mapping]]] = ...) -> None: ...

class FieldViolation(_message.Message):
    __slots__ = ["description", "field"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    description: str
    field: str
    def __init__(self, field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class MetadataEntry(_message.Message):
    __slots__ = ["key", "value"]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: bytes
    def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...

class PreconditionFailure(_message.Message):
    __slots__ = ["description", "subject", "type"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    description: str
    subject: str
    type: str
    def __init__(self, type: _Optional[str] = ..., subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class QuotaFailure(_message.Message):
    __slots__ = ["description", "subject"]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    description: str
    subject: str
    def __init__(self, subject: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class ResumeInfo(_message.Message):
    __slots__ = ["after_seq", "cursor"]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    cursor: str
    def __init__(self, after_seq: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class RetryInfo(_message.Message):
    __slots__ = ["retry_after_ms"]
    RETRY_AFTER_MS_FIELD_NUMBER: _ClassVar[int]
    retry_after_ms: int
    def __init__(self, retry_after_ms: _Optional[int] = ...) -> None: ...

class StatusDetail(_message.Message):
    __slots__ = ["error_info", "field_violation", "precondition_failure", "quota_failure", "resume_info", "retry_info"]
    ERROR_INFO_FIELD_NUMBER: _ClassVar[int]
    FIELD_VIOLATION_FIELD_NUMBER: _ClassVar[int]
    PRECONDITION_FAILURE_FIELD_NUMBER: _ClassVar[int]
    QUOTA_FAILURE_FIELD_NUMBER: _ClassVar[int]
    RESUME_INFO_FIELD_NUMBER: _ClassVar[int]
    RETRY_INFO_FIELD_NUMBER: _ClassVar[int]
    error_info: ErrorInfo
    field_violation: FieldViolation
    precondition_failure: PreconditionFailure
    quota_failure: QuotaFailure
    resume_info: ResumeInfo
    retry_info: RetryInfo
    def __init__(self, field_violation: _Optional[_Union[FieldViolation, _Mapping]] = ..., retry_info: _Optional[_Union[RetryInfo, _Mapping]] = ..., precondition_failure: _Optional[_Union[PreconditionFailure, _Mapping]] = ..., quota_failure: _Optional[_Union[QuotaFailure, _Mapping]] = ..., resume_info: _Optional[_Union[ResumeInfo, _Mapping]] = ..., error_info: _Optional[_Union[ErrorInfo, _Mapping]] = ...) -> None: ...

class TraceContext(_message.Message):
    __slots__ = ["flags", "span_id", "trace_id"]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    flags: int
    span_id: bytes
    trace_id: bytes
    def __init__(self, trace_id: _Optional[bytes] = ..., span_id: _Optional[bytes] = ..., flags: _Optional[int] = ...) -> None: ...

class StatusCode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
