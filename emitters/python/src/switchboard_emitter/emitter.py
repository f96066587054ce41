"""``Emitter``: emit to a Switchboard cluster's Socket.IO clients through its NATS bus, with the verbs
of socket.io's redis emitter (README.md says how)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union

from . import _wire as wire

#: The name an emitter publishes as unless told otherwise.
DEFAULT_ORIGIN = "emitter"

Rooms = Union[str, Iterable[str]]


class JetStream(Protocol):
    """What the emitter needs of a JetStream context (``nats.js.JetStreamContext``)."""

    async def publish(self, subject: str, payload: bytes = b"") -> object: ...


class Connection(Protocol):
    """What the emitter needs of a NATS connection (``nats.aio.client.Client``)."""

    async def publish(self, subject: str, payload: bytes = b"") -> None: ...

    def jetstream(self) -> Any: ...

    async def flush(self) -> None: ...

    @property
    def max_payload(self) -> int: ...


class MessageTooLarge(ValueError):
    """An encoded message is longer than the NATS server's max_payload (the emitter does not split
    messages)."""


def _namespace(nsp: str) -> str:
    if not isinstance(nsp, str):
        raise TypeError(f"namespace must be a str, got {type(nsp).__name__}")
    ns = nsp if nsp.startswith("/") else f"/{nsp}"
    if "," in ns:
        raise ValueError(f'invalid namespace {ns!r}: a namespace cannot contain ","')
    return wire.bounded(ns, "namespace")


def _rooms(rooms: Rooms) -> Tuple[str, ...]:
    items = [rooms] if isinstance(rooms, str) else list(rooms)
    return tuple(wire.bounded(r, "room") for r in items)


def _check_event(event: str) -> None:
    if not isinstance(event, str):
        raise TypeError(f"event name must be a str, got {type(event).__name__}")
    if event in wire.RESERVED_EVENTS:
        raise ValueError(f'"{event}" is a reserved event name')


def _unique(names: Iterable[str]) -> Tuple[str, ...]:
    return tuple(dict.fromkeys(names))


def _target(rooms: Sequence[str], except_rooms: Sequence[str]) -> wire.Target:
    """Socket ids apart from rooms (``wire.is_socket_id``), each name once."""
    return wire.Target(
        rooms=_unique(r for r in rooms if not wire.is_socket_id(r)),
        except_rooms=_unique(r for r in except_rooms if not wire.is_socket_id(r)),
        except_sockets=_unique(r for r in except_rooms if wire.is_socket_id(r)),
        socket_ids=_unique(r for r in rooms if wire.is_socket_id(r)),
    )


@dataclass(frozen=True)
class _Route:
    subject: str
    jetstream: bool
    target: wire.Target


def _route(
    subjects: wire.Subjects, ns: str, t: wire.Target, volatile: bool, recovery: bool
) -> List[_Route]:
    """Where an emit goes, as the gateways route their own. Logged (a recovery namespace, not
    volatile): one room's, one socket's or the namespace's log subject. Else socket ids only: each
    owner's node subject; one room: the room's subject; anything else: the namespace's."""
    if recovery and not volatile:
        if len(t.rooms) == 1 and not t.socket_ids:
            subject = subjects.log_room(ns, t.rooms[0])
        elif not t.rooms and len(t.socket_ids) == 1:
            subject = subjects.log_socket(ns, t.socket_ids[0])
        else:
            subject = subjects.log_namespace(ns)
        return [_Route(subject, True, t)]
    if not t.rooms and t.socket_ids:
        owners: Dict[str, List[str]] = {}
        for sid in t.socket_ids:
            owners.setdefault(sid.split(".", 1)[0], []).append(sid)
        return [
            _Route(
                subjects.node(owner),
                False,
                wire.Target(
                    except_rooms=t.except_rooms,
                    except_sockets=t.except_sockets,
                    socket_ids=tuple(ids),
                ),
            )
            for owner, ids in owners.items()
        ]
    subject = subjects.room(ns, t.rooms[0]) if len(t.rooms) == 1 else subjects.namespace(ns)
    return [_Route(subject, False, t)]


class _Bus:
    """What every operator of one emitter shares."""

    def __init__(
        self, nc: Connection, prefix: str, origin: str, recovery: Iterable[str]
    ) -> None:
        if not isinstance(origin, str):
            raise TypeError("origin must be a str")
        self.nc = nc
        self.subjects = wire.Subjects(prefix)
        self.origin = origin
        self.recovery = frozenset(_namespace(ns) for ns in recovery)
        self.js: Optional[Any] = None

    async def publish(self, messages: Sequence[Tuple[str, bytes, bool]]) -> None:
        """Publishes every message or none: all are measured first. A JetStream publish returns
        once the log stored it and raises when it did not."""
        limit = self.nc.max_payload
        for _, payload, _ in messages:
            if len(payload) > limit:
                raise MessageTooLarge(
                    f"message too large: {len(payload)} bytes, the bus takes at most {limit} "
                    "(NATS max_payload)"
                )
        for subject, payload, jetstream in messages:
            if jetstream:
                if self.js is None:
                    self.js = self.nc.jetstream()
                await self.js.publish(subject, payload)
            else:
                await self.nc.publish(subject, payload)


