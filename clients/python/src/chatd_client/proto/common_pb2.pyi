from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
ROLE_GUARDIAN: Role
ROLE_LEARNER: Role
ROLE_PRIVACY_OFFICER: Role
ROLE_SERVICE: Role
ROLE_TEACHER: Role
ROLE_TENANT_ADMIN: Role
ROLE_UNSPECIFIED: Role

class Actor(_message.Message):
    __slots__ = ["role", "user_id"]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    role: Role
    user_id: str
    def __init__(self, user_id: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class PageInfo(_message.Message):
    __slots__ = ["next_page_token"]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    next_page_token: str
    def __init__(self, next_page_token: _Optional[str] = ...) -> None: ...

class PageRequest(_message.Message):
    __slots__ = ["page_size", "page_token"]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
