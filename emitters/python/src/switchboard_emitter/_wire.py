"""The bus contract as the emitter writes it, with no I/O: NATS subjects (a port of the Switchboard
repository's proto/src/subject.rs), Socket.IO frames (as the gateways' encoder writes them) and the
few protobuf messages of proto/proto/bus.proto an emitter sends. Checked byte for byte against
emitters/vectors.json, which the Rust code produces (tests/test_wire.py)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, List, Mapping, Sequence, Tuple, Union

#: Longest namespace, room or event name a subject takes, in UTF-8 bytes.
MAX_NAME_BYTES = 256

#: Event names Socket.IO keeps for itself (proto/src/lib.rs RESERVED_EVENTS).
RESERVED_EVENTS = frozenset(
    {"connect", "connect_error", "disconnect", "disconnecting", "newListener", "removeListener"}
)

_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_PREFIX = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*")
_SOCKET_ID = re.compile(r"[a-z0-9]{1,32}\.[A-Za-z0-9_-]{16}")

Binary = Union[bytes, bytearray, memoryview]


def escape(name: str) -> str:
    """One NATS subject token for any name, injectively: ASCII letters, digits and ``-`` kept,
    every other byte of the UTF-8 encoding as ``_`` and two uppercase hex digits, ``""`` as ``_``."""
    if name == "":
        return "_"
    return "".join(chr(b) if b in _LITERAL else f"_{b:02X}" for b in name.encode("utf-8"))


def bounded(name: object, what: str = "name") -> str:
    """``name`` if a subject takes it (a str of at most MAX_NAME_BYTES UTF-8 bytes); else raises."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ValueError(f"{what} too long for a subject: {size} bytes (at most {MAX_NAME_BYTES})")
    return name


class Subjects:
    """The subjects of one cluster, as proto/src/subject.rs ``Subjects`` builds them."""

    def __init__(self, prefix: str = "sio") -> None:
        if (
            not isinstance(prefix, str)
            or not _PREFIX.fullmatch(prefix)
            or len(prefix) > 128
            or prefix.split(".")[0] == "_INBOX"
        ):
            raise ValueError(
                f"invalid subject prefix {prefix!r}: expected dot-separated tokens of "
                "A-Z a-z 0-9 _ -, at most 128 bytes"
            )
        self.prefix = prefix

    def _build(self, kind: Sequence[str], names: Sequence[str], suffix: Sequence[str] = ()) -> str:
        for n in names:
            bounded(n)
        return ".".join([self.prefix, *kind, *(escape(n) for n in names), *suffix])

    def room(self, ns: str, room: str) -> str:
        return self._build(["room"], [ns, room])

    def namespace(self, ns: str) -> str:
        return self._build(["ns"], [ns])

    def node(self, node: str) -> str:
        return self._build(["node"], [node])

    def command_namespace(self, ns: str) -> str:
        return self._build(["cmd", "ns"], [ns])

    def server(self, ns: str, event: str) -> str:
        return self._build(["srv"], [ns, event])

    def log_room(self, ns: str, room: str) -> str:
        return f"{self._build(['log'], [ns], ['r'])}.{escape(bounded(room))}"

    def log_namespace(self, ns: str) -> str:
        return self._build(["log"], [ns], ["n"])

    def log_socket(self, ns: str, socket_id: str) -> str:
        return f"{self._build(['log'], [ns], ['s'])}.{escape(bounded(socket_id))}"

    def log_stream(self) -> str:
        """The JetStream stream of the recovery log: the prefix with ``.`` as ``_``, then ``_log``."""
        return f"{self.prefix.replace('.', '_')}_log"


def is_socket_id(name: str) -> bool:
    """Whether a name given to ``to()`` / ``except_()`` is a socket id rather than a room: the shape
    every gateway issues, ``{node}.{random}`` (node: 1 to 32 of a-z 0-9; random: 16 URL-safe
    base64)."""
    return _SOCKET_ID.fullmatch(name) is not None


# ---- Socket.IO frames ----------------------------------------------------------------------------


