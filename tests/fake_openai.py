"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat completions API, with scripted replies.

crossreview (in a subprocess, through litellm, unpatched) reaches it with
``llm:openai/<name>`` and an api_base of ``server.url``; every request is
recorded, so a test can compare what the server saw with what the ledger says.

    def test_x(fake_openai):
        fake_openai.on("rev", [verdict("approve")])      # replies in order; the last one repeats
        fake_openai.on("agent", lambda req: ...)          # or a function of the request
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

import pytest

SECRET = "sk-test-CROSSREVIEW-SECRET-0123456789abcdef"


@dataclass
class Reply:
    """One scripted answer: a message, or an HTTP error, optionally after a delay."""

    content: str | None = None
    tool_calls: list[tuple[str, dict]] = field(default_factory=list)
    status: int = 200
    error: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    edit: Callable[[dict], None] | None = None
    """Changes the finished response body in place: a broken provider (no choices, no usage, ...)."""


def text(content: str, **kw: Any) -> Reply:
    return Reply(content=content, **kw)


def tools(*calls: tuple[str, dict], **kw: Any) -> Reply:
    """A reply that calls tools: tools(("read_file", {"path": "a.py"}), ...)."""
    return Reply(tool_calls=list(calls), **kw)


def error(status: int, message: str = "", **kw: Any) -> Reply:
    return Reply(status=status, error=message or f"scripted error {status}", **kw)


def verdict(kind: str = "approve", confidence: float = 0.9, concerns: tuple[str, ...] = (), **kw: Any) -> Reply:
    return Reply(content=json.dumps({"verdict": kind, "confidence": confidence, "concerns": list(concerns),
                                     "prefers": None}), **kw)


@dataclass
class Request:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float
    usage: tuple[int, int] | None = None
    """(prompt_tokens, completion_tokens) the server answered with; None for an error reply."""

    @property
    def model(self) -> str:
        return self.body.get("model", "")

    @property
    def messages(self) -> list[dict]:
        return self.body.get("messages", [])

    @property
    def is_review(self) -> bool:
        """Reviewers call without tools; agents always offer theirs."""
        return not self.body.get("tools")

    @property
    def turn(self) -> int:
        """How many assistant messages came before: 0 for the first call of a session."""
        return sum(1 for m in self.messages if m.get("role") == "assistant")

    def text(self) -> str:
        """Every message's text, joined."""
        return "\n".join(m.get("content") or "" for m in self.messages if isinstance(m.get("content"), str))


Script = Callable[[Request], Reply]


class FakeOpenAI:
    """The server; ``on(model, script)`` says how to answer requests for ``model``."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._scripts: dict[str, Script] = {}
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    # --- scripting --------------------------------------------------------------

    def on(self, model: str, script: Script | list[Reply]) -> None:
        if isinstance(script, list):
            replies = list(script)
            count = {"n": 0}

            def in_order(req: Request) -> Reply:
                with self._lock:
                    i = min(count["n"], len(replies) - 1)
                    count["n"] += 1
                return replies[i]

            self._scripts[model] = in_order
        else:
            self._scripts[model] = script

    def requests_for(self, model: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.model == model]

    # --- serving ------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> "FakeOpenAI":
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    return self._send(400, {"error": {"message": "body is not JSON"}})
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                with fake._lock:
                    fake.requests.append(req)
                if not self.path.rstrip("/").endswith("/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                script = fake._scripts.get(req.model)
                if script is None:
                    return self._send(404, {"error": {"message": f"no script for model {req.model!r}",
                                                      "type": "invalid_request_error"}})
                reply = script(req)
                if reply.delay and fake._stop.wait(reply.delay):
                    return
                if reply.status != 200:
                    return self._send(reply.status, {"error": {"message": reply.error, "type": "scripted"}}, reply.headers)
                self._send(200, _completion(req, reply), reply.headers)

            def _send(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout): nothing to answer

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # many reviewers connect at once on a loaded machine

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _completion(req: Request, reply: Reply) -> dict[str, Any]:
    calls = [
        {"id": f"call_{req.turn}_{i}", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for i, (name, args) in enumerate(reply.tool_calls)
    ]
    out_text = (reply.content or "") + "".join(c["function"]["arguments"] for c in calls)
    prompt = reply.prompt_tokens if reply.prompt_tokens is not None else 10 + len(req.text()) // 4
    completion = reply.completion_tokens if reply.completion_tokens is not None else 5 + len(out_text) // 4
    req.usage = (prompt, completion)
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = calls
    body = {
        "id": f"chatcmpl-{len(req.messages)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": req.model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    }
    if reply.edit is not None:
        reply.edit(body)
        usage = body.get("usage")
        req.usage = (usage.get("prompt_tokens"), usage.get("completion_tokens")) if isinstance(usage, dict) else None
    return body


def llm_env(server: FakeOpenAI, **extra: str) -> dict[str, str]:
    """Environment for a crossreview child that talks to ``server`` with a (fake) secret key."""
    return {
        "OPENAI_API_KEY": SECRET,
        "CROSSREVIEW_API_BASE": server.url,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        **extra,
    }


@pytest.fixture
def fake_openai():
    """A started FakeOpenAI on 127.0.0.1, stopped after the test."""
    server = FakeOpenAI().start()
    try:
        yield server
    finally:
        server.stop()
