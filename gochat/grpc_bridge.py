"""The one module that touches gRPC threads and futures.

Gateway side, :class:`GrpcLogicClient` implements
:class:`~gochat.gateway.logic_client.ILogicClient`. The hot calls (``send``
and ``record_received``, several per chat message) go over one long-lived
``Calls`` stream (:class:`_CallStream`): every call made during one reactor
turn leaves as one ``CallBatch``, and logic answers with ``ResultBatch``es
of whatever it has ready, so a thousand messages a second cost a few
hundred stream messages and thread hand-offs, not a unary call and a
worker thread each. The rare calls are unary, started with ``.future()``
and handed back to the reactor with ``callFromThread`` (a gRPC
done-callback runs on a gRPC thread and may do nothing else). The delivery
stream is read by one dedicated thread per subscription, which hands each
delivery to the reactor in order.

Logic side, :class:`LogicServicer` runs each unary call on a gRPC worker
thread and crosses into the reactor with ``blockingCallFromThread``; a
``Calls`` stream has one thread reading batches into the reactor and its
gRPC worker thread writing the answers the reactor collected each turn.
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
from dataclasses import dataclass, field
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


def send_to_pb(command: SendCommand) -> pb.SendRequest:
    return pb.SendRequest(
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


def send_from_pb(request: pb.SendRequest) -> SendCommand:
    return SendCommand(
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


def ack_to_pb(ack: Ack) -> pb.SendReply:
    return pb.SendReply(client_msg_id=ack.client_msg_id, msg_id=ack.msg_id, conv=ack.conv, seq=ack.seq, ts=ack.ts)


def ack_from_pb(reply: pb.SendReply) -> Ack:
    return Ack(reply.client_msg_id, reply.msg_id, reply.conv, reply.seq, reply.ts)


def error_from_rpc(error: BaseException) -> GochatError:
    """The :class:`GochatError` an RPC failure stands for."""
    if isinstance(error, grpc.Call):
        for key, value in error.trailing_metadata() or ():
            if key == ERROR_METADATA_KEY:
                return GochatError.from_wire(str(value), error.details() or "")
        return GochatError(ErrorCode.UNAVAILABLE, f"logic unreachable: {error.code().name}")
    return GochatError(ErrorCode.UNAVAILABLE, f"logic call failed: {error!r}")


# Gateway side.


def _ignore_reply(reply: object) -> None:
    return None


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


_STREAM_END = object()
"""Put in a stream's request or answer queue: nothing more follows."""


@dataclass
class _PendingCall:
    """A call sent on a ``Calls`` stream, waiting for its answer."""

    result: Deferred[Any]
    convert: Callable[[Any], Any]
    deadline: float


@dataclass
class _OpenStream:
    """One ``Calls`` RPC: the queue its request iterator reads, and the calls it carries."""

    requests: queue.SimpleQueue[object]
    rpc: Any = None
    pending: dict[int, _PendingCall] = field(default_factory=dict)
    lost: bool = False


