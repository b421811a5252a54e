"""A fake QMP peer for unit tests of QMP *logic* (never of QEMU's behaviour).

Run as a script it plays a QEMU process just far enough for the machine logic: it serves QMP
on ``<workdir>/qmp.sock`` (its argv contains that path, which is what re-adoption checks) and
on ``system_powerdown`` or ``quit`` writes the guest's exit line to the console and exits.
Integration tests against real QEMU live in test_qemu.py.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

GREETING = {
    "QMP": {
        "version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": ""},
        "capabilities": [],
    }
}


class FakeQmp:
    """Answers QMP commands from a table; records what it was asked."""

    def __init__(self, replies: dict[str, Any], console: Path | None = None) -> None:
        self.replies = replies
        self.console = console
        self.received: list[str] = []
        self.done = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(json.dumps(GREETING).encode() + b"\r\n")
        await writer.drain()
        # Clients do not end messages with a newline: decode JSON objects off a buffer.
        decoder = json.JSONDecoder()
        buffer = ""
        while chunk := await reader.read(4096):
            buffer += chunk.decode()
            while buffer.strip():
                try:
                    msg, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                await self._answer(msg, writer)
        writer.close()

    async def _answer(self, msg: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        name = msg.get("execute")
        self.received.append(name)
        reply: dict[str, Any]
        if name == "qmp_capabilities":
            reply = {"return": {}}
        elif name in self.replies:
            reply = {"return": self.replies[name]}
        else:
            reply = {
                "error": {
                    "class": "CommandNotFound",
                    "desc": f"The command {name} has not been found",
                }
            }
        if "id" in msg:
            reply["id"] = msg["id"]
        writer.write(json.dumps(reply).encode() + b"\r\n")
        await writer.drain()
        if name in ("system_powerdown", "quit"):
            if self.console is not None:
                with self.console.open("a") as fh:
                    fh.write('ukedge-exit: {"status": 143}\r\n')
            self.done.set()


async def serve(workdir: Path, replies: dict[str, Any]) -> None:
    fake = FakeQmp(replies, workdir / "console.log")
    server = await asyncio.start_unix_server(fake.handle, path=str(workdir / "qmp.sock"))
    async with server:
        await fake.done.wait()
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    target = Path(sys.argv[1]).parent  # argv[1] is <workdir>/qmp.sock, like QEMU's -chardev
    chardevs = [{"label": "control", "filename": "unix:", "frontend-open": False}]
    asyncio.run(
        serve(
            target,
            {
                "query-status": {"status": "running", "running": True},
                "query-chardev": chardevs,
                "system_powerdown": {},
            },
        )
    )
