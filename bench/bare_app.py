"""A bare granian app answering every request with the bytes of one file, nothing else: the ceiling a
Python app on granian reaches on this machine (one process, the same server settings as `serve`).
status_bench.py measures it beside mediarelay and nginx, so the figures show how much of the gap to nginx
is the app and how much is Python and the server interface.

    .venv/bin/python bench/bare_app.py FILE PORT [rsgi|asgi]
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from granian.constants import HTTPModes, Interfaces
from granian.server.embed import Server

BODY = Path(sys.argv[1]).read_bytes()
STR_HEADERS = [("content-type", "application/json")]
BYTE_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def rsgi(scope: Any, proto: Any) -> None:
    proto.response_bytes(200, STR_HEADERS, BODY)


async def asgi(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    await send({"type": "http.response.start", "status": 200, "headers": BYTE_HEADERS})
    await send({"type": "http.response.body", "body": BODY})


def main() -> None:
    kind = sys.argv[3] if len(sys.argv) > 3 else "rsgi"
    server = Server(
        rsgi if kind == "rsgi" else asgi,
        port=int(sys.argv[2]),
        interface=Interfaces.RSGI if kind == "rsgi" else Interfaces.ASGI,
        http=HTTPModes.http1,
        backlog=2048,
        log_enabled=False,
    )
    asyncio.run(server.serve())


if __name__ == "__main__":
    main()