class _CallStream:
    """A gateway's ``Calls`` stream: calls batched per reactor turn, answers matched by id.

    A call is queued and, at the end of the reactor turn, leaves with every
    other call of that turn in one ``CallBatch`` (at most *max_batch* calls a
    batch). One reader thread hands each ``ResultBatch`` to the reactor.

    The stream is opened by the first call and reopened by the first call
    after it was lost. Losing it (logic stopped or unreachable) fails every
    call it carried with ``unavailable``: a send may or may not have been
    stored, and the client's retry with the same client message id finds
    out without storing it twice. A call not answered within *timeout*
    seconds fails the same way.

    *reactor* provides ``IReactorTime`` and ``IReactorFromThreads``.
    """

    def __init__(self, stub: pb_grpc.LogicStub, reactor: Any, timeout: float, max_batch: int = 1000) -> None:
        self._stub = stub
        self._reactor = reactor
        self._timeout = timeout
        self._max_batch = max_batch
        self._next_id = 0
        self._outbox: list[tuple[pb.StreamCall, _PendingCall]] = []
        self._flush_call: Any = None
        self._sweep_call: Any = None
        self._current: _OpenStream | None = None
        self._closed = False
        self.batches_sent = 0

    def call(self, convert: Callable[[Any], T], **request: Any) -> Deferred[T]:
        """Queue one call (``send=SendRequest`` or ``record_received=...``); fires with its converted reply."""
        if self._closed:
            return fail(GochatError(ErrorCode.UNAVAILABLE, "the logic client is closed"))
        self._next_id += 1
        pending = _PendingCall(Deferred(), convert, self._reactor.seconds() + self._timeout)
        self._outbox.append((pb.StreamCall(call_id=self._next_id, **request), pending))
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)
        result: Deferred[T] = pending.result
        return result

    def _flush(self) -> None:
        self._flush_call = None
        outbox, self._outbox = self._outbox, []
        if not outbox:
            return
        stream = self._current
        if stream is None:
            stream = self._current = self._open()
        for start in range(0, len(outbox), self._max_batch):
            chunk = outbox[start : start + self._max_batch]
            for item, pending in chunk:
                stream.pending[item.call_id] = pending
            stream.requests.put(pb.CallBatch(calls=[item for item, _ in chunk]))
            self.batches_sent += 1
        if self._sweep_call is None:
            self._sweep_call = self._reactor.callLater(1.0, self._sweep)

    def _open(self) -> _OpenStream:
        stream = _OpenStream(queue.SimpleQueue())

        def requests() -> Iterator[object]:
            while True:
                item = stream.requests.get()
                if item is _STREAM_END:
                    return
                yield item

        try:
            stream.rpc = self._stub.Calls(requests())
        except Exception as e:  # a closed channel refuses new calls synchronously
            stream.lost = True
            self._reactor.callLater(0, self._lost, stream, e)
            return stream
        threading.Thread(target=self._read, args=(stream,), name="logic-calls", daemon=True).start()
        return stream

    def _read(self, stream: _OpenStream) -> None:
        """The reader thread: every answer batch to the reactor, then the stream's end."""
        error: BaseException | None = None
        try:
            for batch in stream.rpc:
                self._reactor.callFromThread(self._answered, stream, batch)
        except grpc.RpcError as e:
            error = e
        self._reactor.callFromThread(self._lost, stream, error)

    def _answered(self, stream: _OpenStream, batch: pb.ResultBatch) -> None:
        pending = stream.pending
        for result in batch.results:
            call = pending.pop(result.call_id, None)
            if call is None:  # timed out already
                continue
            if result.error_code:
                call.result.errback(GochatError.from_wire(result.error_code, result.error_message))
                continue
            try:
                reply = call.convert(getattr(result, result.WhichOneof("reply") or "send"))
            except Exception:
                call.result.errback()
            else:
                call.result.callback(reply)

    def _lost(self, stream: _OpenStream, error: BaseException | None) -> None:
        stream.lost = True
        stream.requests.put(_STREAM_END)
        if self._current is stream:
            self._current = None
        pending, stream.pending = stream.pending, {}
        if pending and not self._closed:
            reason = error.code().name if isinstance(error, grpc.Call) else "ended by logic"
            _log.warn("logic call stream lost ({reason}); failing {n} calls in flight", reason=reason, n=len(pending))
        failure = error_from_rpc(error) if error is not None else GochatError(ErrorCode.UNAVAILABLE, "logic went away")
        for call in pending.values():
            call.result.errback(GochatError(ErrorCode.UNAVAILABLE, failure.message))

    def _sweep(self) -> None:
        """Fail calls overdue by the timeout; runs each second while any call waits."""
        self._sweep_call = None
        stream = self._current
        if stream is None or not stream.pending:
            return
        now = self._reactor.seconds()
        overdue = [call_id for call_id, call in stream.pending.items() if call.deadline <= now]
        for call_id in overdue:
            call = stream.pending.pop(call_id)
            call.result.errback(GochatError(ErrorCode.UNAVAILABLE, "logic did not answer in time; retry"))
        if stream.pending:
            self._sweep_call = self._reactor.callLater(1.0, self._sweep)

    def close(self) -> None:
        """Fail what is queued or waiting with ``unavailable`` and hang up."""
        self._closed = True
        for delayed in (self._flush_call, self._sweep_call):
            if delayed is not None and delayed.active():
                delayed.cancel()
        self._flush_call = self._sweep_call = None
        outbox, self._outbox = self._outbox, []
        for _, call in outbox:
            call.result.errback(GochatError(ErrorCode.UNAVAILABLE, "the logic client is closed"))
        stream, self._current = self._current, None
        if stream is not None:
            self._lost(stream, None)
            if stream.rpc is not None:
                stream.rpc.cancel()


