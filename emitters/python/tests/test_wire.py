"""The emitter against emitters/vectors.json (made by the Rust code the gateways run): subjects,
frames and protobuf bytes must match exactly. Publishing goes to a recording stand-in for the NATS
client; tests/e2e/test/emitters.test.js runs the real thing against a cluster."""

from __future__ import annotations

import base64
import json
import unittest
from pathlib import Path
from typing import Any, Dict, List

from switchboard_emitter import RESERVED_EVENTS, BroadcastOperator, Emitter, MessageTooLarge
from switchboard_emitter import _wire as wire
from vectors import revive

VECTORS: Dict[str, Any] = json.loads(
    (Path(__file__).resolve().parents[2] / "vectors.json").read_text(encoding="utf-8")
)


class Recorder:
    """A stand-in for a ``nats`` connection that records what is published."""

    def __init__(self, max_payload: int = 1024 * 1024, jetstream_fails: bool = False) -> None:
        self.out: List[Dict[str, Any]] = []
        self._max = max_payload
        self._fails = jetstream_fails

    @property
    def max_payload(self) -> int:
        return self._max

    async def publish(self, subject: str, payload: bytes = b"") -> None:
        self.out.append(self._record(subject, payload, False))

    def _record(self, subject: str, payload: bytes, js: bool) -> Dict[str, Any]:
        return {"subject": subject, "jetstream": js, "payload": base64.b64encode(payload).decode()}

    def jetstream(self) -> Any:
        recorder = self

        class JS:
            async def publish(self, subject: str, payload: bytes = b"") -> object:
                if recorder._fails:
                    raise RuntimeError("nats: no response from stream")
                recorder.out.append(recorder._record(subject, payload, True))
                return object()

        return JS()

    async def flush(self) -> None:
        pass


class Vectors(unittest.IsolatedAsyncioTestCase):
    def test_escapes(self) -> None:
        for v in VECTORS["escapes"]:
            self.assertEqual(wire.escape(v["name"]), v["token"], v["name"])

    def test_subjects_and_long_names(self) -> None:
        for v in VECTORS["subjects"]:
            s = wire.Subjects(v["prefix"])
            build = getattr(s, v["kind"])
            if "too_long" in v:
                with self.assertRaisesRegex(ValueError, f"{v['too_long']} bytes"):
                    build(*v["names"])
            else:
                self.assertEqual(build(*v["names"]), v["subject"], v["kind"])

    def test_reserved_events_are_the_servers(self) -> None:
        self.assertEqual(set(RESERVED_EVENTS), set(VECTORS["reserved_events"]))

    async def test_emits(self) -> None:
        for v in VECTORS["emits"]:
            packet, attachments = wire.event_frame(v["ns"], v["event"], revive(v["args"]))
            self.assertEqual(packet.decode("utf-8"), v["packet"], v["name"])
            self.assertEqual(
                [base64.b64encode(a).decode() for a in attachments], v["attachments"], v["name"]
            )
            nc = Recorder()
            emitter = Emitter(
                nc, v["prefix"], origin=v["origin"], recovery=[v["ns"]] if v["recovery"] else []
            )
            op: BroadcastOperator = emitter.of(v["ns"])
            for room in v["to"]:
                op = op.to(room)
            if v["except"]:
                op = op.except_(v["except"])
            if v["volatile"]:
                op = op.volatile
            if not v["compress"]:
                op = op.compress(False)
            await op.emit(v["event"], *revive(v["args"]))
            self.assertEqual(nc.out, v["publish"], v["name"])

    async def test_commands(self) -> None:
        for v in VECTORS["commands"]:
            nc = Recorder()
            op = Emitter(nc, v["prefix"], origin=v["origin"]).of(v["ns"]).to(v["to"])
            if v["except"]:
                op = op.except_(v["except"])
            action = v["action"]
            if "join" in action:
                await op.sockets_join(action["join"])
            elif "leave" in action:
                await op.sockets_leave(action["leave"])
            else:
                await op.disconnect_sockets(action["disconnect"])
            want = [{"subject": v["subject"], "jetstream": False, "payload": v["payload"]}]
            self.assertEqual(nc.out, want, v["name"])

    async def test_server_side_emits(self) -> None:
        for v in VECTORS["server_side_emits"]:
            nc = Recorder()
            emitter = Emitter(nc, v["prefix"], origin=v["origin"]).of(v["ns"])
            await emitter.server_side_emit(v["event"], *revive(v["args"]))
            want = [{"subject": v["subject"], "jetstream": False, "payload": v["payload"]}]
            self.assertEqual(nc.out, want, v["event"])

    async def test_refusals(self) -> None:
        nc = Recorder(max_payload=100)
        e = Emitter(nc)
        for ev in VECTORS["reserved_events"]:
            with self.assertRaisesRegex(ValueError, "reserved event name"):
                await e.emit(ev)
            with self.assertRaisesRegex(ValueError, "reserved event name"):
                await e.server_side_emit(ev)
        with self.assertRaisesRegex(ValueError, "too long"):
            e.to("x" * (VECTORS["max_name_bytes"] + 1))
        with self.assertRaisesRegex(ValueError, "cannot contain"):
            e.of("/a,b")
        with self.assertRaisesRegex(TypeError, "must be a str"):
            e.to([42])  # type: ignore[list-item]
        with self.assertRaisesRegex(MessageTooLarge, r"message too large: \d+ bytes, the bus takes at most 100"):
            await e.emit("big", "x" * 200)
        with self.assertRaisesRegex(ValueError, "too long"):
            await e.server_side_emit("x" * (VECTORS["max_name_bytes"] + 1))
        self.assertEqual(nc.out, [])
        with self.assertRaisesRegex(ValueError, "invalid subject prefix"):
            Emitter(nc, "a..b")
        self.assertEqual(Emitter(nc).of("chat").nsp, "/chat")

    async def test_a_logged_emit_raises_when_the_log_did_not_store_it(self) -> None:
        nc = Recorder(jetstream_fails=True)
        with self.assertRaisesRegex(RuntimeError, "no response"):
            await Emitter(nc, recovery=["/chat"]).of("/chat").emit("news")
        # ``of(ns, recovery=...)`` overrides the option both ways.
        await Emitter(nc, recovery=["/chat"]).of("/chat", recovery=False).emit("news")
        self.assertEqual([m["jetstream"] for m in nc.out], [False])


if __name__ == "__main__":
    unittest.main()
