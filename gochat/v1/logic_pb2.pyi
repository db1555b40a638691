from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

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
    __slots__ = ("sender_id", "gateway_id", "session_id", "client_msg_id", "to_username", "body", "sender")
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    TO_USERNAME_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    sender_id: int
    gateway_id: str
    session_id: str
    client_msg_id: str
    to_username: str
    body: str
    sender: str
    def __init__(self, sender_id: _Optional[int] = ..., gateway_id: _Optional[str] = ..., session_id: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., to_username: _Optional[str] = ..., body: _Optional[str] = ..., sender: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("msg_id", "conv", "seq", "sender_id", "sender", "client_msg_id", "body", "ts")
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    CONV_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    SENDER_ID_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    CLIENT_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    msg_id: int
    conv: str
    seq: int
    sender_id: int
    sender: str
    client_msg_id: str
    body: str
    ts: int
    def __init__(self, msg_id: _Optional[int] = ..., conv: _Optional[str] = ..., seq: _Optional[int] = ..., sender_id: _Optional[int] = ..., sender: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ..., ts: _Optional[int] = ...) -> None: ...

class Delivery(_message.Message):
    __slots__ = ("gateway_id", "session_ids", "message")
    GATEWAY_ID_FIELD_NUMBER: _ClassVar[int]
    SESSION_IDS_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    gateway_id: str
    session_ids: _containers.RepeatedScalarFieldContainer[str]
    message: Message
    def __init__(self, gateway_id: _Optional[str] = ..., session_ids: _Optional[_Iterable[str]] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class PersistRequest(_message.Message):
    __slots__ = ("msg_id", "conv", "sender_id", "sender", "client_msg_id", "body", "ts", "participants", "origin_gateway", "origin_session", "reply_to")
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
    def __init__(self, msg_id: _Optional[int] = ..., conv: _Optional[str] = ..., sender_id: _Optional[int] = ..., sender: _Optional[str] = ..., client_msg_id: _Optional[str] = ..., body: _Optional[str] = ..., ts: _Optional[int] = ..., participants: _Optional[_Iterable[int]] = ..., origin_gateway: _Optional[str] = ..., origin_session: _Optional[str] = ..., reply_to: _Optional[str] = ...) -> None: ...

class PersistReply(_message.Message):
    __slots__ = ("request_msg_id", "message")
    REQUEST_MSG_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    request_msg_id: int
    message: Message
    def __init__(self, request_msg_id: _Optional[int] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

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
