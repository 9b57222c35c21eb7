from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DeleteMessageRequest(_message.Message):
    __slots__ = ["seq", "thread_id"]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class DeleteMessageResponse(_message.Message):
    __slots__ = ["message"]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class EditMessageRequest(_message.Message):
    __slots__ = ["body", "seq", "thread_id"]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    body: str
    seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., seq: _Optional[int] = ..., body: _Optional[str] = ...) -> None: ...

class EditMessageResponse(_message.Message):
    __slots__ = ["message"]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class GetMessageRequest(_message.Message):
    __slots__ = ["seq", "thread_id"]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class GetMessageResponse(_message.Message):
    __slots__ = ["message"]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class ListMessageEditsRequest(_message.Message):
    __slots__ = ["seq", "thread_id"]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ListMessageEditsResponse(_message.Message):
    __slots__ = ["edits"]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    edits: _containers.RepeatedCompositeFieldContainer[MessageEdit]
    def __init__(self, edits: _Optional[_Iterable[_Union[MessageEdit, _Mapping]]] = ...) -> None: ...

class ListMessagesRequest(_message.Message):
    __slots__ = ["after_seq", "before_seq", "page", "thread_id"]
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    BEFORE_SEQ_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    before_seq: int
    page: _common_pb2.PageRequest
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., before_seq: _Optional[int] = ..., after_seq: _Optional[int] = ...) -> None: ...

class ListMessagesResponse(_message.Message):
    __slots__ = ["messages", "page"]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    page: _common_pb2.PageInfo
    def __init__(self, messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class MarkReadRequest(_message.Message):
    __slots__ = ["thread_id", "up_to_seq"]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    UP_TO_SEQ_FIELD_NUMBER: _ClassVar[int]
    thread_id: str
    up_to_seq: int
    def __init__(self, thread_id: _Optional[str] = ..., up_to_seq: _Optional[int] = ...) -> None: ...

class MarkReadResponse(_message.Message):
    __slots__ = ["read_seq", "unread_count"]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    UNREAD_COUNT_FIELD_NUMBER: _ClassVar[int]
    read_seq: int
    unread_count: int
    def __init__(self, read_seq: _Optional[int] = ..., unread_count: _Optional[int] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ["author", "body", "created_at_us", "deleted", "edit_count", "edited_at_us", "id", "seq", "thread_id"]
    AUTHOR_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    EDITED_AT_US_FIELD_NUMBER: _ClassVar[int]
    EDIT_COUNT_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    author: _common_pb2.Actor
    body: str
    created_at_us: int
    deleted: Tombstone
    edit_count: int
    edited_at_us: int
    id: str
    seq: int
    thread_id: str
    def __init__(self, id: _Optional[str] = ..., thread_id: _Optional[str] = ..., seq: _Optional[int] = ..., author: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., body: _Optional[str] = ..., created_at_us: _Optional[int] = ..., edited_at_us: _Optional[int] = ..., edit_count: _Optional[int] = ..., deleted: _Optional[_Union[Tombstone, _Mapping]] = ...) -> None: ...

class MessageEdit(_message.Message):
    __slots__ = ["body", "edited_at_us", "edited_by", "revision"]
    BODY_FIELD_NUMBER: _ClassVar[int]
    EDITED_AT_US_FIELD_NUMBER: _ClassVar[int]
    EDITED_BY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    body: str
    edited_at_us: int
    edited_by: _common_pb2.Actor
    revision: int
    def __init__(self, revision: _Optional[int] = ..., body: _Optional[str] = ..., edited_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., edited_at_us: _Optional[int] = ...) -> None: ...

class SendMessageRequest(_message.Message):
    __slots__ = ["body", "idempotency_key", "thread_id"]
    BODY_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    body: str
    idempotency_key: str
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., body: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class SendMessageResponse(_message.Message):
    __slots__ = ["message"]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    message: Message
    def __init__(self, message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class Tombstone(_message.Message):
    __slots__ = ["deleted_at_us", "deleted_by"]
    DELETED_AT_US_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    deleted_at_us: int
    deleted_by: _common_pb2.Actor
    def __init__(self, deleted_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., deleted_at_us: _Optional[int] = ...) -> None: ...
