"""A loopback HTTP proxy in front of an S3 emulator that injects faults:
500 InternalError, 503 SlowDown, 403 AccessDenied, a connection reset in
the middle of a request body, or a delay (`delay:SECONDS`, then forwarded). Rules are matched in order against each
request (method + path/query) and each fires a given number of times.

    proxy = FaultProxy(upstream="http://127.0.0.1:5000")
    proxy.add("PUT", "partNumber=", "reset", times=2)
    ... proxy.url ...
    proxy.close()
"""

from __future__ import annotations

import http.client
import http.server
import socket
import struct
import threading
import time
import urllib.parse
from dataclasses import dataclass

ERRORS = {
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "403": (403, "AccessDenied", "Access Denied"),
}


@dataclass
class Rule:
    method: str
    contains: str
    fault: str
    times: int
    fired: int = 0


class FaultProxy:
    def __init__(self, upstream: str):
        u = urllib.parse.urlparse(upstream)
        self.upstream = (u.hostname, u.port)
        self.rules: list[Rule] = []
        self.lock = threading.Lock()
        self.log: list[tuple[str, str, str]] = []  # (method, path, fault or "ok")
        self.local = threading.local()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _handle(self):
                n = int(self.headers.get("Content-Length") or 0)
                fault = proxy._match(self.command, self.path)
                if fault == "reset":
                    # Read part of the body, then RST: the client sees a broken connection mid-upload.
                    self.rfile.read(min(n, 1024))
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.connection.close()
                    self.close_connection = True
                    return
                body = self.rfile.read(n) if n else b""
                if fault and fault.startswith("delay:"):
                    time.sleep(float(fault.split(":", 1)[1]))
                elif fault in ERRORS:
                    status, code, msg = ERRORS[fault]
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                           f"<Message>{msg}</Message><RequestId>fault</RequestId></Error>").encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(xml)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(xml)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "expect")}
                r, data = proxy._forward(self.command, self.path, body, headers)
                self.send_response(r.status)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length", "server", "date"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _forward(self, method, path, body, headers):
        """One upstream connection per handler thread, kept alive (a new
        connection per request made the proxy the bottleneck)."""
        local = self.local
        for attempt in (1, 2):
            conn = getattr(local, "conn", None)
            if conn is None:
                conn = local.conn = http.client.HTTPConnection(*self.upstream, timeout=60)
            try:
                conn.request(method, path, body=body, headers=headers)
                r = conn.getresponse()
                return r, r.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                local.conn = None
                if attempt == 2:
                    raise

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, method: str, contains: str, fault: str, times: int = 1) -> None:
        with self.lock:
            self.rules.append(Rule(method, contains, fault, times))

    def _match(self, method: str, path: str) -> str | None:
        with self.lock:
            for r in self.rules:
                if r.fired < r.times and (r.method in ("*", method)) and r.contains in path:
                    r.fired += 1
                    self.log.append((method, path, r.fault))
                    return r.fault
            self.log.append((method, path, "ok"))
            return None

    def fired(self) -> dict[str, int]:
        with self.lock:
            out: dict[str, int] = {}
            for r in self.rules:
                out[r.fault] = out.get(r.fault, 0) + r.fired
            return out

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
