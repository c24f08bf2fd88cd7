"""Helpers for the OpenSearch tests: a small REST client on the real server
(urllib only) and a loopback fault-injecting proxy in front of it."""

from __future__ import annotations

import base64
import http.server
import json
import random
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field


class OpenSearch:
    def __init__(self, endpoint: str):
        self.endpoint = endpoint.rstrip("/")

    def req(self, method: str, path: str, body=None, ok=(200, 201)) -> dict:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        r = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                   headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return json.loads(e.read() or b"{}")
            raise AssertionError(f"{method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None

    def refresh(self, index: str) -> None:
        self.req("POST", f"/{index}/_refresh", ok=(200, 404))

    def count(self, index: str) -> int:
        self.refresh(index)
        return self.req("GET", f"/{index}/_count", ok=(200, 404)).get("count", 0)

    def docs(self, index: str) -> dict[str, dict]:
        """Every document of `index` (pattern) as _id → _source, by scrolling."""
        self.refresh(index)
        out: dict[str, dict] = {}
        r = self.req("POST", f"/{index}/_search?scroll=1m", {"size": 5000, "sort": ["_doc"]}, ok=(200, 404))
        while True:
            hits = r.get("hits", {}).get("hits", [])
            if not hits:
                break
            for h in hits:
                assert h["_id"] not in out, f"id {h['_id']} twice in {index}"
                out[h["_id"]] = h["_source"] | {"_index": h["_index"]}
            r = self.req("POST", "/_search/scroll", {"scroll": "1m", "scroll_id": r["_scroll_id"]})
        return out

    def mapping(self, index: str) -> dict:
        return self.req("GET", f"/{index}/_mapping")

    def delete(self, index: str) -> None:
        self.req("DELETE", f"/{index}", ok=(200, 404))

    def delete_template(self, name: str) -> None:
        self.req("DELETE", f"/_index_template/{name}", ok=(200, 404))


@dataclass
class Faults:
    """What the proxy does to requests (changed by tests while it runs)."""
    # Per bulk item: probability of answering 429 instead of forwarding it.
    item_429: float = 0.0
    # Basic credentials the proxy demands ("user:password"), if any.
    basic: str | None = None
    # Counters.
    throttled: int = 0
    bulk_requests: int = 0
    unauthorized: int = 0
    ids_throttled: set = field(default_factory=set)


class FaultProxy:
    """A loopback HTTP proxy to the real OpenSearch that can throttle single
    bulk items (a real partial failure: the other items of the request are
    indexed by the server) and demand basic authentication."""

    def __init__(self, upstream: str, faults: Faults | None = None, seed: int = 7):
        self.upstream = upstream.rstrip("/")
        self.faults = faults or Faults()
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _any(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                status, payload = proxy.handle(self.command, self.path, dict(self.headers), body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def forward(self, method, path, headers, body) -> tuple[int, bytes]:
        h = {k: v for k, v in headers.items() if k.lower() in ("content-type", "content-encoding")}
        r = urllib.request.Request(self.upstream + path, data=body if body else None, method=method, headers=h)
        try:
            with urllib.request.urlopen(r, timeout=60) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def handle(self, method, path, headers, body) -> tuple[int, bytes]:
        f = self.faults
        if f.basic is not None:
            want = "Basic " + base64.b64encode(f.basic.encode()).decode()
            got = next((v for k, v in headers.items() if k.lower() == "authorization"), None)
            if got != want:
                with self.lock:
                    f.unauthorized += 1
                return 401, b'{"error":{"type":"security_exception","reason":"missing or wrong credentials"},"status":401}'
        if not (path.startswith("/_bulk") and method == "POST" and f.item_429 > 0):
            return self.forward(method, path, headers, body)
        # Split the bulk body into (action, source) pairs; throttle some.
        lines = body.split(b"\n")
        pairs = [(lines[i], lines[i + 1]) for i in range(0, len(lines) - 1, 2) if lines[i]]
        with self.lock:
            f.bulk_requests += 1
            throttle = [self.rng.random() < f.item_429 for _ in pairs]
        kept = [p for p, t in zip(pairs, throttle) if not t]
        upstream_items = []
        if kept:
            status, payload = self.forward(method, path, headers, b"".join(a + b"\n" + s + b"\n" for a, s in kept))
            if status != 200:
                return status, payload
            upstream_items = json.loads(payload)["items"]
        items, it = [], iter(upstream_items)
        for (action, _), t in zip(pairs, throttle):
            if t:
                meta = json.loads(action)["index"]
                with self.lock:
                    f.throttled += 1
                    f.ids_throttled.add(meta["_id"])
                items.append({"index": {"_index": meta["_index"], "_id": meta["_id"], "status": 429,
                                        "error": {"type": "es_rejected_execution_exception",
                                                  "reason": "rejected execution (injected by the test proxy)"}}})
            else:
                items.append(next(it))
        return 200, json.dumps({"took": 1, "errors": True, "items": items}).encode()
