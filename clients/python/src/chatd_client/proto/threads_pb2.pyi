from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
THREAD_STATE_ACTIVE: ThreadState
THREAD_STATE_ARCHIVED: ThreadState
THREAD_STATE_UNSPECIFIED: ThreadState

class CreateThreadRequest(_message.Message):
    __slots__ = ["learner_id", "title"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    title: str
    def __init__(self, learner_id: _Optional[str] = ..., title: _Optional[str] = ...) -> None: ...

class CreateThreadResponse(_message.Message):
    __slots__ = ["thread"]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    thread: Thread
    def __init__(self, thread: _Optional[_Union[Thread, _Mapping]] = ...) -> None: ...

class DeleteThreadRequest(_message.Message):
    __slots__ = ["thread_id"]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ...) -> None: ...

class DeleteThreadResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetThreadRequest(_message.Message):
    __slots__ = ["thread_id"]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ...) -> None: ...

class GetThreadResponse(_message.Message):
    __slots__ = ["thread"]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    thread: Thread
    def __init__(self, thread: _Optional[_Union[Thread, _Mapping]] = ...) -> None: ...

class ListThreadsRequest(_message.Message):
    __slots__ = ["learner_id", "page", "state"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    page: _common_pb2.PageRequest
    state: ThreadState
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., learner_id: _Optional[str] = ..., state: _Optional[_Union[ThreadState, str]] = ...) -> None: ...

class ListThreadsResponse(_message.Message):
    __slots__ = ["page", "threads"]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageInfo
    threads: _containers.RepeatedCompositeFieldContainer[Thread]
    def __init__(self, threads: _Optional[_Iterable[_Union[Thread, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class Thread(_message.Message):
    __slots__ = ["created_at_us", "created_by", "event_seq", "id", "last_activity_at_us", "last_seq", "learner_id", "state", "title", "unread_count", "updated_at_us"]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    CREATED_BY_FIELD_NUMBER: _ClassVar[int]
    EVENT_SEQ_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    LAST_ACTIVITY_AT_US_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    created_at_us: int
    created_by: _common_pb2.Actor
    event_seq: int
    id: str
    last_activity_at_us: int
    last_seq: int
    learner_id: str
    state: ThreadState
    title: str
    unread_count: int
    updated_at_us: int
    def __init__(self, id: _Optional[str] = ..., learner_id: _Optional[str] = ..., title: _Optional[str] = ..., state: _Optional[_Union[ThreadState, str]] = ..., last_seq: _Optional[int] = ..., created_at_us: _Optional[int] = ..., last_activity_at_us: _Optional[int] = ..., created_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., unread_count: _Optional[int] = ..., updated_at_us: _Optional[int] = ..., event_seq: _Optional[int] = ...) -> None: ...

class UpdateThreadRequest(_message.Message):
    __slots__ = ["state", "thread_id", "title"]
    STATE_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    state: ThreadState
    thread_id: str
    title: str
    def __init__(self, thread_id: _Optional[str] = ..., title: _Optional[str] = ..., state: _Optional[_Union[ThreadState, str]] = ...) -> None: ...

class UpdateThreadResponse(_message.Message):
    __slots__ = ["thread"]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    thread: Thread
    def __init__(self, thread: _Optional[_Union[Thread, _Mapping]] = ...) -> None: ...

class ThreadState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
