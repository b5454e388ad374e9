"""An app that answers with its process id: served by servicekit.serve in test_serve_workers.py."""

from __future__ import annotations

import os
import time
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    # Blocks this worker's loop on purpose: while it is busy, the next connection is accepted
    # by another worker, so a handful of requests reaches every worker.
    time.sleep(0.02)
    body = str(os.getpid()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app() -> Any:
    return app
