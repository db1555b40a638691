from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StreamCall(_message.Message):
    __slots__ = ("call_id", "send", "record_received")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    RECORD_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    send: SendRequest
    record_received: RecordReceivedRequest
    def __init__(self, call_id: _Optional[int] = ..., send: _Optional[_Union[SendRequest, _Mapping]] = ..., record_received: _Optional[_Union[RecordReceivedRequest, _Mapping]] = ...) -> None: ...

class CallBatch(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[StreamCall]
    def __init__(self, calls: _Optional[_Iterable[_Union[StreamCall, _Mapping]]] = ...) -> None: ...

class StreamResult(_message.Message):
    __slots__ = ("call_id", "send", "record_received", "error_code", "error_message")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    SEND_FIELD_NUMBER: _ClassVar[int]
    RECORD_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    ERROR_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    send: SendReply
    record_received: RecordReceivedReply
    error_code: str
    error_message: str
    def __init__(self, call_id: _Optional[int] = ..., send: _Optional[_Union[SendReply, _Mapping]] = ..., record_received: _Optional[_Union[RecordReceivedReply, _Mapping]] = ..., error_code: _Optional[str] = ..., error_message: _Optional[str] = ...) -> None: ...

class ResultBatch(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[StreamResult]
    def __init__(self, results: _Optional[_Iterable[_Union[StreamResult, _Mapping]]] = ...) -> None: ...

class Identity(_message.Message):
    __slots__ = ("user_id", "username")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    username: str
    def __init__(self, user_id: _Optional[int] = ..., username: _Optional[str] = ...) -> None: ...

class RegisterRequest(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class RegisterReply(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class LoginRequest(_message.Message):
    __slots__ = ("username", "password")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    PASSWORD_FIELD_NUMBER: _ClassVar[int]
    username: str
    password: str
    def __init__(self, username: _Optional[str] = ..., password: _Optional[str] = ...) -> None: ...

class LoginReply(_message.Message):
    __slots__ = ("user_id", "token", "expires_at")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    token: str
    expires_at: float
    def __init__(self, user_id: _Optional[int] = ..., token: _Optional[str] = ..., expires_at: _Optional[float] = ...) -> None: ...

class ConnectRequest(_message.Message):
    __slots__ = ("token", "gateway_id", "session_id")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    token: str
    gateway_id: str
    session_id: str
    def __init__(self, token: _Optional[str] = ..., gateway_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ConnectReply(_message.Message):
    __slots__ = ("user_id", "username")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    username: str
    def __init__(self, user_id: _Optional[int] = ..., username: _Optional[str] = ...) -> None: ...

class DisconnectRequest(_message.Message):
    __slots__ = ("user_id", "gateway_id", "session_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    gateway_id: str
    session_id: str
    def __init__(self, user_id: _Optional[int] = ..., gateway_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class DisconnectReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SendRequest(_message.Message):
    __slots__ = ("sender_id", "gateway_id", "session_id", "client_msg_id", "to_username", "body", "sender", "conv", "kind", "ref_seq")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    TO_USERNAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    sender_id: int
    gateway_id: str
    session_id: str
    client_msg_id: str
    to_username: str
    body: str
    sender: str
    conv: str
    kind: str
    ref_seq: int
    def __init__(self, sender_id: _Optional[int] = ..., gateway_id: _Optional[str] = ..., session_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., to_username: _Optional[str] = ..., body: _Optional[str] = ..., sender: _Optional[str] = ..., conv: _Optional[str] = ..., kind: _Optional[str] = ..., ref_seq: _Optional[int] = ...) -> None: ...

class SendReply(_message.Message):
    __slots__ = ("client_msg_id", "msg_id", "conv", "seq", "ts")
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    client_msg_id: str
    msg_id: int
    conv: str
    seq: int
    ts: int
    def __init__(self, client_msg_id: _Optional[str] = ..., msg_id: _Optional[int] = ..., conv: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[int] = ...) -> None: ...

class DeliveriesRequest(_message.Message):
    __slots__ = ("gateway_id",)
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    def __init__(self, gateway_id: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("msg_id", "conv", "seq", "sender_id", "sender", "client_msg_id", "body", "ts", "kind", "ref_seq")
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    msg_id: int
    conv: str
    seq: int
    sender_id: int
    sender: str
    client_msg_id: str
    body: str
    ts: int
    kind: str
    ref_seq: int
    def __init__(self, msg_id: _Optional[int] = ..., conv: _Optional[str] = ..., seq: _Optional[int] = ..., sender_id: _Optional[int] = ..., sender: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ..., ts: _Optional[int] = ..., kind: _Optional[str] = ..., ref_seq: _Optional[int] = ...) -> None: ...

class Signal(_message.Message):
    __slots__ = ("kind", "conv", "user_id", "username", "seq", "ts")
    KIND_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    kind: str
    conv: str
    user_id: int
    username: str
    seq: int
    ts: int
    def __init__(self, kind: _Optional[str] = ..., conv: _Optional[str] = ..., user_id: _Optional[int] = ..., username: _Optional[str] = ..., seq: _Optional[int] = ..., ts: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("gateway_id", "session_ids", "message", "signal", "user_ids")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    message: Message
    signal: Signal
    user_ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, gateway_id: _Optional[str] = ..., session_ids: _Optional[_Iterable[str]] = ..., message: _Optional[_Union[Message, _Mapping]] = ..., signal: _Optional[_Union[Signal, _Mapping]] = ..., user_ids: _Optional[_Iterable[int]] = ...) -> None: ...

class DeliveryBatch(_message.Message):
    __slots__ = ("deliveries",)
    DELIVERIES_FIELD_NUMBER: _ClassVar[int]
    deliveries: _containers.RepeatedCompositeFieldContainer[Delivery]
    def __init__(self, deliveries: _Optional[_Iterable[_Union[Delivery, _Mapping]]] = ...) -> None: ...

class PersistRequest(_message.Message):
    __slots__ = ("msg_id", "conv", "sender_id", "sender", "client_msg_id", "body", "ts", "participants", "origin_gateway", "origin_session", "reply_to", "kind", "ref_seq")
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_GATEWAY_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_SESSION_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REF_SEQ_FIELD_NUMBER: _ClassVar[int]
    msg_id: int
    conv: str
    sender_id: int
    sender: str
    client_msg_id: str
    body: str
    ts: int
    participants: _containers.RepeatedScalarFieldContainer[int]
    origin_gateway: str
    origin_session: str
    reply_to: str
    kind: str
    ref_seq: int
    def __init__(self, msg_id: _Optional[int] = ..., conv: _Optional[str] = ..., sender_id: _Optional[int] = ..., sender: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ..., ts: _Optional[int] = ..., participants: _Optional[_Iterable[int]] = ..., origin_gateway: _Optional[str] = ..., origin_session: _Optional[str] = ..., reply_to: _Optional[str] = ..., kind: _Optional[str] = ..., ref_seq: _Optional[int] = ...) -> None: ...

class PersistBatch(_message.Message):
    __slots__ = ("requests",)
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[PersistRequest]
    def __init__(self, requests: _Optional[_Iterable[_Union[PersistRequest, _Mapping]]] = ...) -> None: ...

class PersistReply(_message.Message):
    __slots__ = ("request_msg_id", "message")
    REQUEST_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_msg_id: int
    message: Message
    def __init__(self, request_msg_id: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class PersistReplyBatch(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[PersistReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[PersistReply, _Mapping]]] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("user_id", "since", "has_since", "limit")
    class SinceEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    HAS_SINCE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    since: _containers.ScalarMap[str, int]
    has_since: bool
    limit: int
    def __init__(self, user_id: _Optional[int] = ..., since: _Optional[_Mapping[str, int]] = ..., has_since: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class ConversationSync(_message.Message):
    __slots__ = ("conv", "last_seq", "messages", "complete")
    CONV_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    conv: str
    last_seq: int
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    complete: bool
    def __init__(self, conv: _Optional[str] = ..., last_seq: _Optional[int] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., complete: _Optional[bool] = ...) -> None: ...

class SyncReply(_message.Message):
    __slots__ = ("conversations",)
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationSync]
    def __init__(self, conversations: _Optional[_Iterable[_Union[ConversationSync, _Mapping]]] = ...) -> None: ...

class RecordReceivedRequest(_message.Message):
    __slots__ = ("user_id", "conv", "seq")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    conv: str
    seq: int
    def __init__(self, user_id: _Optional[int] = ..., conv: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class RecordReceivedReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RefreshRoutesRequest(_message.Message):
    __slots__ = ("gateway_id", "user_ids", "session_ids")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    user_ids: _containers.RepeatedScalarFieldContainer[int]
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, gateway_id: _Optional[str] = ..., user_ids: _Optional[_Iterable[int]] = ..., session_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RefreshRoutesReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PresenceRequest(_message.Message):
    __slots__ = ("user_id", "usernames")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    usernames: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_id: _Optional[int] = ..., usernames: _Optional[_Iterable[str]] = ...) -> None: ...

class PresenceReply(_message.Message):
    __slots__ = ("online",)
    class OnlineEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    online: _containers.ScalarMap[str, bool]
    def __init__(self, online: _Optional[_Mapping[str, bool]] = ...) -> None: ...

class GroupInfo(_message.Message):
    __slots__ = ("group_id", "conv", "name", "created_at", "member_count", "role")
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    group_id: int
    conv: str
    name: str
    created_at: float
    member_count: int
    role: str
    def __init__(self, group_id: _Optional[int] = ..., conv: _Optional[str] = ..., name: _Optional[str] = ..., created_at: _Optional[float] = ..., member_count: _Optional[int] = ..., role: _Optional[str] = ...) -> None: ...

class MemberInfo(_message.Message):
    __slots__ = ("user_id", "username", "role", "joined_seq")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    JOINED_SEQ_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    username: str
    role: str
    joined_seq: int
    def __init__(self, user_id: _Optional[int] = ..., username: _Optional[str] = ..., role: _Optional[str] = ..., joined_seq: _Optional[int] = ...) -> None: ...

class CreateGroupRequest(_message.Message):
    __slots__ = ("identity", "name", "usernames")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    name: str
    usernames: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., name: _Optional[str] = ..., usernames: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateGroupReply(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: GroupInfo
    def __init__(self, group: _Optional[_Union[GroupInfo, _Mapping]] = ...) -> None: ...

class AddMembersRequest(_message.Message):
    __slots__ = ("identity", "group_id", "usernames", "role")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAMES_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    group_id: int
    usernames: _containers.RepeatedScalarFieldContainer[str]
    role: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., group_id: _Optional[int] = ..., usernames: _Optional[_Iterable[str]] = ..., role: _Optional[str] = ...) -> None: ...

class AddMembersReply(_message.Message):
    __slots__ = ("added",)
    ADDED_FIELD_NUMBER: _ClassVar[int]
    added: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self, added: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class RemoveMemberRequest(_message.Message):
    __slots__ = ("identity", "group_id", "username")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    group_id: int
    username: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., group_id: _Optional[int] = ..., username: _Optional[str] = ...) -> None: ...

class RemoveMemberReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SetRoleRequest(_message.Message):
    __slots__ = ("identity", "group_id", "username", "role")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    group_id: int
    username: str
    role: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., group_id: _Optional[int] = ..., username: _Optional[str] = ..., role: _Optional[str] = ...) -> None: ...

class SetRoleReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LeaveGroupRequest(_message.Message):
    __slots__ = ("identity", "group_id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    group_id: int
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., group_id: _Optional[int] = ...) -> None: ...

class LeaveGroupReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GroupsRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class GroupsReply(_message.Message):
    __slots__ = ("groups",)
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[GroupInfo]
    def __init__(self, groups: _Optional[_Iterable[_Union[GroupInfo, _Mapping]]] = ...) -> None: ...

class MembersRequest(_message.Message):
    __slots__ = ("user_id", "group_id")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    group_id: int
    def __init__(self, user_id: _Optional[int] = ..., group_id: _Optional[int] = ...) -> None: ...

class MembersReply(_message.Message):
    __slots__ = ("members",)
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[MemberInfo]
    def __init__(self, members: _Optional[_Iterable[_Union[MemberInfo, _Mapping]]] = ...) -> None: ...

class HistoryRequest(_message.Message):
    __slots__ = ("user_id", "conv", "before", "after", "limit")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    conv: str
    before: int
    after: int
    limit: int
    def __init__(self, user_id: _Optional[int] = ..., conv: _Optional[str] = ..., before: _Optional[int] = ..., after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class HistoryReply(_message.Message):
    __slots__ = ("conv", "messages", "reads")
    class ReadsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    CONV_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    READS_FIELD_NUMBER: _ClassVar[int]
    conv: str
    messages: _containers.RepeatedCompositeFieldContainer[Message]
    reads: _containers.ScalarMap[str, int]
    def __init__(self, conv: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[Message, _Mapping]]] = ..., reads: _Optional[_Mapping[str, int]] = ...) -> None: ...

class MarkReadRequest(_message.Message):
    __slots__ = ("identity", "conv", "seq", "gateway_id", "session_id")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    conv: str
    seq: int
    gateway_id: str
    session_id: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., conv: _Optional[str] = ..., seq: _Optional[int] = ..., gateway_id: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class MarkReadReply(_message.Message):
    __slots__ = ("read_seq",)
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    read_seq: int
    def __init__(self, read_seq: _Optional[int] = ...) -> None: ...

class TypingRequest(_message.Message):
    __slots__ = ("identity", "conv")
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    identity: Identity
    conv: str
    def __init__(self, identity: _Optional[_Union[Identity, _Mapping]] = ..., conv: _Optional[str] = ...) -> None: ...

class TypingReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ConversationInfo(_message.Message):
    __slots__ = ("conv", "title", "last_seq", "read_seq", "unread")
    CONV_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    READ_SEQ_FIELD_NUMBER: _ClassVar[int]
    UNREAD_FIELD_NUMBER: _ClassVar[int]
    conv: str
    title: str
    last_seq: int
    read_seq: int
    unread: int
    def __init__(self, conv: _Optional[str] = ..., title: _Optional[str] = ..., last_seq: _Optional[int] = ..., read_seq: _Optional[int] = ..., unread: _Optional[int] = ...) -> None: ...

class ConversationListRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: int
    def __init__(self, user_id: _Optional[int] = ...) -> None: ...

class ConversationListReply(_message.Message):
    __slots__ = ("conversations",)
    CONVERSATIONS_FIELD_NUMBER: _ClassVar[int]
    conversations: _containers.RepeatedCompositeFieldContainer[ConversationInfo]
    def __init__(self, conversations: _Optional[_Iterable[_Union[ConversationInfo, _Mapping]]] = ...) -> None: ...
