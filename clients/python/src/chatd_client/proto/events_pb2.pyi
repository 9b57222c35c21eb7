from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
EVENT_TYPE_LEGAL_HOLD_PLACED: EventType
EVENT_TYPE_LEGAL_HOLD_RELEASED: EventType
EVENT_TYPE_MESSAGE_CREATED: EventType
EVENT_TYPE_MESSAGE_DELETED: EventType
EVENT_TYPE_MESSAGE_EDITED: EventType
EVENT_TYPE_PRIVACY_ERASURE_COMPLETED: EventType
EVENT_TYPE_PRIVACY_ERASURE_REQUESTED: EventType
EVENT_TYPE_PRIVACY_EXPORT_COMPLETED: EventType
EVENT_TYPE_PRIVACY_EXPORT_REQUESTED: EventType
EVENT_TYPE_RETENTION_RUN_COMPLETED: EventType
EVENT_TYPE_THREAD_CREATED: EventType
EVENT_TYPE_THREAD_DELETED: EventType
EVENT_TYPE_THREAD_UPDATED: EventType
EVENT_TYPE_UNSPECIFIED: EventType

class OutboxEvent(_message.Message):
    __slots__ = ["cursor", "erased", "id", "learner_id", "occurred_at_us", "payload_json", "seq", "tenant_id", "thread_id", "type"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    ERASED_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_US_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_JSON_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    erased: bool
    id: int
    learner_id: str
    occurred_at_us: int
    payload_json: str
    seq: int
    tenant_id: str
    thread_id: str
    type: EventType
    def __init__(self, id: _Optional[int] = ..., tenant_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., learner_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., seq: _Optional[int] = ..., occurred_at_us: _Optional[int] = ..., payload_json: _Optional[str] = ..., erased: bool = ..., cursor: _Optional[str] = ...) -> None: ...

class SubscribeEventsRequest(_message.Message):
    __slots__ = ["cursor", "types"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    TYPES_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    types: _containers.RepeatedScalarFieldContainer[EventType]
    def __init__(self, cursor: _Optional[str] = ..., types: _Optional[_Iterable[_Union[EventType, str]]] = ...) -> None: ...

class SubscribeEventsResponse(_message.Message):
    __slots__ = ["event"]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: OutboxEvent
    def __init__(self, event: _Optional[_Union[OutboxEvent, _Mapping]] = ...) -> None: ...

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
