"""One model, called through litellm, with our own retries and an account of every attempt.

- litellm is imported on the first call, never at import time, with
  LITELLM_LOCAL_MODEL_COST_MAP=True unless the user set it (no price-map
  download at start-up).
- litellm's own retries are off (num_retries=0, max_retries=0): this client
  retries 429s, 5xx and timeouts itself, with exponential backoff (honouring
  Retry-After), so ``usage.calls`` counts every request that was sent.
- Cost per call comes from the configured price of exactly this model, else
  from litellm's price map, else it is unknown (None) — never a guessed 0.
  Prices are never registered with litellm, so they cannot leak to other models.
- Before each attempt the budget is checked and the call journaled as in flight; after
  each reply (or error) it is charged with what the call cost, which resolves that entry.
- Error messages are redacted before they leave this module: providers quote
  the key they rejected.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from ..agents import valid_text
from ..budget import Budget, BudgetExceeded
from ..models import Usage
from .secrets import Redactor
from .settings import ResolvedModel

_import_lock = threading.Lock()
_litellm: Any = None
_skip_mcp = False

MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 60.0


def _decide_mcp_skip(litellm: Any) -> None:
    """litellm 1.106 imports the optional `mcp` package on every call with tools; skip that
    path when `mcp` is not installed (decided once, before any thread calls a model)."""
    global _skip_mcp
    import importlib.util
    import inspect

    if importlib.util.find_spec("mcp") is not None:
        return
    try:
        _skip_mcp = "_skip_mcp_handler" in inspect.getsource(litellm.main)
    except (OSError, TypeError, AttributeError):
        _skip_mcp = False


_prewarm_started = False


def prewarm() -> None:
    """Start importing litellm in the background (it takes seconds): called when a run will need it."""
    global _prewarm_started
    with _import_lock:
        if _prewarm_started or _litellm is not None:
            return
        _prewarm_started = True
    threading.Thread(target=load_litellm, name="crossreview-litellm-import", daemon=True).start()


def load_litellm() -> Any:
    """Import litellm (once, thread-safe), offline-friendly and quiet."""
    global _litellm
    with _import_lock:
        if _litellm is None:
            os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            import litellm

            litellm.suppress_debug_info = True  # no "Give Feedback" banner on every error
            _decide_mcp_skip(litellm)
            if hasattr(litellm, "telemetry"):
                litellm.telemetry = False
            _import_first_call_modules()
            _litellm = litellm
    return _litellm


FIRST_CALL_MODULES = (
    "openai.resources",  # the OpenAI SDK's resources, imported when litellm first builds a client (~1 s)
    "litellm.proxy.openai_files_endpoints.common_utils",  # litellm's proxy types, read on every first call
    "httpcore",
    "h2.connection",
    "jiter",
)
"""Modules litellm (1.106) imports lazily inside its first completion: some 500 of them, seconds
when a dozen agents start at once."""


def _import_first_call_modules() -> None:
    """Import what litellm's first completion would, here (in the background import) instead.

    A model call is journaled as in flight just before it is sent, so a kill while it waits counts
    it as spend of unknown cost. litellm's first completion spent a second or more importing
    modules between that journal row and the request: a run killed then kept calls "in flight"
    that no provider ever saw, and its cost unknown for good; and the agent's first call timed
    the imports as the model's answer. A module another litellm version lacks is simply skipped.
    """
    import importlib

    for name in FIRST_CALL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional warm-up: litellm still imports what it needs
            continue


class ModelCallError(Exception):
    """A model call that failed for good (after retries, or at once for errors retrying cannot fix)."""

    def __init__(self, message: str, status_code: int | None = None, retryable: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.retryable = retryable


class DeadlineReached(ModelCallError):
    """The task's time ran out before or during a call."""


@dataclass
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass
class Reply:
    """One model reply, as plain data."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float | None = None

    def as_message(self) -> dict[str, Any]:
        """The assistant message to append to the conversation."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content}
        if self.tool_calls:
            msg["tool_calls"] = [
                {"id": t.id, "type": "function", "function": {"name": t.name, "arguments": t.arguments}}
                for t in self.tool_calls
            ]
        return msg


