"""A server that fails on purpose, for the failure paths of helpers/ that need a real HTTP server.

It answers nothing itself: every request goes unchanged to a real server (in tests, the local server with the
tiny model), except one route, which gets an OpenAI-shaped error. Failures that need no server of their own
(429, 500, an HTML page, broken JSON, timeouts) are tested with an httpx2.MockTransport in test_live_calls.py.
"""
from __future__ import annotations

import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import httpx2

HOP_BY_HOP = {"host", "content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


@contextlib.contextmanager
def refusing(upstream_base_url: str, method: str, path: str, status: int, error: dict):
    """Yield a base URL (…/v1) that forwards to upstream_base_url but answers `method path` with status and error."""
    upstream = urlsplit(upstream_base_url)
    client = httpx2.Client(timeout=120)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def handle_one(self):
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            if (self.command, urlsplit(self.path).path) == (method, path):
                code, headers = status, {"content-type": "application/json"}
                content = json.dumps({"error": error}, ensure_ascii=False).encode()
            else:
                answer = client.request(self.command, f"{upstream.scheme}://{upstream.netloc}{self.path}",
                                        content=body, headers={k: v for k, v in self.headers.items()
                                                               if k.lower() not in HOP_BY_HOP})
                code, headers, content = answer.status_code, answer.headers, answer.content
            self.send_response(code)
            for key, value in headers.items():
                if key.lower() not in HOP_BY_HOP | {"date", "server"}:
                    self.send_header(key, value)
            self.send_header("content-length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        do_GET = do_POST = do_DELETE = handle_one

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{upstream.path}"
    finally:
        server.shutdown()
        server.server_close()
        client.close()
