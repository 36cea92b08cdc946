"""The pipeline of one task run, as a LangGraph StateGraph.

    prepare ──Send──▶ solve(agent i) ──Send──▶ verify(candidate i) ──▶ plan_reviews
        ──Send──▶ review(j reviews i, j ≠ i) ──▶ decide ──▶ holdout
        ──▶ record                                  (agreement)
        ──▶ escalate ── interrupt() ──▶ record       (disagreement; a human picks or rejects)
                     └──Send──▶ solve (next round)   (the human gave guidance)

    decide ──Send──▶ solve(next agent) ──▶ verify ──▶ plan_reviews ──▶ review(new pairs) ──▶ decide
                                                    (cascade: the decision was not clear and
                                                     an agent has not run yet; same round)

State holds only JSON-able data (models dumped with ``mode="json"``) so the
SQLite checkpoint is plain and portable; nodes turn it back into models.
Runtime objects (plugin manager, ledger, built agents) travel in the
LangGraph runtime context, never in the checkpoint.

Crash safety comes from LangGraph: each finished branch's writes are saved as
it finishes, so invoking the graph again on the same thread re-runs only the
branches that had not finished.
"""

from __future__ import annotations

import hashlib
import operator
import secrets
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import pluggy
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command, Send, interrupt

from . import agents as agents_mod
from . import plugins
from .budget import EXHAUSTED, Budget, Budgets, stopped_by_cap
from .ledger import Ledger
from .models import (
    AgentSpec,
    Candidate,
    CandidateSummary,
    Decision,
    Escalation,
    HumanDecision,
    ReviewVerdictOutput,
    SolveResult,
    Task,
    TaskResult,
    TestReport,
    Usage,
    Verdict,
    utcnow,
)
from . import tamper
from .crashpoints import crash_point
from .packet import build_packet
from .policy import explain_flagged, tampering_line
from .sandbox import Stopping
from .verify import run_tests
from .worktrees import (
    HOLDOUT_DIRNAME,
    TESTS_DIRNAME,
    BaseRepo,
    DiffInfo,
    WorktreeError,
    copy_tests,
    create_worktree,
    keep_branch,
    kept_branch,
    prepare_base,
    reset_to,
    take_diff,
    worktrees_root,
)