def deconstruct(value: Any, out: List[bytes]) -> Any:
    """``value`` with every bytes-like value replaced by its placeholder
    ``{"_placeholder": true, "num": N}`` and appended to ``out``, in socket.io-parser's order (lists
    in order, dicts in key order)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        out.append(bytes(value))
        return {"_placeholder": True, "num": len(out) - 1}
    if isinstance(value, (list, tuple)):
        return [deconstruct(v, out) for v in value]
    if isinstance(value, Mapping):
        return {k: deconstruct(v, out) for k, v in value.items()}
    return value


def json_text(value: Any) -> str:
    """Compact JSON as JavaScript's ``JSON.stringify`` writes it (non-ASCII kept, no NaN)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def event_frame(ns: str, event: str, args: Sequence[Any]) -> Tuple[bytes, List[bytes]]:
    """The Engine.IO text frame of a Socket.IO EVENT as clients receive it, and its attachments:
    ``42/chat,["ev",...]``, ``451-/chat,["ev",{"_placeholder":true,"num":0}]``, ``42["ev"]`` in
    ``/``."""
    attachments: List[bytes] = []
    data = deconstruct([event, *args], attachments)
    nsp = "" if ns == "/" else f"{ns},"
    head = f"45{len(attachments)}-" if attachments else "42"
    return f"{head}{nsp}{json_text(data)}".encode("utf-8"), attachments


# ---- protobuf (proto3: defaults are not written, fields in number order) ------------------------


@dataclass(frozen=True)
class Target:
    """Which sockets: members of ``rooms`` and ``socket_ids``, minus ``except_rooms`` and
    ``except_sockets`` (bus.proto ``Target``)."""

    rooms: Tuple[str, ...] = ()
    except_rooms: Tuple[str, ...] = ()
    except_sockets: Tuple[str, ...] = ()
    socket_ids: Tuple[str, ...] = ()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _len_field(num: int, data: bytes) -> bytes:
    """A length-delimited field, written even when empty (repeated elements, sub-messages)."""
    return _varint((num << 3) | 2) + _varint(len(data)) + data


def _opt(num: int, data: Union[str, bytes]) -> bytes:
    """A string or bytes field: left out when empty."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return _len_field(num, raw) if raw else b""


def _bool(num: int, value: bool) -> bytes:
    return bytes([num << 3, 1]) if value else b""


def _repeated(num: int, items: Sequence[Union[str, bytes]]) -> bytes:
    return b"".join(_len_field(num, i.encode("utf-8") if isinstance(i, str) else i) for i in items)


def encode_target(t: Target) -> bytes:
    return (
        _repeated(1, t.rooms)
        + _repeated(2, t.except_rooms)
        + _repeated(3, t.except_sockets)
        + _repeated(4, t.socket_ids)
    )


def encode_delivery(
    origin: str,
    ns: str,
    target: Target,
    packet: bytes,
    attachments: Sequence[bytes],
    volatile: bool,
    uncompressed: bool = False,
) -> bytes:
    """``Envelope{delivery: Delivery{origin, ns, target, packet, attachments, volatile,
    uncompressed = 8}}``."""
    delivery = (
        _opt(1, origin)
        + _opt(2, ns)
        + _len_field(3, encode_target(target))
        + _opt(4, packet)
        + _repeated(5, attachments)
        + _bool(6, volatile)
        + _bool(8, uncompressed)
    )
    return _len_field(1, delivery)


@dataclass(frozen=True)
class Join:
    rooms: Tuple[str, ...]


@dataclass(frozen=True)
class Leave:
    rooms: Tuple[str, ...]


@dataclass(frozen=True)
class Disconnect:
    close: bool = False


Action = Union[Join, Leave, Disconnect]


def encode_command(origin: str, ns: str, target: Target, action: Action) -> bytes:
    """``Envelope{command: Command{origin, ns, target, join | leave | disconnect}}``."""
    if isinstance(action, Join):
        body = _len_field(10, _repeated(1, action.rooms))
    elif isinstance(action, Leave):
        body = _len_field(11, _repeated(1, action.rooms))
    else:
        body = _len_field(12, _bool(1, action.close))
    command = _opt(1, origin) + _opt(2, ns) + _len_field(3, encode_target(target)) + body
    return _len_field(2, command)


def encode_server_side_emit(
    origin: str, ns: str, event: str, args_json: str, attachments: Sequence[bytes]
) -> bytes:
    """``ServerSideEmit{origin, ns, event, args_json, attachments}``."""
    return (
        _opt(1, origin)
        + _opt(2, ns)
        + _opt(3, event)
        + _opt(4, args_json)
        + _repeated(5, attachments)
    )