class GrpcLogicClient:
    """:class:`~gochat.gateway.logic_client.ILogicClient` over a gRPC channel."""

    def __init__(self, target: str, reactor: Any, timeout: float = 10.0) -> None:
        """Talk to the logic process at *target*; *reactor* provides ``IReactorTime`` and ``IReactorFromThreads``."""
        self._channel = grpc.insecure_channel(target)
        self._stub = pb_grpc.LogicStub(self._channel)
        self._reactor = reactor
        self._timeout = timeout
        self._subscriptions: list[_StreamSubscription] = []
        self.calls = _CallStream(self._stub, reactor, timeout)

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
        return self.calls.call(ack_from_pb, send=send_to_pb(command))

    def sync(self, user_id: int, since: Mapping[str, int] | None, limit: int) -> Deferred[SyncResult]:
        request = pb.SyncRequest(user_id=user_id, since=dict(since or {}), has_since=since is not None, limit=limit)
        return self._call(self._stub.Sync, request, sync_from_pb)

    def record_received(self, user_id: int, conv: str, seq: int) -> Deferred[None]:
        request = pb.RecordReceivedRequest(user_id=user_id, conv=conv, seq=seq)
        return self.calls.call(_ignore_reply, record_received=request)

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
        self.calls.close()
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
        reactor: Any,
        max_queued_deliveries: int = 100_000,
        max_concurrent_sends: int = 248,
        max_stream_calls: int = 20_000,
    ) -> None:
        """Serve *logic*; *reactor* provides ``IReactorFromThreads`` and ``IReactorTime``.

        *max_concurrent_sends* caps the unary sends waiting for the store (each
        holds a worker thread); *max_stream_calls* caps the calls in flight on
        one ``Calls`` stream (they hold no thread, only memory).
        """
        self._logic = logic
        self._reactor = reactor
        self._max_stream_calls = max_stream_calls
        self._streams: set[_ServedStream] = set()
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
        command = send_from_pb(request)
        if not self._send_slots.acquire(blocking=False):
            context.set_trailing_metadata(((ERROR_METADATA_KEY, ErrorCode.UNAVAILABLE.value),))
            context.abort(grpc.StatusCode.UNAVAILABLE, "logic has too many sends waiting for the store; retry")
        try:
            ack = self._run(context, self._logic.send, command)
        finally:
            self._send_slots.release()
        return ack_to_pb(ack)

    def Calls(
        self, request_iterator: Iterator[pb.CallBatch], context: grpc.ServicerContext
    ) -> Iterator[pb.ResultBatch]:
        """Serve a gateway's ``Calls`` stream (see :class:`_ServedStream`) until either side hangs up."""
        stream = _ServedStream(self._logic, self._reactor, self._max_stream_calls)
        self._reactor.callFromThread(self._streams.add, stream)
        context.add_callback(stream.hung_up)
        context.add_callback(lambda: self._reactor.callFromThread(self._streams.discard, stream))
        reader = threading.Thread(target=stream.read, args=(request_iterator,), name="logic-calls-reader", daemon=True)
        reader.start()
        while True:
            batch = stream.answers.get()
            if batch is _STREAM_END:
                return
            assert isinstance(batch, pb.ResultBatch)
            yield batch

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

    def finish_streams(self) -> None:
        """Logic is stopping: every ``Calls`` stream answers what it started, refuses the rest, and ends.

        Called on the reactor thread before the server's grace period, so
        that stopping waits for the calls in flight, not for the whole grace.
        """
        for stream in list(self._streams):
            stream.finish()

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


