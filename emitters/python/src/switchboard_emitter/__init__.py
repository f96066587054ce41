"""switchboard-emitter: emit to the Socket.IO clients of a Switchboard cluster from any Python
service, over the cluster's NATS bus, with the verbs of socket.io's redis emitter."""

from ._wire import MAX_NAME_BYTES, RESERVED_EVENTS
from .emitter import BroadcastOperator, Connection, Emitter, MessageTooLarge

__all__ = [
    "MAX_NAME_BYTES",
    "RESERVED_EVENTS",
    "BroadcastOperator",
    "Connection",
    "Emitter",
    "MessageTooLarge",
]
