"""``llm:<model>`` agents: a small, honest coding agent on any model litellm reaches.

A tool loop — list_files, read_file, write_file, edit_file, run_tests (only
when the task shows its tests) and finish — bounded by turns, tokens, money
(the run's budgets) and the task's timeout. Every path is resolved inside the
worktree: the agent cannot read or write outside it, nor touch ``.git``.

The session is saved, secrets redacted, as
``.crossreview/transcripts/<run>/<task>/<agent>.jsonl``; the candidate's log
says where.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..agents import SpecError, Workspace, valid_text
from ..budget import BudgetExceeded
from ..hookspecs import hookimpl
from ..llm.client import DeadlineReached, ModelCallError, ModelClient, load_litellm, prewarm
from ..llm.prompts import agent_messages, agent_tools
from ..llm.secrets import Redactor
from ..llm.settings import LLMSettings
from ..llm.transcript import Transcript
from ..models import AgentSpec, SolveResult
from ..sandbox import Stopping

MAX_READ_CHARS = 60_000
MAX_WRITE_BYTES = 2_000_000
MAX_READ_FILE_BYTES = 16_000_000
"""read_file reads at most this much of a file (a line range past it cannot be read)."""
MAX_LIST = 500
MAX_RESULT_CHARS = 20_000
_SKIP_DIRS = {".git", "__pycache__", ".pytest_cache", "node_modules", ".venv", "venv", ".mypy_cache", ".tox"}


def model_of(spec: AgentSpec, what: str) -> str:
    """The litellm model name in an ``llm:<model>`` spec."""
    model = (spec.arg or "").strip()
    if not model:
        raise SpecError(f"{what} {spec.name}: 'llm:' needs a model, e.g. llm:openai/gpt-4o-mini (any litellm model name)")
    return model


class ToolError(Exception):
    """A tool call the agent got wrong; the message goes back to the model."""


class Toolbox:
    """The agent's tools, confined to one worktree."""

    def __init__(self, root: Path, workspace: Workspace, deadline: float, redact: Redactor):
        self.root = root.resolve()
        self.ws = workspace
        self.deadline = deadline
        self.redact = redact
        self.test_runs = 0
        from ..worktrees import HOLDOUT_DIRNAME, TESTS_DIRNAME  # GitPython: not at plugin load

        self.read_only = {TESTS_DIRNAME, HOLDOUT_DIRNAME}

    # --- paths ---------------------------------------------------------------

    def resolve(self, rel: Any, write: bool = False, default: str | None = None) -> Path:
        if rel is None or (isinstance(rel, str) and not rel.strip()):
            if default is None:
                raise ToolError("'path' is required")
            rel = default
        if not isinstance(rel, str):
            raise ToolError("'path' must be a string")
        if "\x00" in rel:
            raise ToolError("invalid path")
        p = Path(rel)
        if p.is_absolute():
            raise ToolError(f"{rel}: absolute paths are not allowed; give a path relative to the repository root")
        full = (self.root / p).resolve()  # follows symlinks: a link pointing outside is caught here
        if full != self.root and self.root not in full.parents:
            raise ToolError(f"{rel}: outside the repository")
        parts = full.relative_to(self.root).parts
        if ".git" in parts:  # the worktree's own, or a repository nested in it that git would trip over
            raise ToolError(f"{rel}: .git is off limits")
        if write and parts and parts[0] in self.read_only:
            raise ToolError(f"{rel}: the task's tests are read-only")
        if write and not parts:
            raise ToolError(f"{rel}: is the repository root")
        return full

    def _rel(self, p: Path) -> str:
        return p.relative_to(self.root).as_posix() or "."

    # --- tools ---------------------------------------------------------------

    def list_files(self, path: str | None = None) -> str:
        base = self.resolve(path, default=".")
        if not base.exists():
            raise ToolError(f"{path}: no such folder")
        if base.is_file():
            return self._rel(base)
        out: list[str] = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
            for name in sorted(filenames):
                out.append(self._rel(Path(dirpath) / name))
                if len(out) >= MAX_LIST:
                    return "\n".join(out) + f"\n... (more than {MAX_LIST} files; list a subfolder)"
        return "\n".join(out) or "(no files)"

    def read_file(self, path: str, start_line: int | None = None, end_line: int | None = None) -> str:
        p = self.resolve(path)
        if not p.is_file():
            raise ToolError(f"{path}: no such file")
        size = p.stat().st_size
        with p.open("rb") as fh:  # never the whole of a file the agent's own code may have made huge
            data = fh.read(MAX_READ_FILE_BYTES)
        if b"\x00" in data[:8192]:
            return f"{path}: a binary file of {size} bytes"
        text = data.decode("utf-8", errors="replace")
        note = ""
        if size > MAX_READ_FILE_BYTES:
            text = text[:text.rfind("\n") + 1]  # no half line
            note = f"\n... (the file is {size} bytes; only its first {MAX_READ_FILE_BYTES} can be read)"
        if start_line or end_line:
            lines = text.splitlines(keepends=True)
            lo = max(1, _line_number(start_line, "start_line", 1))
            hi = min(len(lines), _line_number(end_line, "end_line", len(lines)))
            text = "".join(lines[lo - 1:hi])
        if len(text) > MAX_READ_CHARS:
            text = text[:MAX_READ_CHARS] + f"\n... (truncated; {len(text)} characters, read a line range)"
        return text + note

    def write_file(self, path: str, content: str) -> str:
        if not isinstance(content, str):
            raise ToolError("'content' must be a string")
        if len(content.encode("utf-8", "replace")) > MAX_WRITE_BYTES:
            raise ToolError(f"content too large (limit {MAX_WRITE_BYTES} bytes)")
        p = self.resolve(path, write=True)
        if p.is_dir():
            raise ToolError(f"{path}: is a folder")
        p.parent.mkdir(parents=True, exist_ok=True)
        existed = p.exists()
        p.write_text(content, encoding="utf-8")
        return f"{'overwrote' if existed else 'created'} {self._rel(p)} ({len(content.splitlines())} lines)"

    def edit_file(self, path: str, old_text: str, new_text: str) -> str:
        p = self.resolve(path, write=True)
        if not p.is_file():
            raise ToolError(f"{path}: no such file (use write_file to create it)")
        if not isinstance(old_text, str) or not isinstance(new_text, str) or not old_text:
            raise ToolError("'old_text' (non-empty) and 'new_text' must be strings")
        if p.stat().st_size > MAX_WRITE_BYTES:
            raise ToolError(f"{path}: too large to edit (limit {MAX_WRITE_BYTES} bytes)")
        text = p.read_text(encoding="utf-8", errors="replace")
        n = text.count(old_text)
        if n == 0:
            raise ToolError(f"{path}: old_text not found; read the file and copy the text exactly")
        if n > 1:
            raise ToolError(f"{path}: old_text appears {n} times; include more surrounding lines so it is unique")
        p.write_text(text.replace(old_text, new_text, 1), encoding="utf-8")
        return f"edited {self._rel(p)}"

    def run_tests(self) -> str:
        if not self.ws.task.tests_visible:
            raise ToolError("this task's tests are hidden; run_tests is not available")
        from ..verify import run_tests

        remaining = self.deadline - time.monotonic()
        if remaining < 2:
            raise ToolError("no time left to run the tests")
        task = self.ws.task.model_copy(update={"verifier_timeout": max(1.0, min(self.ws.task.verifier_timeout, remaining - 1))})
        self.test_runs += 1
        report = run_tests(task, self.root)
        lines = [f"{report.passed}/{report.total} tests passed" + (" (TIMED OUT)" if report.timed_out else "")]
        for o in report.outcomes[:100]:
            lines.append(f"{o.outcome.upper():7} {o.name}" + (f": {o.message[:300]}" if o.message else ""))
        if not report.all_passed and report.output:
            lines.append("--- output (tail) ---\n" + report.output[-3000:])
        return "\n".join(lines)

    def call(self, name: str, arguments: str) -> tuple[str, bool]:
        """Run one tool call; returns (result text for the model, finished?)."""
        try:
            args = parse_arguments(arguments)
        except json.JSONDecodeError as exc:
            return f"error: the arguments are not valid JSON ({exc.msg}); send a JSON object", False
        except (ValueError, RecursionError) as exc:
            return f"error: the arguments are not usable JSON ({type(exc).__name__}); send a JSON object", False
        if not isinstance(args, dict):
            return "error: the arguments must be a JSON object", False
        if name == "finish":
            return "finished", True
        fns = {"list_files": self.list_files, "read_file": self.read_file, "write_file": self.write_file,
               "edit_file": self.edit_file}
        if self.ws.task.tests_visible:
            fns["run_tests"] = self.run_tests
        fn = fns.get(name)
        if fn is None:
            return f"error: unknown tool {name!r}; the tools are {', '.join([*fns, 'finish'])}", False
        try:
            result = fn(**args)
        except TypeError as exc:
            return f"error: bad arguments for {name}: {exc}", False
        except ToolError as exc:
            return f"error: {exc}", False
        except OSError as exc:
            return f"error: {exc.strerror or exc}", False
        except ValueError as exc:  # a model's odd argument must never end the session
            return f"error: bad arguments for {name}: {exc}", False
        result = self.redact(result)
        if len(result) > MAX_RESULT_CHARS:
            result = result[:MAX_RESULT_CHARS] + "\n... (truncated)"
        return result, False


