from . import messages_pb2 as _messages_pb2
from . import threads_pb2 as _threads_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Heartbeat(_message.Message):
    __slots__ = ["server_time_us"]
    SERVER_TIME_US_FIELD_NUMBER: _ClassVar[int]
    server_time_us: int
    def __init__(self, server_time_us: _Optional[int] = ...) -> None: ...

class MessageEvent(_message.Message):
    __slots__ = ["kind", "message"]
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    KIND_CREATED: MessageEvent.Kind
    KIND_DELETED: MessageEvent.Kind
    KIND_EDITED: MessageEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    KIND_UNSPECIFIED: MessageEvent.Kind
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    kind: MessageEvent.Kind
    message: _messages_pb2.Message
    def __init__(self, kind: _Optional[_Union[MessageEvent.Kind, str]] = ..., message: _Optional[_Union[_messages_pb2.Message, _Mapping]] = ...) -> None: ...

class StreamHead(_message.Message):
    __slots__ = ["cursor", "head_seq"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    head_seq: int
    def __init__(self, head_seq: _Optional[int] = ..., cursor: _Optional[str] = ...) -> None: ...

class ThreadEvent(_message.Message):
    __slots__ = ["kind", "thread"]
    class Kind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = []
    KIND_CREATED: ThreadEvent.Kind
    KIND_DELETED: ThreadEvent.Kind
    KIND_FIELD_NUMBER: _ClassVar[int]
    KIND_UNSPECIFIED: ThreadEvent.Kind
    KIND_UPDATED: ThreadEvent.Kind
    THREAD_FIELD_NUMBER: _ClassVar[int]
    kind: ThreadEvent.Kind
    thread: _threads_pb2.Thread
    def __init__(self, kind: _Optional[_Union[ThreadEvent.Kind, str]] = ..., thread: _Optional[_Union[_threads_pb2.Thread, _Mapping]] = ...) -> None: ...

class WatchEvent(_message.Message):
    __slots__ = ["cursor", "head", "heartbeat", "message", "seq", "thread"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    HEAD_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    head: StreamHead
    heartbeat: Heartbeat
    message: MessageEvent
    seq: int
    thread: ThreadEvent
    def __init__(self, head: _Optional[_Union[StreamHead, _Mapping]] = ..., message: _Optional[_Union[MessageEvent, _Mapping]] = ..., thread: _Optional[_Union[ThreadEvent, _Mapping]] = ..., heartbeat: _Optional[_Union[Heartbeat, _Mapping]] = ..., cursor: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class WatchInboxRequest(_message.Message):
    __slots__ = ["cursor", "learner_id"]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    learner_id: str
    def __init__(self, cursor: _Optional[str] = ..., learner_id: _Optional[str] = ...) -> None: ...

class WatchInboxResponse(_message.Message):
    __slots__ = ["event"]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: WatchEvent
    def __init__(self, event: _Optional[_Union[WatchEvent, _Mapping]] = ...) -> None: ...

class WatchThreadRequest(_message.Message):
    __slots__ = ["after_seq", "thread_id"]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., after_seq: _Optional[int] = ...) -> None: ...

class WatchThreadResponse(_message.Message):
    __slots__ = ["event"]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: WatchEvent
    def __init__(self, event: _Optional[_Union[WatchEvent, _Mapping]] = ...) -> None: ...