def _stop_event() -> threading.Event | None:
    from .. import sandbox

    return getattr(sandbox, "_stopping", None)


def _check_stopping() -> None:
    ev = _stop_event()
    if ev is not None and ev.is_set():
        from ..sandbox import Stopping

        raise Stopping("crossreview is stopping: no new model call")


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def is_retryable(exc: BaseException) -> bool:
    """429, 5xx, timeouts and dropped connections are worth another try; the rest are not."""
    lm = load_litellm()
    retry_types = tuple(
        t for t in (
            getattr(lm, "RateLimitError", None), getattr(lm, "Timeout", None),
            getattr(lm, "APIConnectionError", None), getattr(lm, "InternalServerError", None),
            getattr(lm, "ServiceUnavailableError", None), getattr(lm, "BadGatewayError", None),
        ) if isinstance(t, type)
    )
    if retry_types and isinstance(exc, retry_types):
        return True
    status = _status(exc)
    return status is not None and (status in (408, 409, 429) or status >= 500)


def _timed_out(exc: BaseException) -> bool:
    """The call timed out on our side: the request was sent, and no answer said what it cost."""
    timeout_type = getattr(load_litellm(), "Timeout", None)
    return isinstance(timeout_type, type) and isinstance(exc, timeout_type)


def _retry_after(exc: BaseException) -> float | None:
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", None)
    if not headers:
        return None
    try:
        value = headers.get("retry-after")
        return min(float(value), MAX_RETRY_AFTER) if value is not None else None
    except (TypeError, ValueError):
        return None  # an HTTP date: fall back to our own backoff


def _never_connected(exc: BaseException) -> bool:
    """No connection was made, so no request reached the provider (litellm reports it as a 500)."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if type(e).__name__ == "ConnectError" and (type(e).__module__ or "").startswith("httpx"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _unbilled(exc: BaseException) -> bool:
    """The failed call cost nothing: the provider answered with an HTTP error status, or was never reached.

    litellm turns an HTTP 200 whose body it cannot read (not JSON, no ``choices``) into a
    ``500`` of its own making, without the provider's headers; that answer was billed. A
    call we stopped waiting for may have been done and billed too.
    """
    if _timed_out(exc):
        return False
    if _never_connected(exc):
        return True
    if _status(exc) is None:
        return True
    return getattr(exc, "litellm_response_headers", None) is not None


def _is_api_error(exc: BaseException) -> bool:
    """An error from talking to the provider (a request was attempted), not a bug of ours."""
    mod = type(exc).__module__ or ""
    return mod.startswith(("litellm", "openai", "httpx", "httpcore")) or _status(exc) is not None


def describe(exc: BaseException) -> str:
    """A one-line account of a failed call: HTTP status, error type, the provider's message."""
    text = (str(exc).strip() or type(exc).__name__).replace("litellm.", "").replace("\n", " ")
    name = type(exc).__name__
    if text.startswith(f"{name}: {name}: "):
        text = text[len(name) + 2:]
    status = _status(exc)
    return (f"HTTP {status} " if status else "") + text[:600]