class LLMAgent:
    """A tool-using coding agent on one litellm model."""

    charges_budget = True  # every model call is charged as it returns

    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.model = model_of(spec, "agent")
        prewarm()  # litellm takes seconds to import: start now, while the run sets up

    def warm_up(self) -> None:
        """Finish importing litellm before the solve's clock starts: the import is not the agent's time."""
        load_litellm()

    def solve(self, workspace: Workspace) -> SolveResult:
        """Work in ``workspace.path`` until the model calls finish or a limit is reached."""
        settings = LLMSettings.from_any(getattr(workspace, "llm", None))
        cfg = settings.resolve(self.model)
        redact = Redactor(settings.key_env_names() | ({cfg.api_key_env} if cfg.api_key_env else set()))
        artifacts = getattr(workspace, "artifacts_dir", None)
        path = Path(artifacts) / f"{workspace.agent.name}.jsonl" if artifacts else None
        transcript = Transcript(path, redact)
        deadline = time.monotonic() + workspace.timeout
        client = ModelClient(cfg, budget=getattr(workspace, "budget", None), deadline=deadline, redact=redact,
                             on_event=transcript.on_call)
        tools = Toolbox(workspace.path, workspace, deadline, redact)
        schemas = agent_tools(workspace.task.tests_visible)
        files = tools.list_files(".").splitlines()
        messages = agent_messages(workspace.instruction, workspace.task.tests_visible, cfg.max_turns, files)
        transcript.add("start", model=self.model, agent=workspace.agent.name, task=workspace.task.id,
                       max_turns=cfg.max_turns, max_solve_tokens=cfg.max_solve_tokens,
                       tools=[t["function"]["name"] for t in schemas], messages=messages)

        status, error, summary = "ok", None, ""
        turns, idle, done = 0, 0, False
        try:
            while not done:
                if turns >= cfg.max_turns:
                    status, error = "error", f"stopped after {cfg.max_turns} turns without calling finish (max_turns)"
                    break
                if client.usage.tokens >= cfg.max_solve_tokens:
                    status, error = "error", (f"stopped after {client.usage.tokens} tokens without calling finish "
                                              f"(max_solve_tokens {cfg.max_solve_tokens})")
                    break
                turns += 1
                reply = client.complete(messages, tools=schemas)
                messages.append(reply.as_message())
                transcript.add("assistant", turn=turns, content=reply.content,
                               tool_calls=[{"id": t.id, "name": t.name, "arguments": t.arguments} for t in reply.tool_calls],
                               tokens_in=reply.tokens_in, tokens_out=reply.tokens_out, cost=reply.cost)
                if not reply.tool_calls:
                    idle += 1
                    if idle >= 2:  # it keeps answering in prose: take that as done
                        summary = reply.content or ""
                        break
                    messages.append({"role": "user", "content": "Use the tools to make your changes, then call finish."})
                    continue
                idle = 0
                for call in reply.tool_calls:
                    result, finished = tools.call(call.name, call.arguments)
                    if finished:
                        done = True
                        try:
                            summary = str(parse_arguments(call.arguments).get("summary", ""))
                        except (ValueError, RecursionError, AttributeError):
                            summary = ""
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
                    transcript.add("tool", turn=turns, name=call.name, arguments=_clip(call.arguments, 200_000), result=_clip(result))
        except BudgetExceeded as exc:
            status, error = "error", str(exc)
        except DeadlineReached as exc:
            status, error = "timeout", f"the task's {workspace.timeout:g}s ran out: {exc}"
        except ModelCallError as exc:
            status, error = "error", f"model call failed: {exc}"
        except Stopping:
            raise  # shutting down: resume re-runs this solve
        except Exception as exc:  # noqa: BLE001 - a bug or a reply nobody foresaw: keep what was spent
            status, error = "error", f"the agent failed: {type(exc).__name__}: {exc}"
        usage = client.usage
        transcript.add("end", status=status, error=error, turns=turns, summary=summary, test_runs=tools.test_runs,
                       usage=usage.model_dump())
        log = (f"transcript: {path}\n" if path else "") + (
            f"{self.model}: {turns} turns, {usage.calls} calls, {usage.tokens_in}+{usage.tokens_out} tokens, "
            f"cost {'unknown' if usage.cost is None else f'${usage.cost:.4f}'}\n"
        ) + (f"summary: {summary}\n" if summary else "") + (f"stopped: {error}\n" if error else "")
        return SolveResult(status=status, error=redact(error), usage=usage, log=redact(log)[-4000:], calls=client.calls)


def parse_arguments(arguments: str | None) -> Any:
    """A tool call's arguments as JSON, every string valid Unicode text."""
    return valid_text(json.loads(arguments or "{}"))


def _line_number(value: Any, name: str, default: int) -> int:
    """A 1-based line number from a model's argument (an int, or a string of digits)."""
    if value is None:
        return default
    if isinstance(value, bool):
        raise ToolError(f"'{name}' must be a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ToolError(f"'{name}' must be a whole number, not {value!r:.40}")


def _clip(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} characters)"


@hookimpl
def crossreview_register_agents(register):
    register("llm", LLMAgent, help="llm:<litellm model> a small tool-using coding agent (list/read/write/edit, run_tests)")