class _ServedStream:
    """Logic's end of one ``Calls`` stream.

    A reader thread hands each ``CallBatch`` to the reactor, which starts
    every call in it at once; the answers that complete during one reactor
    turn leave as one ``ResultBatch`` through :attr:`answers`, which the
    RPC's own worker thread writes to the stream. When the gateway ends its
    side, the calls already started are still answered, then the stream
    ends. More than *max_calls* calls in flight are refused with
    ``unavailable`` rather than queued without bound.
    """

    def __init__(self, logic: ChatLogic, reactor: Any, max_calls: int) -> None:
        self.answers: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._logic = logic
        self._reactor = reactor
        self._max_calls = max_calls
        self._in_flight = 0
        self._ready: list[pb.StreamResult] = []
        self._flush_call: Any = None
        self._requests_ended = False
        self._finishing = False
        self._hung_up = False

    def read(self, requests: Iterator[pb.CallBatch]) -> None:
        """The reader thread: every batch to the reactor, in order, then the end of the requests."""
        try:
            for batch in requests:
                self._reactor.callFromThread(self._dispatch, batch)
        except Exception:  # the RPC was cancelled or failed; hung_up tells the rest
            pass
        self._reactor.callFromThread(self._ended)

    def hung_up(self) -> None:
        """The RPC is over (either side, any reason): stop the answer loop; later answers go nowhere."""
        self._hung_up = True
        self.answers.put(_STREAM_END)

    def finish(self) -> None:
        """Answer the calls started, refuse later ones with ``unavailable``, then end the stream."""
        self._finishing = True
        self._ended()

    def _dispatch(self, batch: pb.CallBatch) -> None:
        for call in batch.calls:
            which = call.WhichOneof("request")
            if self._finishing:
                self._refuse(call.call_id, GochatError(ErrorCode.UNAVAILABLE, "this logic process is stopping; retry"))
                continue
            if self._in_flight >= self._max_calls:
                self._refuse(call.call_id, GochatError(ErrorCode.UNAVAILABLE, "logic is too busy; retry"))
                continue
            if which == "send":
                d: Deferred[Any] = maybeDeferred(self._logic.send, send_from_pb(call.send))
            elif which == "record_received":
                r = call.record_received
                d = maybeDeferred(self._logic.record_received, r.user_id, r.conv, r.seq)
            else:
                self._refuse(call.call_id, GochatError(ErrorCode.BAD_REQUEST, f"unknown call {which!r}"))
                continue
            self._in_flight += 1
            d.addCallbacks(self._done, self._failed, callbackArgs=(call.call_id, which), errbackArgs=(call.call_id,))

    def _done(self, reply: Any, call_id: int, which: str) -> None:
        self._in_flight -= 1
        if which == "send":
            self._answer(pb.StreamResult(call_id=call_id, send=ack_to_pb(reply)))
        else:
            self._answer(pb.StreamResult(call_id=call_id, record_received=pb.RecordReceivedReply()))

    def _failed(self, failure: Failure, call_id: int) -> None:
        self._in_flight -= 1
        error = failure.value
        if not isinstance(error, GochatError):
            _log.failure("stream call failed", failure)
            error = GochatError(ErrorCode.INTERNAL, "internal error")
        self._refuse(call_id, error)

    def _refuse(self, call_id: int, error: GochatError) -> None:
        self._answer(pb.StreamResult(call_id=call_id, error_code=error.code.value, error_message=error.message))

    def _answer(self, result: pb.StreamResult) -> None:
        self._ready.append(result)
        if self._flush_call is None:
            self._flush_call = self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        ready, self._ready = self._ready, []
        if ready and not self._hung_up:
            self.answers.put(pb.ResultBatch(results=ready))
        self._end_if_done()

    def _ended(self) -> None:
        self._requests_ended = True
        self._end_if_done()

    def _end_if_done(self) -> None:
        if self._requests_ended and not self._in_flight and not self._ready:
            self._requests_ended = False  # end once
            self.answers.put(_STREAM_END)


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
        self._servicer.finish_streams()
        stopped = server.stop(grace=5.0)
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), stopped.wait)
