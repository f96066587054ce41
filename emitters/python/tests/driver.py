"""A line-driven emitter for the end-to-end tests (tests/e2e/test/emitters.test.js): connects to
NATS, then runs one JSON request per stdin line and answers one JSON line each on stdout.

    python tests/driver.py NATS_URL USER PASSWORD PREFIX RECOVERY_JSON

A request: ``{"id", "verb", "ns", "recovery"?, "to"?, "except"?, "volatile"?, "compress"?,
"event"?, "args"?, "rooms"?, "close"?}``; binary arguments as ``{"$bin": base64}``. An answer:
``{"id", "ok": true}`` or ``{"id", "error": "..."}``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any, Dict, List

import nats

from switchboard_emitter import BroadcastOperator, Emitter
from vectors import revive


async def run(emitter: Emitter, req: Dict[str, Any]) -> None:
    ns = emitter.of(req["ns"], recovery=req.get("recovery"))
    op: BroadcastOperator = ns
    for room in req.get("to", []):
        op = op.to(room)
    if req.get("except"):
        op = op.except_(req["except"])
    if req.get("volatile"):
        op = op.volatile
    if req.get("compress") is False:
        op = op.compress(False)
    verb = req["verb"]
    args: List[Any] = revive(req.get("args", []))
    if verb == "emit":
        await op.emit(req["event"], *args)
    elif verb == "sockets_join":
        await op.sockets_join(req["rooms"])
    elif verb == "sockets_leave":
        await op.sockets_leave(req["rooms"])
    elif verb == "disconnect_sockets":
        await op.disconnect_sockets(bool(req.get("close")))
    elif verb == "server_side_emit":
        await ns.server_side_emit(req["event"], *args)
    else:
        raise ValueError(f"unknown verb {verb!r}")
    await emitter.flush()


async def main() -> None:
    url, user, password, prefix, recovery = sys.argv[1:6]
    nc = await nats.connect(url, user=user or None, password=password or None, name="e2e-python-emitter")
    emitter = Emitter(nc, prefix, origin="python", recovery=json.loads(recovery))
    loop = asyncio.get_running_loop()
    print(json.dumps({"ready": True}), flush=True)
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        req = json.loads(line)
        try:
            await run(emitter, req)
            answer: Dict[str, Any] = {"id": req["id"], "ok": True}
        except Exception as e:  # reported to the test, which asserts on it
            answer = {"id": req["id"], "error": f"{type(e).__name__}: {e}"}
        print(json.dumps(answer), flush=True)
    await nc.drain()


if __name__ == "__main__":
    asyncio.run(main())
