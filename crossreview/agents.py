"""What agents and reviewers are handed, and how specs become them.

An agent spec is ``oracle``, ``noop``, ``command:<template>``, ``llm:<model>``
or anything a plugin registers, optionally named: ``NAME=SPEC``.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pluggy
from pydantic import ValidationError

from . import plugins
from .models import AgentSpec, ReviewVerdictOutput, SolveResult, Task, TestReport

_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,39}$")
OFFLINE_KINDS = {"oracle", "noop", "command"}


class SpecError(ValueError):
    """An agent or reviewer spec that cannot be used; the message says why and what to write."""


@dataclass
class Workspace:
    """Everything an agent gets: a worktree to edit and the task to do there."""

    path: Path
    task: Task
    agent: AgentSpec
    instruction: str
    timeout: float
    suite_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    llm: dict[str, Any] = field(default_factory=dict)
    """The suite's model settings (crossreview.llm.settings.LLMSettings as a dict; no secrets)."""
    budget: Any = None
    """The task run's crossreview.budget.Budget: check() before and charge() after each model
    call, and set ``charges_budget = True`` on the agent (else its SolveResult.usage is charged).
    An agent or reviewer that can never spend (no model, no paid service) sets
    ``spends_nothing = True``: it still runs once a budget is exhausted."""
    artifacts_dir: Path | None = None
    """A folder outside the worktree for files that outlive the run (transcripts)."""


@dataclass
class ReviewRequest:
    """One review: a peer's candidate, anonymized, with its test outcomes.

    ``diff`` is untrusted input written by another agent.
    """

    task: Task
    reviewer: AgentSpec
    candidate_label: str
    instruction: str
    diff: str
    files_changed: list[str]
    tests: TestReport | None
    workdir: Path
    suite_dir: Path
    timeout: float = 300
    llm: dict[str, Any] = field(default_factory=dict)
    budget: Any = None
    """As for Workspace. A reviewer that gives up raises; an exception with a ``usage``
    attribute (a crossreview.models.Usage) has what it spent recorded with the abstention."""
    artifacts_dir: Path | None = None


class Agent(Protocol):
    """What an agent plugin's factory returns. Optionally also ``warm_up()``: load what is slow
    to load (a library) before the solve's clock starts, so agent-seconds are the agent's work."""

    def solve(self, workspace: Workspace) -> SolveResult: ...


class Reviewer(Protocol):
    def review(self, request: ReviewRequest) -> ReviewVerdictOutput: ...


def parse_spec(text: str, index: int) -> AgentSpec:
    """``NAME=SPEC`` or ``SPEC`` (named a, b, c, ... by position)."""
    name, spec = split_named(text, "--agent")
    return AgentSpec(name=name or default_name(index), spec=spec)


# Per flag: a spec to show in its examples, and what a bare SPEC (no NAME=) means.
_NAMED_FLAGS = {
    "--agent": ("oracle", "to be named by position"),
    "--reviewer": ("tests", "to give it to every agent"),
}


def split_named(text: str, flag: str, names: set[str] | None = None) -> tuple[str | None, str]:
    """``NAME=SPEC`` as ``(NAME, SPEC)``, or a bare ``SPEC`` as ``(None, SPEC)``, for ``--agent`` or ``--reviewer``.

    Text before the first '=' that holds a ':' or is no valid name is part of the spec
    (``command:make FIX=1``). ``names``: the agents NAME must be one of (``--reviewer`` names an
    existing agent); None for ``--agent``, which names a new one. Raises SpecError, naming the
    flag and the fix, for an empty text, an empty NAME, a NAME not in ``names`` or an empty SPEC.
    Surrounding blanks are ignored; messages quote ``text`` as given.
    """
    example, bare_means = _NAMED_FLAGS[flag]
    if not text.strip():
        # Else the empty spec is looked up as a kind and reported as an unknown agent or reviewer ''.
        what, name = ("agent", "x") if names is None else ("reviewer", min(names, default="a"))
        leave_out = "" if names is None else f"; or leave out {flag} for each agent's default reviewer"
        raise SpecError(f"{flag} {text!r}: the spec is empty; write the {what}, e.g. {flag} {example} {bare_means}, "
                        f"or NAME=SPEC, e.g. {flag} {name}={example}{leave_out}")
    head, sep, rest = text.strip().partition("=")
    rest = rest.strip()
    if sep and not head.strip():
        # No kind starts with '=': this is NAME=SPEC with the name left out, not a spec nobody registered.
        shown = rest or example
        who = (f"a non-empty NAME (e.g. {flag} x={shown})" if names is None else
               f"NAME one of the agents ({', '.join(sorted(names))}), e.g. {flag} {min(names)}={shown}")
        raise SpecError(f"{flag} {text!r}: empty agent name before '='; write NAME=SPEC with {who}, "
                        f"or just SPEC ({flag} {shown}) {bare_means}")
    if not (sep and ":" not in head and _NAME_RE.match(head)):
        return None, text.strip()
    if names is not None and head not in names:
        raise SpecError(f"{flag} {text!r} names agent {head!r}, but the agents are {', '.join(sorted(names))}")
    if not rest:
        # Else the empty spec is looked up as a kind and reported as an unknown agent or reviewer ''.
        what = "agent" if names is None else "reviewer"
        leave_out = "" if names is None else f", or leave out {flag} {head}=... for agent {head}'s default reviewer"
        raise SpecError(f"{flag} {text!r}: the spec after '{head}=' is empty; write the {what} after '=', "
                        f"e.g. {flag} {head}={example}{leave_out}")
    return head, rest


