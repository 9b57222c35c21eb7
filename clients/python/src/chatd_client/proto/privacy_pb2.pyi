from . import common_pb2 as _common_pb2
from . import messages_pb2 as _messages_pb2
from . import threads_pb2 as _threads_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Iterable as _Iterable, Mapping as _Mapping, Optional as _Optional, Union as _Union

AUDIT_KIND_ERASURE: AuditKind
AUDIT_KIND_EXPORT: AuditKind
AUDIT_KIND_LEGAL_HOLD_PLACED: AuditKind
AUDIT_KIND_LEGAL_HOLD_RELEASED: AuditKind
AUDIT_KIND_RETENTION_POLICY_SET: AuditKind
AUDIT_KIND_RETENTION_RUN: AuditKind
AUDIT_KIND_UNSPECIFIED: AuditKind
DESCRIPTOR: _descriptor.FileDescriptor

class AuditChainProblem(_message.Message):
    __slots__ = ["audit_id", "description", "seq"]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    description: str
    seq: int
    def __init__(self, seq: _Optional[int] = ..., audit_id: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class AuditRecord(_message.Message):
    __slots__ = ["actor", "exported_records", "finished_at_us", "id", "kind", "learner_id", "outcome", "reason", "removed", "started_at_us"]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EXPORTED_RECORDS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_US_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_US_FIELD_NUMBER: _ClassVar[int]
    actor: _common_pb2.Actor
    exported_records: int
    finished_at_us: int
    id: str
    kind: AuditKind
    learner_id: str
    outcome: str
    reason: str
    removed: RemovalCounts
    started_at_us: int
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[_Union[AuditKind, str]] = ..., actor: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., learner_id: _Optional[str] = ..., started_at_us: _Optional[int] = ..., finished_at_us: _Optional[int] = ..., removed: _Optional[_Union[RemovalCounts, _Mapping]] = ..., exported_records: _Optional[int] = ..., outcome: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseLearnerDataRequest(_message.Message):
    __slots__ = ["learner_id", "reason"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    reason: str
    def __init__(self, learner_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class EraseLearnerDataResponse(_message.Message):
    __slots__ = ["receipt"]
    RECEIPT_FIELD_NUMBER: _ClassVar[int]
    receipt: ErasureReceipt
    def __init__(self, receipt: _Optional[_Union[ErasureReceipt, _Mapping]] = ...) -> None: ...

class ErasureReceipt(_message.Message):
    __slots__ = ["audit_id", "completed_at_us", "learner_id", "removed"]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_US_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    completed_at_us: int
    learner_id: str
    removed: RemovalCounts
    def __init__(self, audit_id: _Optional[str] = ..., learner_id: _Optional[str] = ..., removed: _Optional[_Union[RemovalCounts, _Mapping]] = ..., completed_at_us: _Optional[int] = ...) -> None: ...

class ExportLearnerDataRequest(_message.Message):
    __slots__ = ["learner_id", "reason", "resume_token"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    reason: str
    resume_token: str
    def __init__(self, learner_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ExportLearnerDataResponse(_message.Message):
    __slots__ = ["record"]
    RECORD_FIELD_NUMBER: _ClassVar[int]
    record: ExportRecord
    def __init__(self, record: _Optional[_Union[ExportRecord, _Mapping]] = ...) -> None: ...

class ExportRecord(_message.Message):
    __slots__ = ["audit", "edits", "message", "read_cursor", "resume_token", "summary", "thread"]
    AUDIT_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    READ_CURSOR_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    THREAD_FIELD_NUMBER: _ClassVar[int]
    audit: AuditRecord
    edits: MessageEditHistory
    message: _messages_pb2.Message
    read_cursor: ReadCursor
    resume_token: str
    summary: ExportSummary
    thread: _threads_pb2.Thread
    def __init__(self, thread: _Optional[_Union[_threads_pb2.Thread, _Mapping]] = ..., message: _Optional[_Union[_messages_pb2.Message, _Mapping]] = ..., edits: _Optional[_Union[MessageEditHistory, _Mapping]] = ..., read_cursor: _Optional[_Union[ReadCursor, _Mapping]] = ..., audit: _Optional[_Union[AuditRecord, _Mapping]] = ..., summary: _Optional[_Union[ExportSummary, _Mapping]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class ExportSummary(_message.Message):
    __slots__ = ["audit_id", "records"]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    records: int
    def __init__(self, audit_id: _Optional[str] = ..., records: _Optional[int] = ...) -> None: ...

class GetRetentionPolicyRequest(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class GetRetentionPolicyResponse(_message.Message):
    __slots__ = ["policy"]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class LegalHold(_message.Message):
    __slots__ = ["learner_id", "placed_at_us", "placed_by", "reason"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    PLACED_AT_US_FIELD_NUMBER: _ClassVar[int]
    PLACED_BY_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    placed_at_us: int
    placed_by: _common_pb2.Actor
    reason: str
    def __init__(self, learner_id: _Optional[str] = ..., reason: _Optional[str] = ..., placed_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ..., placed_at_us: _Optional[int] = ...) -> None: ...

class ListAuditRecordsRequest(_message.Message):
    __slots__ = ["from_us", "kind", "learner_id", "page", "to_us"]
    FROM_US_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    TO_US_FIELD_NUMBER: _ClassVar[int]
    from_us: int
    kind: AuditKind
    learner_id: str
    page: _common_pb2.PageRequest
    to_us: int
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ..., learner_id: _Optional[str] = ..., kind: _Optional[_Union[AuditKind, str]] = ..., from_us: _Optional[int] = ..., to_us: _Optional[int] = ...) -> None: ...

class ListAuditRecordsResponse(_message.Message):
    __slots__ = ["page", "records"]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageInfo
    records: _containers.RepeatedCompositeFieldContainer[AuditRecord]
    def __init__(self, records: _Optional[_Iterable[_Union[AuditRecord, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class ListLegalHoldsRequest(_message.Message):
    __slots__ = ["page"]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    page: _common_pb2.PageRequest
    def __init__(self, page: _Optional[_Union[_common_pb2.PageRequest, _Mapping]] = ...) -> None: ...

class ListLegalHoldsResponse(_message.Message):
    __slots__ = ["holds", "page"]
    HOLDS_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    holds: _containers.RepeatedCompositeFieldContainer[LegalHold]
    page: _common_pb2.PageInfo
    def __init__(self, holds: _Optional[_Iterable[_Union[LegalHold, _Mapping]]] = ..., page: _Optional[_Union[_common_pb2.PageInfo, _Mapping]] = ...) -> None: ...

class MessageEditHistory(_message.Message):
    __slots__ = ["edits", "seq", "thread_id"]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    edits: _containers.RepeatedCompositeFieldContainer[_messages_pb2.MessageEdit]
    seq: int
    thread_id: str
    def __init__(self, thread_id: _Optional[str] = ..., seq: _Optional[int] = ..., edits: _Optional[_Iterable[_Union[_messages_pb2.MessageEdit, _Mapping]]] = ...) -> None: ...

class PlaceLegalHoldRequest(_message.Message):
    __slots__ = ["learner_id", "reason"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    reason: str
    def __init__(self, learner_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class PlaceLegalHoldResponse(_message.Message):
    __slots__ = ["hold"]
    HOLD_FIELD_NUMBER: _ClassVar[int]
    hold: LegalHold
    def __init__(self, hold: _Optional[_Union[LegalHold, _Mapping]] = ...) -> None: ...

class ReadCursor(_message.Message):
    __slots__ = ["read_seq", "thread_id", "updated_at_us", "user_id"]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    THREAD_ID_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    read_seq: int
    thread_id: str
    updated_at_us: int
    user_id: str
    def __init__(self, user_id: _Optional[str] = ..., thread_id: _Optional[str] = ..., read_seq: _Optional[int] = ..., updated_at_us: _Optional[int] = ...) -> None: ...

class ReleaseLegalHoldRequest(_message.Message):
    __slots__ = ["learner_id", "reason"]
    LEARNER_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    learner_id: str
    reason: str
    def __init__(self, learner_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class ReleaseLegalHoldResponse(_message.Message):
    __slots__ = []
    def __init__(self) -> None: ...

class RemovalCounts(_message.Message):
    __slots__ = ["message_edits", "messages", "outbox_payloads", "read_cursors", "threads"]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_EDITS_FIELD_NUMBER: _ClassVar[int]
    OUTBOX_PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    READ_CURSORS_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    message_edits: int
    messages: int
    outbox_payloads: int
    read_cursors: int
    threads: int
    def __init__(self, threads: _Optional[int] = ..., messages: _Optional[int] = ..., message_edits: _Optional[int] = ..., read_cursors: _Optional[int] = ..., outbox_payloads: _Optional[int] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ["message_retention_days", "updated_at_us", "updated_by"]
    MESSAGE_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_US_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BY_FIELD_NUMBER: _ClassVar[int]
    message_retention_days: int
    updated_at_us: int
    updated_by: _common_pb2.Actor
    def __init__(self, message_retention_days: _Optional[int] = ..., updated_at_us: _Optional[int] = ..., updated_by: _Optional[_Union[_common_pb2.Actor, _Mapping]] = ...) -> None: ...

class RunRetentionSweepRequest(_message.Message):
    __slots__ = ["batch_size"]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    batch_size: int
    def __init__(self, batch_size: _Optional[int] = ...) -> None: ...

class RunRetentionSweepResponse(_message.Message):
    __slots__ = ["audit_id", "done", "removed", "skipped_held_learners"]
    AUDIT_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_HELD_LEARNERS_FIELD_NUMBER: _ClassVar[int]
    audit_id: str
    done: bool
    removed: RemovalCounts
    skipped_held_learners: int
    def __init__(self, removed: _Optional[_Union[RemovalCounts, _Mapping]] = ..., skipped_held_learners: _Optional[int] = ..., done: bool = ..., audit_id: _Optional[str] = ...) -> None: ...

class SetRetentionPolicyRequest(_message.Message):
    __slots__ = ["message_retention_days"]
    MESSAGE_RETENTION_DAYS_FIELD_NUMBER: _ClassVar[int]
    message_retention_days: int
    def __init__(self, message_retention_days: _Optional[int] = ...) -> None: ...

class SetRetentionPolicyResponse(_message.Message):
    __slots__ = ["policy"]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    policy: RetentionPolicy
    def __init__(self, policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class VerifyAuditTrailRequest(_message.Message):
    __slots__ = ["anchor_seq"]
    ANCHOR_SEQ_FIELD_NUMBER: _ClassVar[int]
    anchor_seq: int
    def __init__(self, anchor_seq: _Optional[int] = ...) -> None: ...

class VerifyAuditTrailResponse(_message.Message):
    __slots__ = ["anchor_hash", "entries", "head_hash", "head_seq", "intact", "problems"]
    ANCHOR_HASH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    HEAD_HASH_FIELD_NUMBER: _ClassVar[int]
    HEAD_SEQ_FIELD_NUMBER: _ClassVar[int]
    INTACT_FIELD_NUMBER: _ClassVar[int]
    PROBLEMS_FIELD_NUMBER: _ClassVar[int]
    anchor_hash: bytes
    entries: int
    head_hash: bytes
    head_seq: int
    intact: bool
    problems: _containers.RepeatedCompositeFieldContainer[AuditChainProblem]
    def __init__(self, intact: bool = ..., entries: _Optional[int] = ..., head_seq: _Optional[int] = ..., head_hash: _Optional[bytes] = ..., problems: _Optional[_Iterable[_Union[AuditChainProblem, _Mapping]]] = ..., anchor_hash: _Optional[bytes] = ...) -> None: ...

class AuditKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = []
