"""A webhook receiver: a tiny HTTP server (stdlib, its own thread) recording every JSON POST."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .servers import HOST


class WebhookReceiver:
    """Answers 204 to every POST and keeps its JSON body in `received` (thread-safe)."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        lock = threading.Lock()
        self.received = received
        self._lock = lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with lock:
                    received.append(body)
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test prints what it received when it fails

        self._server = ThreadingHTTPServer((HOST, 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://{HOST}:{self._server.server_address[1]}/hooks/breaker"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def notices(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.received)