@dataclass
class Context:
    """Runtime objects the nodes need; rebuilt by whichever process runs the graph."""

    pm: pluggy.PluginManager
    state_dir: Path
    ledger: Ledger
    _built: dict[tuple[str, str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    budgets: Budgets = field(default_factory=Budgets)
    """Money and token budgets of the runs this process works on."""

    def budget(self, p: dict) -> Budget:
        """The budget of the task run ``p`` belongs to (its parent is the suite run's)."""
        return self.budgets.task(p["run"], p["task_run"], p.get("limits"))

    def agent(self, spec: AgentSpec) -> Any:
        """The agent object for ``spec``, built once per process."""
        return self._get("agent", spec, agents_mod.build_agent)

    def reviewer(self, spec: AgentSpec) -> Any:
        """The reviewer object for ``spec``, built once per process."""
        return self._get("reviewer", spec, agents_mod.build_reviewer)

    def _get(self, kind: str, spec: AgentSpec, build) -> Any:
        key = (kind, spec.name, spec.spec)
        with self._lock:
            if key not in self._built:
                self._built[key] = build(spec, self.pm)
            return self._built[key]


class TaskRunState(TypedDict, total=False):
    run: str
    task_run: str
    task: dict
    agents: list[dict]
    panel: list[dict]
    """Who reviews (default: the agents). The gate's pull request solves but never reviews."""
    focus: str | None
    """The one candidate the decision is about (the gate's pull request); the rest are context."""
    keep: bool
    """Keep an accepted candidate as a branch (default True; the gate, judging an existing branch, does not)."""
    reviewers: dict[str, str]
    policy: str
    suite_dir: str
    base_git_dir: str
    base_commit: str
    round: int
    guidance: list[str]
    candidates: Annotated[list[dict], operator.add]
    verdicts: Annotated[list[dict], operator.add]
    holdouts: Annotated[list[dict], operator.add]
    decisions: Annotated[list[dict], operator.add]
    humans: Annotated[list[dict], operator.add]
    events: Annotated[list[dict], operator.add]
    escalation: dict | None
    result: dict
    llm: dict
    limits: dict
    calibration: dict | None
    """The policy file's content, for the calibrated and cascade policies."""
    active: int
    """Agents started in this task run (the first ``active`` of ``agents``): fewer than all under the cascade."""
    cascade_next: dict | None
    """The agent the cascade starts next (set by decide, read by the route after it)."""
    stages: Annotated[list[dict], operator.add]
    """Decisions the cascade did not stop at (it started another agent instead)."""


_SHARED = ("run", "task_run", "task", "suite_dir", "base_git_dir", "base_commit", "round", "guidance", "reviewers",
           "llm", "limits")


MAX_DIFF_CHARS = 2_000_000
"""The largest diff a candidate may have; a larger one makes the candidate an error."""
_DIFF_KEPT_OF_TOO_LARGE = 20_000


def _artifacts_dir(ctx: Context, p: dict, task: Task) -> Path:
    """Where transcripts of this round's agents and reviewers are kept."""
    rnd = p.get("round") or 0
    base = ctx.state_dir / "transcripts" / p["run"] / task.id
    return base if rnd == 0 else base / f"round-{rnd}"


def _shared(state: dict) -> dict:
    return {k: state.get(k) for k in _SHARED}


def _event(node: str, started, agent: str | None = None, rnd: int = 0, finished=None) -> dict:
    return {"node": node, "agent": agent, "round": rnd, "started": started.isoformat(),
            "finished": (finished or utcnow()).isoformat()}


def _warm_up(agent: Any) -> None:
    """Let an agent or reviewer load what it needs (``warm_up()``, optional) before its clock starts."""
    warm = getattr(agent, "warm_up", None)
    if callable(warm):
        warm()


def worktree_path(state_dir: Path, run: str, task_id: str, agent: str) -> Path:
    """Where agent ``agent``'s worktree for ``task_id`` in ``run`` lives."""
    return worktrees_root(state_dir) / run / task_id / agent


def _base(p: dict) -> BaseRepo:
    return BaseRepo(Path(p["base_git_dir"]), p["base_commit"])


def _instruction(task: Task, guidance: list[str] | None) -> str:
    if not guidance:
        return task.instruction
    notes = "\n".join(f"- {g}" for g in guidance)
    return f"{task.instruction}\n\n## Guidance from the human reviewer\n\n{notes}\n"


def _ensure_candidate_tree(ctx: Context, p: dict, cand: Candidate) -> Path:
    """The candidate's worktree holding exactly base + its diff (recreated after a crash).

    Always reset, even a moment after the agent finished: what the diff does
    not hold must not be there when the tests run — files the agent's own
    .gitignore hides (a conftest.py that rewrites outcomes), compiled
    __pycache__ the snapshot ignores, anything under the tests folder's name.
    """
    task = Task.model_validate(p["task"])
    path = worktree_path(ctx.state_dir, p["run"], task.id, cand.agent)
    if not path.exists():
        create_worktree(ctx.state_dir, _base(p), path)
    reset_to(path, p["base_commit"], cand.diff)
    return path


# --- nodes --------------------------------------------------------------------


def _policy(state: dict, ctx: Context) -> Any:
    """The task run's consensus policy, with its calibration bound when it needs one."""
    policy = plugins.policies(ctx.pm)[state["policy"]].factory
    if getattr(policy, "needs_calibration", False) and hasattr(policy, "with_calibration"):
        from .calibrate import Calibration

        raw = state.get("calibration")
        if raw is None:
            raise RuntimeError(f"policy {state['policy']!r} needs a calibration file and the run has none")
        policy = policy.with_calibration(Calibration.model_validate(raw))
    return policy


def _active(state: dict) -> list[dict]:
    """The agents started so far in this task run."""
    agents = state["agents"]
    return agents[: state.get("active") or len(agents)]


def prepare(state: TaskRunState, runtime: Runtime[Context]) -> dict:
    """Snapshot the task's repository and fix the base commit every worktree starts from."""
    started = utcnow()
    task = Task.model_validate(state["task"])
    base = prepare_base(task, runtime.context.state_dir)
    # A cascade policy starts only its first agents; decide adds the others one by one.
    initial = getattr(_policy(state, runtime.context), "initial_agents", None)
    active = len(state["agents"]) if not initial else max(1, min(int(initial), len(state["agents"])))
    crash_point("prepare", "after")
    return {
        "base_git_dir": str(base.git_dir),
        "base_commit": base.commit,
        "round": 0,
        "guidance": [],
        "active": active,
        "cascade_next": None,
        "events": [_event("prepare", started)],
    }


def fan_out_solve(state: TaskRunState) -> list[Send]:
    """One solve branch per started agent, all at once."""
    shared = _shared(state)
    return [Send("solve", {**shared, "agent": a}) for a in _active(state)]


def solve(p: dict, runtime: Runtime[Context]) -> Command:
    """Run one agent in a fresh worktree and take its diff."""
    ctx = runtime.context
    task = Task.model_validate(p["task"])
    spec = AgentSpec.model_validate(p["agent"])
    path = worktree_path(ctx.state_dir, p["run"], task.id, spec.name)
    # Always fresh: a solve re-run after a crash must not see the dead attempt's files.
    create_worktree(ctx.state_dir, _base(p), path)
    pointer = tamper.git_pointer(path)
    if task.tests_visible:
        copy_tests(task.tests_dir, path, TESTS_DIRNAME)
    crash_point("solve", "before", spec.name)
    workspace = agents_mod.Workspace(
        path=path,
        task=task,
        agent=spec,
        instruction=_instruction(task, p.get("guidance")),
        timeout=task.agent_timeout,
        suite_dir=Path(p["suite_dir"]),
        llm=p.get("llm") or {},
        budget=ctx.budget(p),
        artifacts_dir=_artifacts_dir(ctx, p, task),
    )
    started = utcnow()
    solving = False  # set once agent.solve is called: from then on a raise may follow spending
    try:
        agent = ctx.agent(spec)
        _warm_up(agent)
        # Agent-seconds are the agent's own working time: the worktree made above and a library
        # loaded for it are crossreview's set-up, which a resumed solve does more of (a leftover
        # worktree to remove, litellm imported in the middle of the first model call).
        started = utcnow()
        # An exhausted budget stops what may spend; an agent that spends nothing (oracle, noop) still runs.
        spent = None if getattr(agent, "spends_nothing", False) else workspace.budget.exceeded()
        if spent:
            result = SolveResult(status="error", error=f"not started: {spent}")
        else:
            solving = True
            result = agent.solve(workspace)
            if not isinstance(result, SolveResult):
                raise TypeError(f"{_plugin_of(ctx.pm, 'agent', spec.kind)} solve() returned "
                                f"{type(result).__name__}, not a crossreview.models.SolveResult")
            if not getattr(agent, "charges_budget", False):
                workspace.budget.charge(result.usage.tokens, result.usage.cost)
    except Stopping:
        raise  # shutting down: leave this branch unfinished so resume re-runs it
    except Exception as exc:  # an agent plugin's bug is that candidate's error, not the run's
        result = SolveResult(status="error", error=f"{type(exc).__name__}: {exc}")
        if solving:
            result.usage, result.calls = _usage_of_failure(exc, agent, workspace.budget)
    finished = utcnow()
    crash_point("solve", "after-agent", spec.name)
    # Before any git command runs in the worktree: a .git the agent replaced
    # could make git run its code here, outside the sandbox.
    tampering = [why for why in [pointer and tamper.restore_git_pointer(path, pointer)] if why]
    shown = tamper.visible_test_edits(task.tests_dir, path / TESTS_DIRNAME) if task.tests_visible else []
    try:
        diff = take_diff(path, p["base_commit"])
    except WorktreeError as exc:
        # git cannot take this worktree's change (say, a repository nested in it with no commit):
        # that candidate's error, not the whole task run's.
        diff = DiffInfo(text="", files=[], added=0, removed=0)
        result = SolveResult(status="error", usage=result.usage, calls=result.calls, log=result.log,
                             error=f"its change could not be taken from the worktree: {exc}")
    configs = tamper.config_texts(path, p["base_commit"], diff.files)
    tampering += tamper.detect_tampering(diff.files, configs, shown)
    texts: dict = {}
    if "{tests}" not in task.verifier_command:
        # The verifier runs the repository's own tests (the gate's default): editing them is editing the
        # judge, and so is a new test that patches what they test.
        texts = tamper.repo_test_texts(path, p["base_commit"], diff.files)
        tampering += [t for t in tamper.repo_test_edits(diff.files, texts) if t not in tampering]
        tampering += [t for t in tamper.repo_shadowing(path, p["base_commit"], diff.files) if t not in tampering]
        # The patch can sit outside the tests, in a module the change adds or edits that its tests import.
        tampering += [t for t in tamper.repo_helper_reach(path, p["base_commit"], diff.files, texts)
                      if t not in tampering]
    test_files = tamper.judge_files(diff.files, texts, configs)
    if len(diff.text) > MAX_DIFF_CHARS and result.status == "ok":
        # Every checkpoint, the ledger and each reviewer would carry it: an error, never reviewed or accepted.
        result = SolveResult(status="error", usage=result.usage, calls=result.calls, log=result.log,
                             error=f"the diff is {len(diff.text):,} characters; crossreview takes at most "
                                   f"{MAX_DIFF_CHARS:,} (files: {', '.join(diff.files[:10])})")
        diff.text = diff.text[:_DIFF_KEPT_OF_TOO_LARGE] + "\n... (cut: the diff was too large to review)\n"
    cand = Candidate(
        agent=spec.name,
        spec=spec.spec,
        round=p.get("round") or 0,
        status=result.status,
        error=result.error,
        diff=diff.text,
        files_changed=diff.files,
        lines_added=diff.added,
        lines_removed=diff.removed,
        started=started,
        finished=finished,
        usage=result.usage,
        calls=result.calls,
        log=result.log,
        tampering=tampering,
        test_files=test_files,
    )
    ctx.pm.hook.crossreview_candidate_solved(task=task, task_run=p["task_run"], candidate=cand)
    crash_point("solve", "after", spec.name)
    return Command(
        update={"events": [_event("solve", started, spec.name, cand.round, finished)]},
        goto=Send("verify", {**{k: p[k] for k in _SHARED}, "candidate": cand.model_dump(mode="json")}),
    )


def verify(p: dict, runtime: Runtime[Context]) -> dict:
    """Run the task's tests on exactly the candidate's diff."""
    ctx = runtime.context
    task = Task.model_validate(p["task"])
    cand = Candidate.model_validate(p["candidate"])
    started = utcnow()
    crash_point("verify", "before", cand.agent)
    if cand.status == "ok":
        path = _ensure_candidate_tree(ctx, p, cand)
        cand.tests = run_tests(task, path, changed=cand.files_changed)
        cand.tampering += [t for t in cand.tests.tampering if t not in cand.tampering]
    ctx.pm.hook.crossreview_candidate_verified(task=task, task_run=p["task_run"], candidate=cand)
    crash_point("verify", "after", cand.agent)
    return {
        "candidates": [cand.model_dump(mode="json")],
        "events": [_event("verify", started, cand.agent, cand.round)],
    }


def _round_candidates(state: dict) -> list[Candidate]:
    rnd = state.get("round") or 0
    order = {a["name"]: i for i, a in enumerate(state["agents"])}
    cands = [Candidate.model_validate(c) for c in state.get("candidates", []) if c.get("round", 0) == rnd]
    # Keep the latest write per agent (a resumed branch may have written twice).
    latest = {c.agent: c for c in cands}
    return sorted(latest.values(), key=lambda c: order.get(c.agent, 99))


def _round_verdicts(state: dict) -> list[Verdict]:
    rnd = state.get("round") or 0
    latest = {}
    for v in state.get("verdicts", []):
        if v.get("round", 0) == rnd:
            latest[(v["reviewer"], v["candidate"])] = Verdict.model_validate(v)
    return list(latest.values())


def plan_reviews(state: TaskRunState) -> dict:
    """Join point after verification; the fan-out to reviews follows."""
    return {}


def candidate_label(task_run: str, agent: str) -> str:
    """An anonymous, stable name for a candidate, so a reviewer cannot tell whose it is."""
    return "candidate-" + hashlib.sha256(f"{task_run}\0{agent}".encode()).hexdigest()[:6]


def fan_out_review(state: TaskRunState) -> list[Send] | str:
    """Every started agent's reviewer reviews every other started agent's candidate.

    Pairs already reviewed this round are not sent again: after the cascade
    adds an agent, only the new pairs run (it reviews the others, they review it).
    """
    shared = _shared(state)
    sends = []
    cands = _round_candidates(state)
    done = {(v.reviewer, v.candidate) for v in _round_verdicts(state)}
    # The gate's panel reviews; otherwise the agents started so far (the cascade starts them lazily).
    for reviewer in state.get("panel") or _active(state):
        for cand in cands:
            if cand.agent == reviewer["name"] or cand.status != "ok" or (reviewer["name"], cand.agent) in done:
                continue
            sends.append(
                Send("review", {**shared, "reviewer": reviewer, "candidate": cand.model_dump(mode="json")})
            )
    return sends or "decide"


def review(p: dict, runtime: Runtime[Context]) -> dict:
    """One reviewer judges one candidate; a reviewer that fails abstains, never approves."""
    ctx = runtime.context
    task = Task.model_validate(p["task"])
    agent = AgentSpec.model_validate(p["reviewer"])
    cand = Candidate.model_validate(p["candidate"])
    rspec = AgentSpec(name=agent.name, spec=p["reviewers"][agent.name])
    label = candidate_label(p["task_run"], cand.agent)
    workdir = ctx.state_dir / "reviews" / p["run"] / task.id / f"r{p.get('round') or 0}-{agent.name}-{label}"
    request = agents_mod.ReviewRequest(
        task=task,
        reviewer=rspec,
        candidate_label=label,
        instruction=_instruction(task, p.get("guidance")),
        diff=cand.diff,
        files_changed=cand.files_changed,
        tests=cand.tests,
        workdir=workdir,
        suite_dir=Path(p["suite_dir"]),
        timeout=max(task.verifier_timeout, 300.0),
        llm=p.get("llm") or {},
        budget=ctx.budget(p),
        artifacts_dir=_artifacts_dir(ctx, p, task),
    )
    usage = Usage()
    crash_point("review", "before", agent.name)
    started = utcnow()
    reviewing = False  # set once reviewer.review is called: from then on a raise may follow spending
    try:
        reviewer = ctx.reviewer(rspec)
        _warm_up(reviewer)
        started = utcnow()  # the reviewer's own time, as for a solve
        spent = None if getattr(reviewer, "spends_nothing", False) else request.budget.exceeded()
        if spent:
            raise RuntimeError(f"not started: {spent}")
        reviewing = True
        out = reviewer.review(request)
        if not isinstance(out, ReviewVerdictOutput):
            raise TypeError(f"{_plugin_of(ctx.pm, 'reviewer', rspec.kind)} review() returned "
                            f"{type(out).__name__}, not a crossreview.models.ReviewVerdictOutput")
        if out.usage is not None and not getattr(reviewer, "charges_budget", False):
            request.budget.charge(out.usage.tokens, out.usage.cost)
        verdict = Verdict(
            reviewer=agent.name,
            candidate=cand.agent,
            round=cand.round,
            verdict=out.verdict,
            confidence=out.confidence,
            concerns=out.concerns,
            prefers=cand.agent if out.prefers in (label, cand.agent) else None,
            usage=out.usage or usage,
            calls=out.calls,
        )
    except Stopping:
        raise
    except Exception as exc:  # noqa: BLE001 - any reviewer failure is an abstention
        calls = exc.calls if isinstance(getattr(exc, "calls", None), list) else []
        if isinstance(getattr(exc, "usage", None), Usage):
            # What the reviewer spent before it gave up: model and command reviewers report their
            # whole spend on the exception (unknown where they cannot tell), so it is kept as is.
            usage = exc.usage
        elif reviewing:
            # It said nothing, yet may have called a model before it raised: unknown, not $0.
            usage, calls = _usage_of_failure(exc, reviewer, request.budget)
        verdict = Verdict(
            reviewer=agent.name,
            candidate=cand.agent,
            round=cand.round,
            verdict="abstain",
            confidence=0.0,
            error=f"{rspec.spec}: {exc}",
            usage=usage,
            calls=calls,
        )
    finished = utcnow()
    verdict.seconds = (finished - started).total_seconds()
    ctx.pm.hook.crossreview_review_done(task=task, task_run=p["task_run"], verdict=verdict)
    crash_point("review", "after", agent.name)
    return {
        "verdicts": [verdict.model_dump(mode="json")],
        "events": [_event("review", started, agent.name, cand.round, finished)],
    }


def decide(state: TaskRunState, runtime: Runtime[Context]) -> dict:
    """Apply the consensus policy to this round."""
    started = utcnow()
    policy = _policy(state, runtime.context)
    cands = _round_candidates(state)
    verdicts = _round_verdicts(state)
    focus = state.get("focus")
    if focus:
        # The decision is about one candidate; the others were reviewed so that
        # disagreement with independent attempts shows in the packet.
        decision = policy.decide([c for c in cands if c.agent == focus], [v for v in verdicts if v.candidate == focus])
        others = [_attempt_line(c, verdicts) for c in cands if c.agent != focus]
        if others:
            decision.reason = f"{decision.reason}; independent attempts: {'; '.join(others)}"
    else:
        decision = policy.decide(cands, verdicts)
    _check_decision(runtime.context.pm, decision, state, focus, cands)
    win = next((c for c in cands if c.agent == decision.winner), None) if decision.kind == "accepted" else None
    if win is not None and win.tampering:
        # Whatever a plugin policy says: a candidate that may fake its results goes to a human.
        decision = Decision(
            kind="escalated",
            reason=f"{tampering_line(win)} — {decision.policy or state['policy']} would accept it; a human must look",
            disagreements=[tampering_line(win), *decision.disagreements],
            policy=decision.policy,
        )
    # So the faces can say "may fake its test results" instead of "the reviewers disagree" when that
    # is the whole story, and name what else sends it to a human when it is not (a score below the
    # threshold is no disagreement). Computed here for every policy; a plugin policy's own
    # tampering_alone is not kept, its cause is.
    decided = [c for c in cands if c.agent == focus] if focus else cands
    decision = explain_flagged(
        policy, decided, [v for v in verdicts if v.candidate == focus] if focus else verdicts, decision)
    stopped = [c.agent for c in cands if EXHAUSTED in (c.error or "")] + [
        f"{v.reviewer}'s review of {v.candidate}" for v in verdicts if EXHAUSTED in (v.error or "")]
    if stopped:
        why = runtime.context.budget(state).exceeded() or EXHAUSTED
        decision.reason = f"{decision.reason}; {why}: stopped {', '.join(stopped)}"
    rnd = state.get("round") or 0
    active = _active(state)
    if decision.kind == "escalated" and getattr(policy, "initial_agents", None) and len(active) < len(state["agents"]):
        # Cascade: not clear with the agents so far; start the next one before asking a human.
        nxt = state["agents"][len(active)]
        crash_point("decide", "after")
        return {
            "stages": [{"round": rnd, "agents": len(active), **decision.model_dump(mode="json")}],
            "active": len(active) + 1,
            "cascade_next": nxt,
            "escalation": None,
            "events": [_event("decide", started, None, rnd)],
        }
    escalation = None
    if decision.kind == "escalated":
        escalation = {"id": "e-" + secrets.token_hex(3), "round": rnd}
    crash_point("decide", "after")
    return {
        "cascade_next": None,
        "decisions": [{"round": rnd, **decision.model_dump(mode="json")}],
        "escalation": escalation,
        "events": [_event("decide", started, None, rnd)],
    }


def _plugin_of(pm: pluggy.PluginManager, what: str, kind: str) -> str:
    """``the plugin 'mycli''s agent 'mycli':`` -- who to blame for a broken return value."""
    regs = plugins.agent_kinds(pm) if what == "agent" else plugins.reviewer_kinds(pm)
    reg = regs.get(kind)
    return f"{what} {kind!r} of the plugin {reg.plugin!r}:" if reg else f"{what} {kind!r}:"


def _check_decision(pm: pluggy.PluginManager, decision: Any, state: dict, focus: str | None, cands: list[Candidate]) -> None:
    """A policy plugin's answer must be a Decision that names a winner it may name; else say whose bug it is."""
    name = state["policy"]
    reg = plugins.policies(pm).get(name)
    who = f"policy {name!r}" + (f" (plugin {reg.plugin!r})" if reg else "")
    fix = f"; fix the plugin, then `crossreview resume {state['run']}` decides again (the candidates are kept)"
    if not isinstance(decision, Decision):
        raise TypeError(f"{who} returned {type(decision).__name__} from decide(), "
                        f"not a crossreview.models.Decision{fix}")
    if decision.kind == "accepted":
        names = [c.agent for c in cands if (not focus or c.agent == focus) and c.status == "ok"]
        if decision.winner not in names:
            raise ValueError(f"{who} accepted with winner {decision.winner!r}, which is not one of this "
                             f"round's candidates that finished ({', '.join(names) or 'none'}){fix}")


def _attempt_line(c: Candidate, verdicts: list[Verdict]) -> str:
    on_it = [v for v in verdicts if v.candidate == c.agent]
    ok = sum(1 for v in on_it if v.verdict == "approve")
    tests = f"{c.tests.passed}/{c.tests.total} tests" if c.tests else c.status
    return f"{c.agent} {tests}, {ok}/{len(on_it)} approvals"


def holdout(state: TaskRunState, runtime: Runtime[Context]) -> dict:
    """Run holdout tests on every candidate, whatever the decision, to score it later.

    Nobody making the decision sees these results: not agents, reviewers, the
    policy or the human's packet.
    """
    task = Task.model_validate(state["task"])
    if not task.holdout_dir.is_dir():
        return {}
    started = utcnow()
    ctx = runtime.context
    cands = [c for c in _round_candidates(state) if c.status == "ok"]

    def one(cand: Candidate) -> dict:
        path = _ensure_candidate_tree(ctx, state, cand)
        # changed: as in verify, a conftest.py the candidate's diff touches below the root gets a canary
        # beside it; without one, forced passes there would fake the holdout score.
        report = run_tests(task, path, source=task.holdout_dir, dirname=HOLDOUT_DIRNAME,
                           changed=cand.files_changed)
        return {"agent": cand.agent, "round": cand.round, "report": report.model_dump(mode="json")}

    with ThreadPoolExecutor(max_workers=max(1, len(cands))) as pool:
        results = list(pool.map(one, cands))
    crash_point("holdout", "after")
    return {"holdouts": results, "events": [_event("holdout", started, None, state.get("round") or 0)]}


def route_after_decide(state: TaskRunState) -> list[Send] | str:
    """The cascade's second fan-out: solve with the next agent; otherwise on to holdout.

    A task without holdout tests skips the holdout step (one checkpoint less).
    """
    nxt = state.get("cascade_next")
    if nxt:
        return [Send("solve", {**_shared(state), "agent": nxt})]
    if not Task.model_validate(state["task"]).holdout_dir.is_dir():
        return route_after_holdout(state)
    return "holdout"


def route_after_holdout(state: TaskRunState) -> str:
    """Escalate disagreements; record everything else."""
    return "escalate" if state.get("escalation") else "record"


def escalate(state: TaskRunState) -> Command:
    """Park the run for a human with interrupt(); resume with their decision.

    This node runs again from the top when resumed, so it has no side effects
    before interrupt(): the inbox entry is written by the caller.
    """
    task = Task.model_validate(state["task"])
    rnd = state.get("round") or 0
    decision = Decision.model_validate({k: v for k, v in state["decisions"][-1].items() if k != "round"})
    packet = build_packet(task, _round_candidates(state), _round_verdicts(state), decision,
                          rnd=rnd, guidance=state.get("guidance") or [])
    esc = state["escalation"]
    answer = interrupt({**esc, "reason": decision.reason, "packet": packet})
    human = HumanDecision.model_validate(answer)
    update: dict[str, Any] = {"humans": [{"round": rnd, "escalation": esc["id"], **human.model_dump(mode="json")}]}
    if human.action == "guide":
        nxt = {**state, "round": rnd + 1, "guidance": [*(state.get("guidance") or []), human.guide or ""]}
        shared = _shared(nxt)
        update.update({"round": rnd + 1, "guidance": nxt["guidance"], "escalation": None})
        return Command(update=update, goto=[Send("solve", {**shared, "agent": a}) for a in _active(state)])
    return Command(update=update, goto="record")


def record(state: TaskRunState, runtime: Runtime[Context]) -> dict:
    """Write the task run to the ledger and keep the accepted candidate as a branch."""
    ctx = runtime.context
    task = Task.model_validate(state["task"])
    rnd = state.get("round") or 0
    cands = _round_candidates(state)
    last = state["decisions"][-1]
    decision = Decision.model_validate({k: v for k, v in last.items() if k != "round"})
    humans = [h for h in state.get("humans", []) if h.get("round") == rnd]
    kind, winner, reason = decision.kind, decision.winner, decision.reason
    escalation_id = None
    if humans:
        h = humans[-1]
        escalation_id = h["escalation"]
        if h["action"] == "pick":
            kind, winner = "accepted", h["pick"]
            reason = f"a human picked {winner} ({escalation_id}): {decision.reason}"
        else:
            kind, winner = "rejected", None
            reason = f"a human rejected every candidate ({escalation_id})"
    branch = None
    if kind == "accepted" and winner and state.get("keep", True):
        cand = next(c for c in cands if c.agent == winner)
        branch = kept_branch(state["run"], task.id)
        ctx_msg = f"crossreview: {task.id} by {winner} (run {state['run']})\n\n{reason}"
        crash_point("record", "before-branch")
        keep_branch(ctx.state_dir, BaseRepo(Path(state["base_git_dir"]), state["base_commit"]), branch, cand.diff, ctx_msg,
                    worktree=worktree_path(ctx.state_dir, state["run"], task.id, winner))

    all_cands, verdicts = everything_so_far(state)
    events = state.get("events", [])
    started = min((e["started"] for e in events), default=utcnow().isoformat())
    seconds = (utcnow() - datetime.fromisoformat(started)).total_seconds()
    round_verdicts = [v for v in verdicts if v.round == rnd]
    result = TaskResult(
        task=task.id,
        task_run=state["task_run"],
        run=state["run"],
        decision=kind,
        winner=winner,
        escalation=escalation_id,
        reason=reason,
        branch=branch,
        candidates=[summarize(c, round_verdicts) for c in cands],
        seconds=seconds,
        stopped=stopped_by_cap([c.error for c in all_cands] + [v.error for v in verdicts]),
        **spend([c.usage for c in all_cands] + [v.usage for v in verdicts]),
    )
    crash_point("record", "before-ledger")
    ctx.ledger.record_task_run(
        result,
        all_cands,
        verdicts,
        [(d["round"], Decision.model_validate({k: v for k, v in d.items() if k != "round"})) for d in state["decisions"]],
        events + [_event("record", utcnow(), None, rnd)],
        rounds=rnd + 1,
        calls=_itemized_calls(all_cands, verdicts),
        agents_used=len(_active(state)),
        agents_configured=len(state["agents"]),
    )
    crash_point("record", "after-ledger")
    return {"result": result.model_dump(mode="json")}


def everything_so_far(state: dict) -> tuple[list[Candidate], list[Verdict]]:
    """Every round's candidates (with holdout results) and verdicts in the state, latest write of each."""
    holdouts = {(h["agent"], h["round"]): TestReport.model_validate(h["report"]) for h in state.get("holdouts", [])}
    seen = {}
    for c in state.get("candidates", []):
        cand = Candidate.model_validate(c)
        cand.holdout = holdouts.get((cand.agent, cand.round))
        seen[(cand.agent, cand.round)] = cand
    verdicts = {}
    for v in state.get("verdicts", []):
        verdicts[(v["reviewer"], v["candidate"], v.get("round", 0))] = Verdict.model_validate(v)
    return list(seen.values()), list(verdicts.values())


def record_parked(ledger: Ledger, state: dict) -> None:
    """Write a run parked at an escalation to the ledger as far as it got (it stays parked).

    So its candidates, verdicts and spending are in the ledger even if nobody
    ever resumes it here (a CI gate's human decides on GitHub); recording the
    finished run later replaces these rows.
    """
    cands, verdicts = everything_so_far(state)
    decisions = [(d["round"], Decision.model_validate({k: v for k, v in d.items() if k != "round"}))
                 for d in state.get("decisions", [])]
    ledger.record_parked(state["task_run"], cands, verdicts, decisions, state.get("events", []),
                         rounds=(state.get("round") or 0) + 1, calls=_itemized_calls(cands, verdicts),
                         agents_used=len(_active(state)), agents_configured=len(state["agents"]))


def _itemized_calls(cands: list[Candidate], verdicts: list[Verdict]) -> list[dict]:
    """Every model call of the task run, for the ledger's calls table (retries included)."""
    out = [{**call, "phase": "solve", "agent": c.agent, "round": c.round, "seq": i}
           for c in cands for i, call in enumerate(c.calls)]
    out += [{**call, "phase": "review", "agent": v.reviewer, "candidate": v.candidate, "round": v.round, "seq": i}
            for v in verdicts for i, call in enumerate(v.calls)]
    return out


def _usage_of_failure(exc: Exception, plugin: Any, budget: Any) -> tuple[Usage, list]:
    """What a solve or review that raised spent: unknown (cost None), never $0, and at least what it reported.

    An agent or reviewer may have called a model before it raised, and nothing returned says
    for how much, so its cost is unknown, as for a model call killed in flight. What it did
    report, on the exception's ``usage`` or in ``calls``, is kept, and its money becomes the
    lower bound (``cost_known``): the cost is "≥ $X", not $X.
    """
    reported = getattr(exc, "usage", None)
    reported = reported if isinstance(reported, Usage) else Usage()
    calls = getattr(exc, "calls", None)
    known = reported.cost if reported.cost is not None else reported.cost_known
    usage = Usage(tokens_in=reported.tokens_in, tokens_out=reported.tokens_out, calls=reported.calls,
                  cost=None, cost_known=known)
    if budget is not None and not getattr(plugin, "charges_budget", False):
        # Its budget heard nothing of this work (charged only when it returns): count what was
        # reported against the caps, and the rest as a charge of unknown cost, as it is.
        budget.charge(usage.tokens, known)
        budget.charge(0, None)
    return usage, calls if isinstance(calls, list) else []


def spend(usages: list[Usage]) -> dict:
    """``tokens`` and ``cost`` of a TaskResult from every solve's and review's usage (an unknown cost stays unknown)."""
    costs = [u.cost for u in usages]
    return {"tokens": sum(u.tokens for u in usages),
            "cost": None if any(c is None for c in costs) else round(sum(costs), 10)}


def summarize(c: Candidate, verdicts: list[Verdict]) -> CandidateSummary:
    """The per-candidate line of ``run --json``."""
    on_it = [v for v in verdicts if v.candidate == c.agent]
    return CandidateSummary(
        agent=c.agent,
        status=c.status,
        tests_passed=c.tests.passed if c.tests else 0,
        tests_total=c.tests.total if c.tests else 0,
        approvals=sum(1 for v in on_it if v.verdict == "approve"),
        reviews=len(on_it),
        tokens=c.usage.tokens,
        cost=c.usage.cost,
        cost_known=c.usage.cost_known if c.usage.cost is None else None,
        seconds=round(c.seconds, 3),
        tampering=list(c.tampering),
    )


def build_graph() -> StateGraph:
    """The task-run StateGraph, uncompiled."""
    g = StateGraph(TaskRunState, context_schema=Context)
    g.add_node("prepare", prepare)
    g.add_node("solve", solve, destinations=("verify",))
    g.add_node("verify", verify)
    g.add_node("plan_reviews", plan_reviews)
    g.add_node("review", review)
    g.add_node("decide", decide)
    g.add_node("holdout", holdout)
    g.add_node("escalate", escalate, destinations=("record", "solve"))
    g.add_node("record", record)
    g.add_edge(START, "prepare")
    g.add_conditional_edges("prepare", fan_out_solve, ["solve"])
    g.add_edge("verify", "plan_reviews")
    g.add_conditional_edges("plan_reviews", fan_out_review, ["review", "decide"])
    g.add_edge("review", "decide")
    g.add_conditional_edges("decide", route_after_decide, ["solve", "holdout", "escalate", "record"])
    g.add_conditional_edges("holdout", route_after_holdout, ["escalate", "record"])
    g.add_edge("record", END)
    return g


def escalation_from_interrupt(value: dict, state: dict) -> Escalation:
    """The Escalation a parked graph reports through its interrupt value."""
    return Escalation(
        id=value["id"],
        run=state["run"],
        task_run=state["task_run"],
        task=value["packet"]["task"],
        reason=value["reason"],
        round=value.get("round", 0),
        packet=value["packet"],
    )
