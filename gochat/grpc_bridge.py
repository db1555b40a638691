"""The one module that touches gRPC threads and futures.

Gateway side, :class:`GrpcLogicClient` implements
:class:`~gochat.gateway.logic_client.ILogicClient`: each unary call is
started with ``.future()`` and its completion is handed to the reactor with
``callFromThread`` (a gRPC done-callback runs on a gRPC thread and may do
nothing else). The delivery stream is read by one dedicated thread per
subscription, which hands each delivery to the reactor in order.

Logic side, :class:`LogicServicer` runs each call on a gRPC worker thread
and crosses into the reactor with ``blockingCallFromThread``;
:class:`GrpcServerService` starts and stops the server with the application.

Errors cross as a gRPC status plus the stable gochat code in the trailing
metadata key ``gochat-error``; everything outside this module only sees
Deferreds and :class:`~gochat.errors.GochatError`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from twisted.application.service import Service
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorFromThreads, IReactorThreads
from twisted.internet.threads import blockingCallFromThread, deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from gochat.errors import ErrorCode, GochatError
from gochat.gateway.logic_client import DeliveryHandler
from gochat.logic.chat import ChatLogic
from gochat.model import (
    Ack,
    ConversationInfo,
    ConversationSync,
    Delivery,
    GroupInfo,
    HistoryPage,
    Identity,
    LoginResult,
    MemberInfo,
    MessageKind,
    SendCommand,
    Signal,
    StoredMessage,
    SyncResult,
)
from gochat.v1 import logic_pb2 as pb
from gochat.v1 import logic_pb2_grpc as pb_grpc

_log = Logger()
ERROR_METADATA_KEY = "gochat-error"
T = TypeVar("T")


def kind_to_pb(kind: str) -> str:
    """A message kind on the wire: empty for text (the common case costs no bytes)."""
    return "" if kind == MessageKind.TEXT else kind


def kind_from_pb(kind: str) -> str:
    """A message kind off the wire; empty (as in bodies written before kinds existed) is text."""
    return kind or MessageKind.TEXT


def message_to_pb(message: StoredMessage) -> pb.Message:
    return pb.Message(
        msg_id=message.msg_id,
        conv=message.conv,
        seq=message.seq,
        sender_id=message.sender_id,
        sender=message.sender,
        client_msg_id=message.client_msg_id,
        body=message.body,
        ts=message.ts,
        kind=kind_to_pb(message.kind),
        ref_seq=message.ref_seq,
    )


def message_from_pb(message: pb.Message) -> StoredMessage:
    return StoredMessage(
        msg_id=message.msg_id,
        conv=message.conv,
        seq=message.seq,
        sender_id=message.sender_id,
        sender=message.sender,
        client_msg_id=message.client_msg_id,
        body=message.body,
        ts=message.ts,
        kind=kind_from_pb(message.kind),
        ref_seq=message.ref_seq,
    )


def signal_to_pb(signal: Signal) -> pb.Signal:
    return pb.Signal(
        kind=signal.kind,
        conv=signal.conv,
        user_id=signal.user_id,
        username=signal.username,
        seq=signal.seq,
        ts=signal.ts,
    )


def signal_from_pb(signal: pb.Signal) -> Signal:
    return Signal(signal.kind, signal.conv, signal.user_id, signal.username, signal.seq, signal.ts)


def delivery_to_pb(delivery: Delivery) -> pb.Delivery:
    """The delivery on the wire (the gRPC stream and the gateway's RabbitMQ queue)."""
    item = pb.Delivery(gateway_id=delivery.gateway_id, session_ids=delivery.session_ids, user_ids=delivery.user_ids)
    if delivery.message is not None:
        item.message.CopyFrom(message_to_pb(delivery.message))
    elif delivery.signal is not None:
        item.signal.CopyFrom(signal_to_pb(delivery.signal))
    return item


def delivery_from_pb(item: pb.Delivery) -> Delivery:
    """The delivery *item* stands for.

    ``ValueError`` if it is malformed: its sessions and users do not pair up,
    or it carries neither a message nor a signal.
    """
    if len(item.session_ids) != len(item.user_ids):
        raise ValueError(f"{len(item.session_ids)} session ids for {len(item.user_ids)} user ids")
    payload = item.WhichOneof("payload")
    if payload is None:
        raise ValueError("a delivery with neither a message nor a signal")
    return Delivery(
        item.gateway_id,
        tuple(item.session_ids),
        tuple(item.user_ids),
        message_from_pb(item.message) if payload == "message" else None,
        signal_from_pb(item.signal) if payload == "signal" else None,
    )


def identity_to_pb(identity: Identity) -> pb.Identity:
    return pb.Identity(user_id=identity.user_id, username=identity.username)


def identity_from_pb(identity: pb.Identity) -> Identity:
    return Identity(identity.user_id, identity.username)


def group_to_pb(group: GroupInfo) -> pb.GroupInfo:
    return pb.GroupInfo(
        group_id=group.group_id,
        conv=group.conv,
        name=group.name,
        created_at=group.created_at,
        member_count=group.member_count,
        role=group.role,
    )


def group_from_pb(group: pb.GroupInfo) -> GroupInfo:
    return GroupInfo(group.group_id, group.conv, group.name, group.created_at, group.member_count, group.role)


def member_to_pb(member: MemberInfo) -> pb.MemberInfo:
    return pb.MemberInfo(
        user_id=member.user_id, username=member.username, role=member.role, joined_seq=member.joined_seq
    )


def member_from_pb(member: pb.MemberInfo) -> MemberInfo:
    return MemberInfo(member.user_id, member.username, member.role, member.joined_seq)


def history_to_pb(page: HistoryPage) -> pb.HistoryReply:
    return pb.HistoryReply(conv=page.conv, messages=[message_to_pb(m) for m in page.messages], reads=page.reads)


def history_from_pb(reply: pb.HistoryReply) -> HistoryPage:
    return HistoryPage(reply.conv, tuple(message_from_pb(m) for m in reply.messages), dict(reply.reads))


def conversation_to_pb(conversation: ConversationInfo) -> pb.ConversationInfo:
    return pb.ConversationInfo(
        conv=conversation.conv,
        title=conversation.title,
        last_seq=conversation.last_seq,
        read_seq=conversation.read_seq,
        unread=conversation.unread,
    )


def conversation_from_pb(conversation: pb.ConversationInfo) -> ConversationInfo:
    return ConversationInfo(
        conversation.conv, conversation.title, conversation.last_seq, conversation.read_seq, conversation.unread
    )


def sync_to_pb(result: SyncResult) -> pb.SyncReply:
    return pb.SyncReply(
        conversations=[
            pb.ConversationSync(
                conv=c.conv,
                last_seq=c.last_seq,
                messages=[message_to_pb(m) for m in c.messages],
                complete=c.complete,
            )
            for c in result.conversations
        ]
    )


def sync_from_pb(reply: pb.SyncReply) -> SyncResult:
    return SyncResult(
        tuple(
            ConversationSync(c.conv, c.last_seq, tuple(message_from_pb(m) for m in c.messages), c.complete)
            for c in reply.conversations
        )
    )


def error_from_rpc(error: BaseException) -> GochatError:
    """The :class:`GochatError` an RPC failure stands for."""
    if isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == ERROR_METADATA_KEY:
                return GochatError.from_wire(str(value), error.details() or "")
        return GochatError(ErrorCode.UNAVAILABLE, f"logic unreachable: {error.code().name}")
    return GochatError(ErrorCode.UNAVAILABLE, f"logic call failed: {error!r}")


# Gateway side.


class _StreamSubscription:
    """One thread reading a gateway's delivery stream, resubscribing after failures."""

    def __init__(
        self,
        stub: pb_grpc.LogicStub,
        reactor: IReactorFromThreads,
        gateway_id: str,
        handler: DeliveryHandler,
        retry_max: float,
    ) -> None:
        self._stub = stub
        self._reactor = reactor
        self._gateway_id = gateway_id
        self._handler = handler
        self._retry_max = retry_max
        self._stopped = threading.Event()
        self._call: Any = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name=f"deliveries-{gateway_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = 0.1
        while not self._stopped.is_set():
            with self._lock:
                if self._stopped.is_set():
                    return
                self._call = self._stub.Deliveries(pb.DeliveriesRequest(gateway_id=self._gateway_id))
            try:
                for item in self._call:
                    delay = 0.1
                    try:
                        delivery = delivery_from_pb(item)
                    except ValueError as e:
                        self._reactor.callFromThread(_log.error, "dropping a malformed delivery: {error}", error=str(e))
                        continue
                    self._reactor.callFromThread(self._handler, delivery)
            except grpc.RpcError as e:
                if self._stopped.is_set():
                    return
                self._reactor.callFromThread(
                    _log.warn, "delivery stream lost ({code}); resubscribing", code=str(e.code())
                )
            if self._stopped.wait(delay):
                return
            delay = min(delay * 2, self._retry_max)

    def cancel(self) -> None:
        with self._lock:
            self._stopped.set()
            if self._call is not None:
                self._call.cancel()


class GrpcLogicClient:
    """:class:`~gochat.gateway.logic_client.ILogicClient` over a gRPC channel."""

    def __init__(self, target: str, reactor: IReactorFromThreads, timeout: float = 10.0) -> None:
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.LogicStub(self._channel)
        self._reactor = reactor
        self._timeout = timeout
        self._subscriptions: list[_StreamSubscription] = []

    def _call(self, method: Any, request: Any, convert: Callable[[Any], T]) -> Deferred[T]:
        d: Deferred[T] = Deferred()

        def fire(future: grpc.Future) -> None:
            error = future.exception()
            if error is not None:
                d.errback(Failure(error_from_rpc(error)))
            else:
                try:
                    d.callback(convert(future.result()))
                except Exception:
                    d.errback()

        try:
            future = method.future(request, timeout=self._timeout)
        except Exception as e:  # a closed channel refuses new calls synchronously
            return fail(error_from_rpc(e))
        future.add_done_callback(lambda f: self._reactor.callFromThread(fire, f))
        return d

    def register(self, username: str, password: str) -> Deferred[int]:
        request = pb.RegisterRequest(username=username, password=password)
        return self._call(self._stub.Register, request, lambda reply: int(reply.user_id))

    def login(self, username: str, password: str) -> Deferred[LoginResult]:
        request = pb.LoginRequest(username=username, password=password)
        return self._call(
            self._stub.Login, request, lambda reply: LoginResult(reply.user_id, reply.token, reply.expires_at)
        )

    def connect(self, token: str, gateway_id: str, session_id: str) -> Deferred[Identity]:
        request = pb.ConnectRequest(token=token, gateway_id=gateway_id, session_id=session_id)
        return self._call(self._stub.Connect, request, lambda reply: Identity(reply.user_id, reply.username))

    def disconnect(self, identity: Identity, gateway_id: str, session_id: str) -> Deferred[None]:
        request = pb.DisconnectRequest(user_id=identity.user_id, gateway_id=gateway_id, session_id=session_id)
        return self._call(self._stub.Disconnect, request, lambda reply: None)

    def send(self, command: SendCommand) -> Deferred[Ack]:
        request = pb.SendRequest(
            sender_id=command.sender_id,
            sender=command.sender,
            gateway_id=command.gateway_id,
            session_id=command.session_id,
            client_msg_id=command.client_msg_id,
            to_username=command.to_username,
            body=command.body,
            conv=command.conv,
            kind=kind_to_pb(command.kind),
            ref_seq=command.ref_seq,
        )
        return self._call(
            self._stub.Send,
            request,
            lambda reply: Ack(reply.client_msg_id, reply.msg_id, reply.conv, reply.seq, reply.ts),
        )

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        request = pb.SyncRequest(user_id=user_id, since=dict(since or {}), has_since=since is not None, limit=limit)
        return self._call(self._stub.Sync, request, sync_from_pb)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        request = pb.RecordReceivedRequest(user_id=user_id, conv=conv, seq=seq)
        return self._call(self._stub.RecordReceived, request, lambda reply: None)

    def refresh_routes(self, gateway_id: str, sessions: Sequence[tuple[int, str]]) -> Deferred[None]:
        request = pb.RefreshRoutesRequest(
            gateway_id=gateway_id, user_ids=[u for u, _ in sessions], session_ids=[s for _, s in sessions]
        )
        return self._call(self._stub.RefreshRoutes, request, lambda reply: None)

    def presence(self, user_id: int, usernames: Sequence[str]) -> Deferred[dict[str, bool]]:
        request = pb.PresenceRequest(user_id=user_id, usernames=list(usernames))
        return self._call(self._stub.Presence, request, lambda reply: dict(reply.online))

    def create_group(self, identity: Identity, name: str, usernames: Sequence[str]) -> Deferred[GroupInfo]:
        request = pb.CreateGroupRequest(identity=identity_to_pb(identity), name=name, usernames=list(usernames))
        return self._call(self._stub.CreateGroup, request, lambda reply: group_from_pb(reply.group))

    def add_members(
        self, identity: Identity, group_id: int, usernames: Sequence[str], role: str
    ) -> Deferred[list[MemberInfo]]:
        request = pb.AddMembersRequest(
            identity=identity_to_pb(identity), group_id=group_id, usernames=list(usernames), role=role
        )
        return self._call(self._stub.AddMembers, request, lambda reply: [member_from_pb(m) for m in reply.added])

    def remove_member(self, identity: Identity, group_id: int, username: str) -> Deferred[None]:
        request = pb.RemoveMemberRequest(identity=identity_to_pb(identity), group_id=group_id, username=username)
        return self._call(self._stub.RemoveMember, request, lambda reply: None)

    def set_role(self, identity: Identity, group_id: int, username: str, role: str) -> Deferred[None]:
        request = pb.SetRoleRequest(identity=identity_to_pb(identity), group_id=group_id, username=username, role=role)
        return self._call(self._stub.SetRole, request, lambda reply: None)

    def leave_group(self, identity: Identity, group_id: int) -> Deferred[None]:
        request = pb.LeaveGroupRequest(identity=identity_to_pb(identity), group_id=group_id)
        return self._call(self._stub.LeaveGroup, request, lambda reply: None)

    def groups(self, user_id: int) -> Deferred[list[GroupInfo]]:
        request = pb.GroupsRequest(user_id=user_id)
        return self._call(self._stub.Groups, request, lambda reply: [group_from_pb(g) for g in reply.groups])

    def members(self, user_id: int, group_id: int) -> Deferred[list[MemberInfo]]:
        request = pb.MembersRequest(user_id=user_id, group_id=group_id)
        return self._call(self._stub.Members, request, lambda reply: [member_from_pb(m) for m in reply.members])

    def history(
        self, user_id: int, conv: str, before: int | None, after: int | None, limit: int
    ) -> Deferred[HistoryPage]:
        request = pb.HistoryRequest(user_id=user_id, conv=conv, before=before, after=after, limit=limit)
        return self._call(self._stub.History, request, history_from_pb)

    def mark_read(self, identity: Identity, conv: str, seq: int, gateway_id: str, session_id: str) -> Deferred[int]:
        request = pb.MarkReadRequest(
            identity=identity_to_pb(identity), conv=conv, seq=seq, gateway_id=gateway_id, session_id=session_id
        )
        return self._call(self._stub.MarkRead, request, lambda reply: int(reply.read_seq))

    def typing(self, identity: Identity, conv: str) -> Deferred[None]:
        request = pb.TypingRequest(identity=identity_to_pb(identity), conv=conv)
        return self._call(self._stub.Typing, request, lambda reply: None)

    def conversation_list(self, user_id: int) -> Deferred[list[ConversationInfo]]:
        request = pb.ConversationListRequest(user_id=user_id)
        return self._call(
            self._stub.ConversationList,
            request,
            lambda reply: [conversation_from_pb(c) for c in reply.conversations],
        )

    def subscribe(self, gateway_id: str, handler: DeliveryHandler) -> _StreamSubscription:
        subscription = _StreamSubscription(self._stub, self._reactor, gateway_id, handler, retry_max=5.0)
        self._subscriptions.append(subscription)
        return subscription

    def close(self) -> None:
        """Cancel the streams and close the channel."""
        for subscription in self._subscriptions:
            subscription.cancel()
        self._channel.close()


# Logic side.

_END_OF_STREAM = object()


class LogicServicer(pb_grpc.LogicServicer):
    """Serves the Logic RPCs by calling :class:`ChatLogic` on the reactor thread."""

    def __init__(
        self,
        logic: ChatLogic,
        reactor: IReactorFromThreads,
        max_queued_deliveries: int = 100_000,
        max_concurrent_sends: int = 248,
    ) -> None:
        self._logic = logic
        self._reactor = reactor
        self._max_queued = max_queued_deliveries
        # Sends wait for a commit; while the database is down they all wait. Capping them keeps worker
        # threads free for everything else (auth, sync, route refresh) instead of letting sends take all.
        self._send_slots = threading.BoundedSemaphore(max_concurrent_sends)

    def _run(self, context: grpc.ServicerContext, function: Callable[..., Deferred[T]], *args: Any) -> T:
        try:
            result: T = blockingCallFromThread(self._reactor, function, *args)  # type: ignore[arg-type]
            return result
        except GochatError as e:
            context.set_trailing_metadata(((ERROR_METADATA_KEY, e.code.value),))
            context.abort(getattr(grpc.StatusCode, e.wire.grpc_status), e.message)
        except Exception as e:
            self._reactor.callFromThread(_log.failure, "RPC failed", Failure(e))
            context.set_trailing_metadata(((ERROR_METADATA_KEY, ErrorCode.INTERNAL.value),))
            context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("context.abort returns only by raising")

    def Register(self, request: pb.RegisterRequest, context: grpc.ServicerContext) -> pb.RegisterReply:
        user_id = self._run(context, self._logic.register, request.username, request.password)
        return pb.RegisterReply(user_id=user_id)

    def Login(self, request: pb.LoginRequest, context: grpc.ServicerContext) -> pb.LoginReply:
        result = self._run(context, self._logic.login, request.username, request.password)
        return pb.LoginReply(user_id=result.user_id, token=result.token, expires_at=result.expires_at)

    def Connect(self, request: pb.ConnectRequest, context: grpc.ServicerContext) -> pb.ConnectReply:
        identity = self._run(context, self._logic.connect, request.token, request.gateway_id, request.session_id)
        return pb.ConnectReply(user_id=identity.user_id, username=identity.username)

    def Disconnect(self, request: pb.DisconnectRequest, context: grpc.ServicerContext) -> pb.DisconnectReply:
        identity = Identity(request.user_id, "")
        self._run(context, self._logic.disconnect, identity, request.gateway_id, request.session_id)
        return pb.DisconnectReply()

    def Send(self, request: pb.SendRequest, context: grpc.ServicerContext) -> pb.SendReply:
        command = SendCommand(
            sender_id=request.sender_id,
            sender=request.sender,
            gateway_id=request.gateway_id,
            session_id=request.session_id,
            client_msg_id=request.client_msg_id,
            to_username=request.to_username,
            body=request.body,
            conv=request.conv,
            kind=kind_from_pb(request.kind),
            ref_seq=request.ref_seq,
        )
        if not self._send_slots.acquire(blocking=False):
            context.set_trailing_metadata(((ERROR_METADATA_KEY, ErrorCode.UNAVAILABLE.value),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "logic has too many sends waiting for the store; retry")
        try:
            ack = self._run(context, self._logic.send, command)
        finally:
            self._send_slots.release()
        return pb.SendReply(client_msg_id=ack.client_msg_id, msg_id=ack.msg_id, conv=ack.conv, seq=ack.seq, ts=ack.ts)

    def Sync(self, request: pb.SyncRequest, context: grpc.ServicerContext) -> pb.SyncReply:
        since = dict(request.since) if request.has_since else None
        result = self._run(context, self._logic.sync, request.user_id, since, request.limit)
        return sync_to_pb(result)

    def RecordReceived(
        self, request: pb.RecordReceivedRequest, context: grpc.ServicerContext
    ) -> pb.RecordReceivedReply:
        self._run(context, self._logic.record_received, request.user_id, request.conv, request.seq)
        return pb.RecordReceivedReply()

    def RefreshRoutes(self, request: pb.RefreshRoutesRequest, context: grpc.ServicerContext) -> pb.RefreshRoutesReply:
        if len(request.user_ids) != len(request.session_ids):
            context.set_trailing_metadata(((ERROR_METADATA_KEY, ErrorCode.BAD_REQUEST.value),))
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "user_ids and session_ids must pair up")
        sessions = list(zip(request.user_ids, request.session_ids, strict=True))
        self._run(context, self._logic.refresh_routes, request.gateway_id, sessions)
        return pb.RefreshRoutesReply()

    def Presence(self, request: pb.PresenceRequest, context: grpc.ServicerContext) -> pb.PresenceReply:
        online = self._run(context, self._logic.presence, request.user_id, list(request.usernames))
        return pb.PresenceReply(online=online)

    def CreateGroup(self, request: pb.CreateGroupRequest, context: grpc.ServicerContext) -> pb.CreateGroupReply:
        identity = identity_from_pb(request.identity)
        group = self._run(context, self._logic.create_group, identity, request.name, list(request.usernames))
        return pb.CreateGroupReply(group=group_to_pb(group))

    def AddMembers(self, request: pb.AddMembersRequest, context: grpc.ServicerContext) -> pb.AddMembersReply:
        identity = identity_from_pb(request.identity)
        added = self._run(
            context, self._logic.add_members, identity, request.group_id, list(request.usernames), request.role
        )
        return pb.AddMembersReply(added=[member_to_pb(m) for m in added])

    def RemoveMember(self, request: pb.RemoveMemberRequest, context: grpc.ServicerContext) -> pb.RemoveMemberReply:
        identity = identity_from_pb(request.identity)
        self._run(context, self._logic.remove_member, identity, request.group_id, request.username)
        return pb.RemoveMemberReply()

    def SetRole(self, request: pb.SetRoleRequest, context: grpc.ServicerContext) -> pb.SetRoleReply:
        identity = identity_from_pb(request.identity)
        self._run(context, self._logic.set_role, identity, request.group_id, request.username, request.role)
        return pb.SetRoleReply()

    def LeaveGroup(self, request: pb.LeaveGroupRequest, context: grpc.ServicerContext) -> pb.LeaveGroupReply:
        self._run(context, self._logic.leave_group, identity_from_pb(request.identity), request.group_id)
        return pb.LeaveGroupReply()

    def Groups(self, request: pb.GroupsRequest, context: grpc.ServicerContext) -> pb.GroupsReply:
        groups = self._run(context, self._logic.groups, request.user_id)
        return pb.GroupsReply(groups=[group_to_pb(g) for g in groups])

    def Members(self, request: pb.MembersRequest, context: grpc.ServicerContext) -> pb.MembersReply:
        members = self._run(context, self._logic.members, request.user_id, request.group_id)
        return pb.MembersReply(members=[member_to_pb(m) for m in members])

    def History(self, request: pb.HistoryRequest, context: grpc.ServicerContext) -> pb.HistoryReply:
        before = request.before if request.HasField("before") else None
        after = request.after if request.HasField("after") else None
        page = self._run(context, self._logic.history, request.user_id, request.conv, before, after, request.limit)
        return history_to_pb(page)

    def MarkRead(self, request: pb.MarkReadRequest, context: grpc.ServicerContext) -> pb.MarkReadReply:
        identity = identity_from_pb(request.identity)
        read_seq = self._run(
            context, self._logic.mark_read, identity, request.conv, request.seq, request.gateway_id, request.session_id
        )
        return pb.MarkReadReply(read_seq=read_seq)

    def Typing(self, request: pb.TypingRequest, context: grpc.ServicerContext) -> pb.TypingReply:
        self._run(context, self._logic.typing, identity_from_pb(request.identity), request.conv)
        return pb.TypingReply()

    def ConversationList(
        self, request: pb.ConversationListRequest, context: grpc.ServicerContext
    ) -> pb.ConversationListReply:
        conversations = self._run(context, self._logic.conversation_list, request.user_id)
        return pb.ConversationListReply(conversations=[conversation_to_pb(c) for c in conversations])

    def Deliveries(self, request: pb.DeliveriesRequest, context: grpc.ServicerContext) -> Iterator[pb.Delivery]:
        """Stream the gateway's deliveries until it hangs up.

        A gateway that does not keep up (``max_queued_deliveries`` waiting)
        has its stream ended; it resubscribes and its sessions recover what
        they missed by sync. Nothing is dropped without the stream ending.
        """
        pending: queue.Queue[object] = queue.Queue()
        overflowed = threading.Event()

        def enqueue(delivery: Delivery) -> None:
            if overflowed.is_set():
                return
            if pending.qsize() >= self._max_queued:
                overflowed.set()
                _log.error(
                    "gateway {gateway_id} is {n} deliveries behind; ending its stream",
                    gateway_id=request.gateway_id,
                    n=self._max_queued,
                )
                pending.put(_END_OF_STREAM)
                return
            pending.put(delivery)

        subscription = self._run(
            context,
            _subscribe,
            self._logic.deliveries,
            request.gateway_id,
            enqueue,
        )
        context.add_callback(lambda: pending.put(_END_OF_STREAM))
        try:
            while True:
                item = pending.get()
                if item is _END_OF_STREAM:
                    break
                assert isinstance(item, Delivery)
                yield delivery_to_pb(item)
        finally:
            self._reactor.callFromThread(subscription.cancel)
        if overflowed.is_set():
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "delivery stream overflowed; resubscribe")


def _subscribe(bus: Any, gateway_id: str, handler: Callable[[Delivery], None]) -> Deferred[Any]:
    """Subscribe on the reactor thread, a refusal included, as a Deferred for :meth:`LogicServicer._run`."""
    return maybeDeferred(bus.subscribe, gateway_id, handler)


class GrpcServerService(Service):
    """The logic gRPC server as an ``IService``: listens at start, drains at stop."""

    def __init__(self, servicer: LogicServicer, address: str, reactor: IReactorThreads, max_workers: int = 256) -> None:
        self._servicer = servicer
        self._address = address
        self._reactor = reactor
        self._max_workers = max_workers
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def startService(self) -> None:
        super().startService()
        server = grpc.server(ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="grpc-logic"))
        pb_grpc.add_LogicServicer_to_server(self._servicer, server)
        self.port = server.add_insecure_port(self._address)
        if not self.port:
            raise RuntimeError(f"cannot listen for gRPC on {self._address}")
        server.start()
        self._server = server
        _log.info("logic gRPC listening on {address} (port {port})", address=self._address, port=self.port)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        server, self._server = self._server, None
        if server is None:
            return succeed(None)
        stopped = server.stop(grace=5.0)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), stopped.wait)
