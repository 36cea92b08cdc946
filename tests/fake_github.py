"""A real HTTP server on 127.0.0.1 playing the parts of GitHub's REST API the gate uses.

Issue comments (list with pagination, create, update) and issue labels (add,
remove). Every request is recorded with its headers, so a test can check
what was sent, how often, and with which token.

    def test_x(fake_github):
        env = {"GITHUB_API_URL": fake_github.url, ...}
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

TOKEN = "ghs_TESTTOKEN_crossreview_0123456789abcdefXYZ"


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    """State of the fake: comments and labels per issue number, and every request."""

    url: str = ""
    page_size: int = 2
    comments: dict[int, list[dict]] = field(default_factory=dict)
    labels: dict[int, list[str]] = field(default_factory=dict)
    heads: dict[int, str] = field(default_factory=dict)
    """Pull request number -> its head sha (GET /pulls/N)."""
    requests: list[Seen] = field(default_factory=list)
    fail: dict[tuple[str, str], int] = field(default_factory=dict)
    """(method, path regex) -> HTTP status to answer with instead."""
    flaky: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    """(method, path regex) -> statuses to answer the next matching calls with, one each (then normal)."""
    _next_id: int = 1000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_comment(self, number: int, body: str, login: str = "someone") -> dict:
        with self.lock:
            self._next_id += 1
            c = {"id": self._next_id, "body": body, "user": {"login": login}}
            self.comments.setdefault(number, []).append(c)
            return c

    def calls(self, method: str, pattern: str = "") -> list[Seen]:
        return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]


def _handler(state: FakeGitHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _reply(self, status: int, body: Any = None, headers: dict | None = None) -> None:
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _handle(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else None
            state.requests.append(Seen(method, self.path, dict(self.headers), body))
            for (m, pat), status in state.fail.items():
                if m == method and re.search(pat, self.path):
                    return self._reply(status, {"message": f"scripted failure {status}"})
            for (m, pat), statuses in state.flaky.items():
                if m == method and re.search(pat, self.path) and statuses:
                    status = statuses.pop(0)
                    message = "API rate limit exceeded" if status == 429 else f"scripted failure {status}"
                    return self._reply(status, {"message": message}, {"Retry-After": "0"})
            if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                return self._reply(401, {"message": "Bad credentials"})
            path, _, query = self.path.partition("?")
            m = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/(\d+)/comments", path)
            if m and method == "GET":
                from urllib.parse import parse_qs

                page = int(parse_qs(query).get("page", ["1"])[0])
                items = state.comments.get(int(m.group(3)), [])
                n = state.page_size
                chunk = items[(page - 1) * n: page * n]
                headers = {}
                if page * n < len(items):
                    origin = state.url.rsplit("/api/v3", 1)[0]
                    nxt = f"{origin}{path}?per_page=100&page={page + 1}"
                    headers["Link"] = f'<{nxt}>; rel="next"'
                return self._reply(200, chunk, headers)
            if m and method == "POST":
                return self._reply(201, state.add_comment(int(m.group(3)), body["body"], "github-actions[bot]"))
            m = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/pulls/(\d+)", path)
            if m and method == "GET":
                sha = state.heads.get(int(m.group(3)))
                return self._reply(200, {"number": int(m.group(3)), "head": {"sha": sha}}) if sha else \
                    self._reply(404, {"message": "Not Found"})
            m = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/comments/(\d+)", path)
            if m and method == "PATCH":
                for items in state.comments.values():
                    for c in items:
                        if c["id"] == int(m.group(3)):
                            c["body"] = body["body"]
                            return self._reply(200, c)
                return self._reply(404, {"message": "Not Found"})
            m = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/(\d+)/labels", path)
            if m and method == "POST":
                have = state.labels.setdefault(int(m.group(3)), [])
                have += [lb for lb in body["labels"] if lb not in have]
                return self._reply(200, [{"name": lb} for lb in have])
            m = re.fullmatch(r"/api/v3/repos/([^/]+)/([^/]+)/issues/(\d+)/labels/(.+)", path)
            if m and method == "DELETE":
                from urllib.parse import unquote

                name, have = unquote(m.group(4)), state.labels.setdefault(int(m.group(3)), [])
                if name not in have:
                    return self._reply(404, {"message": "Label does not exist"})
                have.remove(name)
                return self._reply(200, [{"name": lb} for lb in have])
            return self._reply(404, {"message": f"no route {method} {path}"})

        def do_GET(self):
            self._handle("GET")

        def do_POST(self):
            self._handle("POST")

        def do_PATCH(self):
            self._handle("PATCH")

        def do_DELETE(self):
            self._handle("DELETE")

    return Handler


@pytest.fixture
def fake_github():
    """A fake GitHub API on 127.0.0.1 (served under /api/v3, as GitHub Enterprise does)."""
    state = FakeGitHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.url = f"http://127.0.0.1:{server.server_port}/api/v3"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
