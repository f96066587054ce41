"""``mypy --strict`` over the package and its tests (mypy is the ``test`` extra: install it, this
test fails without it rather than passing unchecked). The usage below must type-check with the
real ``nats`` client; the marked lines must not."""

from __future__ import annotations

import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


async def usage() -> None:  # type-checked, never run
    import nats

    from switchboard_emitter import Emitter

    nc = await nats.connect("nats://127.0.0.1:4222", user="emitter", password="secret")
    emitter = Emitter(nc, "sio", origin="billing", recovery=["/chat"])
    chat = emitter.of("/chat")
    await chat.to("room").to(["a", "b"]).in_("c").except_("muted").volatile.compress(False).emit(
        "news", {"text": "hi"}, b"\x01", bytearray(2)
    )
    await chat.to("r").sockets_join("vip")
    await chat.sockets_leave(["a", "b"])
    await chat.in_("spam").disconnect_sockets(close=True)
    await chat.server_side_emit("cache.flush", 1)
    await emitter.of("/x", recovery=False).flush()


class Types(unittest.TestCase):
    def test_mypy_strict(self) -> None:
        try:
            from mypy import api
        except ImportError:  # pragma: no cover
            self.fail("mypy is not installed: pip install -e 'emitters/python[test]'")
        out, err, status = api.run(
            ["--strict", "--no-incremental", str(ROOT / "src"), str(ROOT / "tests")]
        )
        self.assertEqual(status, 0, out + err)

    def test_mypy_catches_a_misuse(self) -> None:
        from mypy import api

        bad = "from switchboard_emitter import Emitter\n" "async def f(e: Emitter) -> None:\n" "    await e.to(42).emit('x')\n"
        out, err, status = api.run(["--strict", "--no-incremental", "-c", bad])
        self.assertNotEqual(status, 0, "mypy accepted to(42)")
        self.assertIn("to", out)