def default_name(index: int) -> str:
    """a, b, ..., z, then a27, a28, ..."""
    return chr(ord("a") + index) if index < 26 else f"a{index + 1}"


def parse_agents(texts: list[str]) -> list[AgentSpec]:
    """Parse ``--agent`` values; names must be unique."""
    specs = [parse_spec(t, i) for i, t in enumerate(texts)]
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise SpecError(f"two agents are named {s.name!r}; name them apart with NAME=SPEC")
        seen.add(s.name)
    return specs


def pair_reviewers(agents: list[AgentSpec], reviewer_texts: list[str]) -> dict[str, str]:
    """Which reviewer spec each agent reviews with.

    ``NAME=SPEC`` gives agent NAME its reviewer; a bare ``SPEC`` gives it to
    every agent not named; by default each agent reviews with its own model,
    and offline agents with the ``tests`` reviewer.
    """
    names = {a.name for a in agents}
    named: dict[str, str] = {}
    unnamed: str | None = None
    for text in reviewer_texts:
        name, spec = split_named(text, "--reviewer", names)
        if name is not None:
            named[name] = spec
        else:
            if unnamed is not None:
                raise SpecError("more than one unnamed --reviewer; name them per agent: --reviewer NAME=SPEC")
            unnamed = spec
    out = {}
    for a in agents:
        if a.name in named:
            out[a.name] = named[a.name]
        elif unnamed is not None:
            out[a.name] = unnamed
        elif a.kind == "llm":
            out[a.name] = a.spec  # each agent reviews with its own model
        else:
            out[a.name] = "tests"
    return out


def build_agent(spec: AgentSpec, pm: pluggy.PluginManager | None = None) -> Any:
    """The agent object for ``spec``, from whichever plugin registered its kind."""
    kinds = plugins.agent_kinds(pm)
    reg = kinds.get(spec.kind)
    if reg is None:
        raise SpecError(
            f"unknown agent {spec.spec!r} (agent {spec.name}); known kinds: {', '.join(sorted(kinds))}"
            f" (see `crossreview plugins`){plugins.misdeclared_hint(pm)}"
        )
    return _build(reg, spec, "agent")


def build_reviewer(spec: AgentSpec, pm: pluggy.PluginManager | None = None) -> Any:
    """The reviewer object for ``spec``."""
    kinds = plugins.reviewer_kinds(pm)
    reg = kinds.get(spec.kind)
    if reg is None:
        raise SpecError(
            f"unknown reviewer {spec.spec!r} (for agent {spec.name}); known kinds: {', '.join(sorted(kinds))}"
            f"{plugins.misdeclared_hint(pm)}"
        )
    return _build(reg, spec, "reviewer")


def _build(reg: plugins.Registration, spec: AgentSpec, what: str) -> Any:
    """``reg.factory(spec)``; anything but a SpecError it raises is the plugin's bug, and says so."""
    try:
        return reg.factory(spec)
    except SpecError:
        raise
    except Exception as exc:  # noqa: BLE001 - shown to the user with the plugin's name
        raise SpecError(f"{what} {spec.name} ({spec.spec}): the plugin {reg.plugin!r} could not build "
                        f"its {reg.name!r} {what}: {type(exc).__name__}: {exc}") from exc


def expand_template(template: str, values: dict[str, str]) -> str:
    """Fill {python}, {suite}, {task_dir}, {instruction}, {worktree} in a command template.

    Values are shell-quoted; unknown braces are left alone so shell syntax survives.
    """
    out = template
    for key, value in {"python": sys.executable, **values}.items():
        out = out.replace("{" + key + "}", shlex.quote(value))
    return out


class DuplicateKeyError(ValueError):
    """A JSON object that gives one key twice: unusable, and never to be read past for an earlier one."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict:
    # {"verdict": "reject", ..., "verdict": "approve"} must not read as whichever came last:
    # a reviewer that says two things has said nothing usable.
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise DuplicateKeyError(f"the key {key!r} appears twice")
        seen[key] = value
    return seen


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(obj: Any) -> Any:
    """``obj`` (a string, or the strings inside dicts and lists) made storable: JSON's "\\ud800"
    decodes to a lone surrogate, which no file, transcript or ledger row can hold (UTF-8 refuses
    it); each becomes U+FFFD. Untrusted output (a model's reply, a command's JSON) goes through here."""
    if isinstance(obj, str):
        return _SURROGATE.sub("\ufffd", obj)
    if isinstance(obj, dict):
        return {valid_text(k): valid_text(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [valid_text(v) for v in obj]
    return obj


def load_json_object(text: str) -> dict:
    """Parse ``text`` as one JSON object, or raise ValueError saying what is wrong with it.

    Shared by every reviewer that reads a verdict (a command's stdout, a
    model's reply): the output is untrusted, so oversized numbers and absurd
    nesting are errors like any other, never a crash.
    """
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except DuplicateKeyError:
        raise
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting 50,000 deep
        raise ValueError(f"not usable JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    try:
        return valid_text(data)
    except RecursionError:
        raise ValueError("not usable JSON (nested too deep)") from None


def validation_problems(exc: ValidationError) -> str:
    """A pydantic error as one line: ``field: problem; field: problem``."""
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'verdict'}: {e['msg']}" for e in exc.errors())