class ModelClient:
    """Calls one model; ``usage`` adds up every attempt (failed ones count as calls, with no tokens)."""

    def __init__(
        self,
        model: ResolvedModel,
        *,
        budget: Budget | None = None,
        deadline: float | None = None,
        redact: Redactor | None = None,
        on_event: Callable[[dict], None] | None = None,
    ):
        self.model = model
        self.budget = budget
        self.deadline = deadline  # time.monotonic() value
        self.redact = redact or Redactor([model.api_key_env] if model.api_key_env else [])
        self.on_event = on_event
        self.usage = Usage(cost=0.0)
        self.calls: list[dict[str, Any]] = []
        """Every attempt, itemized for the ledger's calls table (failed ones with their error)."""

    # --- prices -------------------------------------------------------------

    def cost_of(self, tokens_in: int, tokens_out: int) -> float | None:
        """USD for these tokens: configured price, else litellm's map, else unknown (None)."""
        if self.model.price is not None:
            return self.model.price.cost(tokens_in, tokens_out)
        lm = load_litellm()
        try:
            cin, cout = lm.cost_per_token(model=self.model.name, prompt_tokens=tokens_in, completion_tokens=tokens_out)
            return float(cin) + float(cout)
        except Exception:  # noqa: BLE001 - ModelNotMappedError and friends: the price is unknown
            return None

    def priced(self) -> bool:
        return self.cost_of(1, 1) is not None

    # --- calls --------------------------------------------------------------

    def _event(self, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(data)

    def _kwargs(self, messages: list[dict], tools, response_format, max_tokens) -> dict[str, Any]:
        m = self.model
        kw: dict[str, Any] = {
            "model": m.name,
            "messages": messages,
            "num_retries": 0,
            "max_retries": 0,
            "drop_params": True,
        }
        if m.api_base:
            kw["api_base"] = m.api_base
        if m.api_key_env:
            key = os.environ.get(m.api_key_env)
            if not key:
                raise ModelCallError(
                    f"{m.name}: the environment variable {m.api_key_env} (api_key_env in the config) is not set"
                )
            kw["api_key"] = key
        if m.temperature is not None:
            kw["temperature"] = m.temperature
        if max_tokens or m.max_output_tokens:
            kw["max_tokens"] = max_tokens or m.max_output_tokens
        if tools:
            kw["tools"] = tools
        if response_format is not None:
            kw["response_format"] = response_format
        return kw

    def _send(self, kw: dict[str, Any]) -> Any:
        lm = load_litellm()
        if kw.get("tools") and _skip_mcp:
            kw["_skip_mcp_handler"] = True
        return lm.completion(**kw)

    def complete(
        self,
        messages: list[dict],
        *,
        tools: list[dict] | None = None,
        response_format: dict | None = None,
        max_tokens: int | None = None,
    ) -> Reply:
        """One completion, retried on transient errors; raises ModelCallError, BudgetExceeded or Stopping."""
        m = self.model
        kw = self._kwargs(messages, tools, response_format, max_tokens)
        load_litellm()  # a first call must not time the import (seconds) as the model's answer
        attempt = 0
        while True:
            _check_stopping()
            if self.budget is not None:
                self.budget.check()
                if self.budget.caps_cost and not self.priced():
                    raise BudgetExceeded(
                        f"budget: cannot keep the cost cap, the price of {m.name} is unknown; set "
                        f'[prices."{m.name}"] input_cost_per_token and output_cost_per_token'
                    )
            timeout = m.timeout
            if self.deadline is not None:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0.5:
                    raise DeadlineReached(f"{m.name}: the task's time ran out before the call")
                timeout = min(timeout, remaining)
            kw["timeout"] = timeout
            attempt += 1
            # Journaled before it is sent, so a kill while it waits leaves it counted (cost unknown).
            call = self.budget.call_started(m.name) if self.budget is not None else None
            started = time.monotonic()
            started_at = datetime.now(timezone.utc).isoformat()
            try:
                resp = self._send(kw)
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _is_api_error(exc):
                    raise  # the call stays in flight in the journal: whether it was billed is unknown
                self.usage.calls += 1
                seconds = round(time.monotonic() - started, 3)
                retry = is_retryable(exc)
                msg = self.redact(describe(exc))
                # A provider that answered with an error bills nothing; one we stopped waiting for, or
                # whose answer could not be read, may have done the work and billed it: unknown, never a
                # guessed 0.
                cost = 0.0 if _unbilled(exc) else None
                if cost is None:
                    self.usage.cost = None
                if call is not None:
                    self.budget.charge(0, cost, call=call)
                self._event(kind="call", attempt=attempt, status="error", error=msg, retryable=retry, seconds=seconds,
                            tokens_in=0, tokens_out=0, cost=cost)
                self.calls.append({"model": m.name, "tokens_in": 0, "tokens_out": 0, "cost": cost,
                                   "started": started_at, "seconds": seconds, "error": msg})
                if not retry:
                    raise ModelCallError(f"{m.name}: {msg}", _status(exc), False) from None
                if attempt >= m.max_attempts:
                    raise ModelCallError(f"{m.name}: gave up after {attempt} attempts: {msg}", _status(exc), True) from None
                delay = min(m.retry_backoff * (2 ** (attempt - 1)), MAX_BACKOFF) * random.uniform(0.8, 1.2)
                after = _retry_after(exc)
                if after is not None:
                    delay = max(delay, after)
                if self.deadline is not None and time.monotonic() + delay >= self.deadline:
                    raise DeadlineReached(f"{m.name}: the task's time ran out while retrying: {msg}", _status(exc), True) from None
                self._sleep(delay)
                continue
            return self._account(resp, attempt, round(time.monotonic() - started, 3), started_at, call)

    def _sleep(self, seconds: float) -> None:
        ev = _stop_event()
        if ev is None:
            time.sleep(seconds)
        elif ev.wait(seconds):
            _check_stopping()

    def _account(self, resp: Any, attempt: int, seconds: float, started_at: str, call: str | None = None) -> Reply:
        tin, tout, note = reported_usage(getattr(resp, "usage", None))
        cost = self.cost_of(tin, tout) if note is None else None  # unknown, never a guessed 0
        self.usage.calls += 1
        self.usage.tokens_in += tin
        self.usage.tokens_out += tout
        if cost is None:
            self.usage.cost = None  # one unknown price makes the total unknown, not smaller
        elif self.usage.cost is not None:
            self.usage.cost += cost
        if self.budget is not None:
            self.budget.charge(tin + tout, cost, call=call)
        self.calls.append({"model": self.model.name, "tokens_in": tin, "tokens_out": tout, "cost": cost,
                           "started": started_at, "seconds": seconds, "error": None})
        choices = getattr(resp, "choices", None) or []
        choice = choices[0] if choices else None
        msg = getattr(choice, "message", None)
        if msg is None:  # the request was answered (and billed) but holds no message
            self._event(kind="call", attempt=attempt, status="ok", seconds=seconds, tokens_in=tin, tokens_out=tout,
                        cost=cost, finish_reason=None, note="the reply held no message")
            raise ModelCallError(f"{self.model.name}: the provider's reply held no message (no choices)")
        calls = []
        for i, tc in enumerate(getattr(msg, "tool_calls", None) or []):
            fn = tc.function
            calls.append(ToolCall(id=valid_text(tc.id or f"call_{i}"), name=valid_text(fn.name or ""),
                                  arguments=valid_text(fn.arguments or "{}")))
        reply = Reply(
            content=valid_text(getattr(msg, "content", None)),
            tool_calls=calls,
            finish_reason=getattr(choice, "finish_reason", None),
            tokens_in=tin,
            tokens_out=tout,
            cost=cost,
        )
        self._event(kind="call", attempt=attempt, status="ok", seconds=seconds, tokens_in=tin, tokens_out=tout,
                    cost=cost, finish_reason=reply.finish_reason, **({"note": note} if note else {}))
        return reply


MAX_CALL_TOKENS = 1_000_000_000
"""More tokens than any model's context: a count above this in one reply is nonsense."""


def reported_usage(usage: Any) -> tuple[int, int, str | None]:
    """(tokens in, tokens out, None) from a reply's usage; (0, 0, why) when it reports none or nonsense.

    litellm turns a reply without usage into 0 and 0, and passes on what the provider said, negative
    or absurd: a request always has a prompt, so 0 tokens in means "not reported". Those calls are
    recorded with no tokens and an unknown cost — never as free, and never as a number no ledger holds.
    """
    counts = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            return 0, 0, f"the reply reported no usable {name} ({value!r:.40})"
        if not 0 <= value <= MAX_CALL_TOKENS or int(value) != value:
            return 0, 0, f"the reply reported {name} = {value!r:.40}, which cannot be"
        counts.append(int(value))
    if counts[0] == 0:
        return 0, 0, "the reply reported no usage"
    return counts[0], counts[1], None


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)