class BroadcastOperator:
    """A selection of sockets (rooms, exceptions) and flags (volatile, compress) in one
    namespace."""

    def __init__(
        self,
        bus: _Bus,
        ns: str,
        recovery: bool,
        rooms: Tuple[str, ...] = (),
        except_rooms: Tuple[str, ...] = (),
        volatile: bool = False,
        compress: bool = True,
    ) -> None:
        self._bus = bus
        self._ns = ns
        self._recovery = recovery
        self._rooms = rooms
        self._except = except_rooms
        self._volatile = volatile
        self._compress = compress

    def _with(
        self,
        rooms: Tuple[str, ...] = (),
        except_rooms: Tuple[str, ...] = (),
        volatile: Optional[bool] = None,
        compress: Optional[bool] = None,
    ) -> BroadcastOperator:
        """A copy with more rooms or exceptions, or other flags."""
        return BroadcastOperator(
            self._bus,
            self._ns,
            self._recovery,
            self._rooms + rooms,
            self._except + except_rooms,
            self._volatile if volatile is None else volatile,
            self._compress if compress is None else compress,
        )

    def to(self, rooms: Rooms) -> BroadcastOperator:
        """Targets a room or a socket id (or several); the union of every ``to``."""
        return self._with(rooms=_rooms(rooms))

    def in_(self, rooms: Rooms) -> BroadcastOperator:
        """Same as ``to``."""
        return self.to(rooms)

    def except_(self, rooms: Rooms) -> BroadcastOperator:
        """Leaves out the members of a room, or a socket (or several)."""
        return self._with(except_rooms=_rooms(rooms))

    @property
    def volatile(self) -> BroadcastOperator:
        """The emit may be dropped for clients that are not ready; never logged for recovery."""
        return self._with(volatile=True)

    def compress(self, compress: bool) -> BroadcastOperator:
        """Whether the gateways may compress the emit (permessage-deflate, gzip of a polling
        response), as socket.io's ``compress(bool)``; default ``True``. ``compress(False)``:
        sent uncompressed."""
        return self._with(compress=bool(compress))

    async def emit(self, event: str, *args: Any) -> None:
        """Emits to the selected clients; bytes, bytearray and memoryview values anywhere in
        ``args`` travel as binary attachments."""
        _check_event(event)
        packet, attachments = wire.event_frame(self._ns, event, args)
        target = _target(self._rooms, self._except)
        routes = _route(self._bus.subjects, self._ns, target, self._volatile, self._recovery)
        await self._bus.publish(
            [
                (
                    r.subject,
                    wire.encode_delivery(
                        self._bus.origin,
                        self._ns,
                        r.target,
                        packet,
                        attachments,
                        self._volatile,
                        uncompressed=not self._compress,
                    ),
                    r.jetstream,
                )
                for r in routes
            ]
        )

    async def sockets_join(self, rooms: Rooms) -> None:
        """Makes the selected sockets join ``rooms``."""
        await self._command(wire.Join(_rooms(rooms)))

    async def sockets_leave(self, rooms: Rooms) -> None:
        """Makes the selected sockets leave ``rooms``."""
        await self._command(wire.Leave(_rooms(rooms)))

    async def disconnect_sockets(self, close: bool = False) -> None:
        """Disconnects the selected sockets from the namespace; with ``close``, closes their whole
        connection."""
        await self._command(wire.Disconnect(bool(close)))

    async def _command(self, action: wire.Action) -> None:
        payload = wire.encode_command(
            self._bus.origin, self._ns, _target(self._rooms, self._except), action
        )
        await self._bus.publish([(self._bus.subjects.command_namespace(self._ns), payload, False)])


class Emitter(BroadcastOperator):
    """Emits to a Switchboard cluster's clients through its NATS bus::

        emitter = Emitter(nc, prefix="sio", recovery=["/chat"])
        await emitter.of("/chat").to("room").except_("muted").emit("news", {"text": "hi"})

    ``nc`` is a connected ``nats.aio.client.Client`` (the ``emitter`` NATS user); ``prefix`` the
    cluster's subject prefix; ``origin`` the name this service publishes as; ``recovery`` the
    namespaces that have ``[namespace.recovery]`` in the gateways' configuration (their emits go
    into the recovery log: this must match the gateways)."""

    def __init__(
        self,
        nc: Connection,
        prefix: str = "sio",
        *,
        origin: str = DEFAULT_ORIGIN,
        recovery: Iterable[str] = (),
        nsp: str = "/",
        _bus: Optional[_Bus] = None,
        _recovery: Optional[bool] = None,
    ) -> None:
        bus = _bus if _bus is not None else _Bus(nc, prefix, origin, recovery)
        ns = _namespace(nsp)
        super().__init__(bus, ns, bus.recovery.__contains__(ns) if _recovery is None else _recovery)

    @property
    def nsp(self) -> str:
        """The namespace this emitter targets, with its leading ``/``."""
        return self._ns

    def of(self, nsp: str, *, recovery: Optional[bool] = None) -> Emitter:
        """The same emitter for another namespace; ``recovery`` overrides the option for it."""
        return Emitter(self._bus.nc, nsp=nsp, _bus=self._bus, _recovery=recovery)

    async def server_side_emit(self, event: str, *args: Any) -> None:
        """Emits an event to the namespace's backends (subscribers of
        ``{prefix}.srv.{ns}.{event}``), never to clients. No acknowledgements."""
        _check_event(event)
        attachments: List[bytes] = []
        data = wire.deconstruct(list(args), attachments)
        payload = wire.encode_server_side_emit(
            self._bus.origin, self._ns, event, wire.json_text(data), attachments
        )
        await self._bus.publish([(self._bus.subjects.server(self._ns, event), payload, False)])

    async def flush(self) -> None:
        """Returns once the NATS server has everything published so far (a round trip)."""
        await self._bus.nc.flush()
