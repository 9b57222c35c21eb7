from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor
METHOD_KIND_SERVER_STREAMING: MethodKind
METHOD_KIND_UNARY: MethodKind
METHOD_KIND_UNSPECIFIED: MethodKind
SERVING_STATUS_NOT_SERVING: ServingStatus
SERVING_STATUS_SERVICE_UNKNOWN: ServingStatus
SERVING_STATUS_SERVING: ServingStatus
SERVING_STATUS_UNKNOWN: ServingStatus

class HealthCheckRequest(_message.Message):
    __slots__ = ["service"]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    service: str
    def __init__(self, service: _Optional[str] = ...) -> None: ...

class HealthCheckResponse(_message.Message):
    __slots__ = ["status"]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    status: ServingStatus
    def __init__(self, status: _Optional[_Union[ServingStatus, str]] = ...) -> None: ...

class ListMethodsRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class ListMethodsResponse(_message.Message):
    __slots__ = ["methods", "protocol_version", "server_version"]
    METHODS_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedCompositeFieldContainer[MethodInfo]
    protocol_version: str
    server_version: str
    def __init__(self, methods: _Optional[_Iterable[_Union[MethodInfo, _Mapping]]] = ..., server_version: _Optional[str] = ..., protocol_version: _Optional[str] = ...) -> None: ...

class MethodInfo(_message.Message):
    __slots__ = ["idempotent", "kind", "name", "request_type", "response_type"]
    IDEMPOTENT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    idempotent: bool
    kind: MethodKind
    name: str
    request_type: str
    response_type: str
    def __init__(self, name: _Optional[str] = ..., kind: _Optional[_Union[MethodKind, str]] = ..., request_type: _Optional[str] = ..., response_type: _Optional[str] = ..., idempotent: bool = ...) -> None: ...

class ServingStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []

class MethodKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
