"""Run suites of tasks through the pipeline: the library API the CLI and pytest plugin call.

    from crossreview.runner import RunOptions, run_suite
    outcome = run_suite(RunOptions(paths=[Path("tasks")], agents=["oracle", "noop"]))

A suite run is many task runs, each one LangGraph thread (thread id = task
run id) checkpointed in ``<state_dir>/checkpoints.db``, so a run parked at an
escalation or killed mid-way is finished later from any process.
"""

from __future__ import annotations

import difflib
import json
import os
import secrets
import shutil
import sqlite3
import sys
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import pluggy

from . import agents as agents_mod
from . import locks, plugins
from .budget import Budgets
from .ledger import Ledger, LedgerError
from .models import AgentSpec, HumanDecision, Task, TaskError, TaskResult
from .tasks import ConfigError, LoadedConfig, load_suite, load_suite_config
from . import sandbox as sandbox_mod
from .crashpoints import crash_point
from .sandbox import Stopping, kill_all_children, kill_leftovers
from .worktrees import BaseRepo, ensure_state_dir, find_orphans, owner_pids, remove_worktrees
from .words import count_phrase, when

DEFAULT_STATE_DIR = Path(".crossreview")
DEFAULT_AGENTS = ["oracle", "noop"]


class UsageError(Exception):
    """Bad flags, specs or config: nothing was run (exit code 2)."""


class AllTasksBroken(UsageError):
    """Every task folder is broken: nothing was run (exit code 2); ``errors`` says what to fix."""

    def __init__(self, message: str, errors: list[TaskError]):
        super().__init__(message)
        self.errors = errors


@dataclass
class RunOptions:
    """Everything a suite run needs; flags win over the suite's config file."""

    paths: list[Path] = field(default_factory=lambda: [Path("tasks")])
    agents: list[str] = field(default_factory=list)
    reviewers: list[str] = field(default_factory=list)
    policy: str | None = None
    jobs: int | None = None
    ledger: Path | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    interactive: bool = False
    run_id: str | None = None
    max_cost: float | str | None = None
    """USD for the whole suite run (None: the config's max_cost; budget.NO_CAP: no cap, whatever the config
    says). The same holds for the other three caps."""
    max_tokens: int | str | None = None
    max_task_cost: float | str | None = None
    """USD for each task run."""
    max_task_tokens: int | str | None = None
    sandbox: str | None = None
    """auto | required | off (default: the config's ``sandbox``, else auto); see crossreview/sandbox.py."""
    calibration: Path | None = None
    """Policy file of the calibrated / cascade policies (default: the config's, else <state_dir>/calibration.json)."""


@dataclass
class SuiteOutcome:
    """The result of a suite run: one TaskResult per task that ran, and the broken tasks."""

    run: str
    results: list[TaskResult]
    errors: list[TaskError]
    warnings: list[str] = field(default_factory=list)
    """What the user should know about the run that no single task says (printed after the table)."""
    kept: int = 0
    """Task runs a resume kept from before (finished or waiting): their seconds are not this process's."""

    @property
    def exit_code(self) -> int:
        """0 all accepted, 1 anything rejected, broken or cut short by a budget cap, 3 anything waiting for a human."""
        return exit_code_for(self.results, self.errors)


def exit_code_for(results: list[TaskResult], errors: list[TaskError] | None = None) -> int:
    """DESIGN.md's exit codes: a rejection or failure (1) outranks a wait for a human (3).

    A task run a budget cap cut short did not finish its work, whatever was decided without it: it
    counts as a failure (1), so "every task accepted" (0) is never said of a run the cap stopped."""
    decisions = {r.decision for r in results}
    if "rejected" in decisions or "error" in decisions or errors or any(r.stopped for r in results):
        return 1 if results else 2
    if "escalated" in decisions:
        return 3
    return 0


@dataclass
class Session:
    """The open pieces of one process's work: plugins, ledger, checkpointer, compiled graph."""

    pm: pluggy.PluginManager
    state_dir: Path
    ledger: Ledger
    graph: Any
    context: Any
    in_flight: dict[str, tuple] = field(default_factory=dict)
    """Task runs started and not yet cleaned up: id -> cleanup_task_run's arguments after the session."""


@contextmanager
def open_session(state_dir: Path, ledger_path: Path | None = None, pm: pluggy.PluginManager | None = None) -> Iterator[Session]:
    """Open ledger, checkpointer and graph (LangGraph is imported here, not at CLI start)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from .graph import Context, build_graph

    state_dir = ensure_state_dir(state_dir.resolve())
    pm = pm or plugins.get_plugin_manager()
    ledger = Ledger(ledger_path or state_dir / "ledger.db")
    conn = sqlite3.connect(state_dir / "checkpoints.db", check_same_thread=False, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    # WAL with synchronous=NORMAL survives a crash of crossreview (what resume
    # is for) without an fsync per checkpoint; only a power cut can lose the
    # last steps, which resume then re-runs.
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        saver = SqliteSaver(conn)
        graph = build_graph().compile(checkpointer=saver)
        budgets = Budgets(on_charge=_spend_journal(ledger), on_call=_call_journal(ledger))
        yield Session(pm, state_dir, ledger, graph, Context(pm=pm, state_dir=state_dir, ledger=ledger, budgets=budgets))
    finally:
        conn.close()


def _spend_journal(ledger: Ledger) -> Callable[..., None]:
    """Budgets' on_charge: each charge goes to the ledger's spend journal at once."""
    def journal(task_run: str, tokens: int, cost: float | None, call: str | None = None) -> None:
        try:
            ledger.record_spend(task_run, tokens, cost, call_id=call)
        except LedgerError as exc:  # the work is done and charged in memory; losing its journal row is no reason to fail it
            print(f"crossreview: could not journal spend of {task_run}: {exc}", file=sys.stderr)
    return journal


def _call_journal(ledger: Ledger) -> Callable[[str, str, str | None], None]:
    """Budgets' on_call: each model call is journaled as in flight before it is sent (one small write)."""
    def journal(task_run: str, call: str, model: str | None) -> None:
        try:
            ledger.record_call_started(task_run, call, model)
        except LedgerError as exc:  # the call's charge is still journaled when it ends
            print(f"crossreview: could not journal a model call of {task_run}: {exc}", file=sys.stderr)
    return journal


@contextmanager
def run_lock(state_dir: Path, run: str) -> Iterator[None]:
    """Hold ``run`` for this process: a second process resuming it (or resuming it while
    it still runs) gets a UsageError instead of both running every task and removing
    each other's worktrees. An flock: it dies with the process, so a killed run is free."""
    ensure_state_dir(state_dir)
    try:
        with locks.hold(locks.run_lock_path(state_dir, run)):
            yield
    except locks.Busy as busy:
        raise UsageError(f"run {run} is being worked on right now by {busy.holder}; wait for it to finish "
                         f"(or stop it), then `crossreview resume {run}`") from None


def run_is_live(state_dir: Path, run: str) -> bool:
    """Whether some process works on ``run`` now (see crossreview.locks)."""
    return locks.run_is_live(state_dir, run)


def new_run_id() -> str:
    """A short id people can type: r-<8 hex>."""
    return "r-" + secrets.token_hex(4)


@dataclass
class Resolved:
    """A run's settings after flags and the suite config are merged and checked."""

    agents: list[AgentSpec]
    reviewers: dict[str, str]
    policy: str
    jobs: int
    suite_dir: Path
    ledger: Path | None
    llm: dict = field(default_factory=dict)
    limits: dict = field(default_factory=dict)
    sandbox: dict = field(default_factory=dict)
    calibration: dict | None = None
    """The policy file's content, for policies that need one (recorded in the run's config)."""


def resolve_options(opts: RunOptions, pm: pluggy.PluginManager, loaded: LoadedConfig | None = None) -> Resolved:
    """Merge flags with the suite config and check every spec can be built (else UsageError).

    ``loaded`` is a config already read (the gate reads the base branch's);
    by default the config is looked up from ``opts.paths``.
    """
    if loaded is None:
        try:
            loaded = load_suite_config(opts.paths)
        except ConfigError as exc:
            raise UsageError(str(exc)) from None
    cfg = loaded.config
    agent_texts = opts.agents or cfg.agents or DEFAULT_AGENTS
    # The config's reviewers are paired with the config's agents by name:
    # agents given on the command line start from the defaults instead.
    reviewer_texts = opts.reviewers or ([] if opts.agents else cfg.reviewers)
    policy = opts.policy or cfg.policy or "unanimous"
    jobs = opts.jobs or cfg.jobs or 1
    ledger = opts.ledger or (loaded.suite_dir / cfg.ledger if cfg.ledger else None)
    # Name the config file in an error only when the bad spec came from it.
    from_file = f" (from {loaded.source})" if loaded.source else ""
    agents_where = from_file if not opts.agents and cfg.agents else ""
    # A reviewer given no spec is derived from its agent's, wherever that came from.
    reviewers_where = "" if opts.reviewers else from_file if not opts.agents and cfg.reviewers else agents_where
    try:
        specs = agents_mod.parse_agents(agent_texts)
        for s in specs:
            agents_mod.build_agent(s, pm)
    except agents_mod.SpecError as exc:
        raise UsageError(f"{exc}{agents_where}") from None
    try:
        pairing = agents_mod.pair_reviewers(specs, reviewer_texts)
        for s in specs:
            agents_mod.build_reviewer(AgentSpec(name=s.name, spec=pairing[s.name]), pm)
    except agents_mod.SpecError as exc:
        raise UsageError(f"{exc}{reviewers_where}") from None
    known = plugins.policies(pm)
    if policy not in known:
        where = from_file if not opts.policy and cfg.policy else ""
        raise UsageError(f"unknown policy {policy!r}{where}; known: {', '.join(sorted(known))}"
                         f"{plugins.misdeclared_hint(pm)}")
    initial = getattr(known[policy].factory, "initial_agents", None)
    if initial and len(specs) <= initial:
        raise UsageError(
            f"--policy {policy} starts {initial} agents and adds the next only when they give no clear decision, "
            f"so it needs at least {initial + 1}; the run has {len(specs)} "
            f"({', '.join(s.name for s in specs)}){agents_where}: give another --agent, "
            f"or use --policy calibrated (the same threshold, every agent at once)")
    llm, limits = _models_and_limits(opts, cfg, specs, pairing, loaded.source)
    box = _sandbox_config(opts, cfg, loaded, specs)
    calibration = _calibration(opts, cfg, loaded, policy, known[policy].factory)
    return Resolved(specs, pairing, policy, jobs, loaded.suite_dir, ledger, llm, limits, box, calibration)


def warm_up_agents(agents: list[dict], reviewers: dict[str, str], pm: pluggy.PluginManager) -> None:
    """Build the agents and reviewers a recorded run names (its config's ``agents`` and ``reviewers``).

    For a process that picks up a run ``run`` started (``resume``, ``decide --guide``): ``run``
    builds every agent and reviewer in ``resolve_options`` before it sets up, and building is
    where a plugin starts loading what is slow to load (the llm ones import litellm, seconds, in
    the background). Called at set-up, the load overlaps it, as in ``run``, instead of the first
    solve waiting for all of it. A spec that no longer builds is skipped: the solve or review that
    needs it records the error against its candidate, as it would without this.
    """
    specs = [AgentSpec.model_validate(a) for a in agents]
    for spec in specs:
        try:
            agents_mod.build_agent(spec, pm)
        except agents_mod.SpecError:
            pass
    for name, spec in reviewers.items():
        try:
            agents_mod.build_reviewer(AgentSpec(name=name, spec=spec), pm)
        except agents_mod.SpecError:
            pass


def _calibration(opts: RunOptions, cfg, loaded, policy: str, factory) -> dict | None:
    """The policy file a calibrated policy decides with, read once (UsageError naming the file and the fix)."""
    if not getattr(factory, "needs_calibration", False):
        return None
    from .ledger.calibration import CalibrationError, default_path, load_calibration

    if opts.calibration is not None:
        path = Path(opts.calibration)
    elif cfg.calibration:
        path = loaded.suite_dir / cfg.calibration
    else:
        path = default_path(opts.state_dir)
    try:
        cal = load_calibration(path)
    except CalibrationError as exc:
        raise UsageError(f"--policy {policy}: {exc}") from None
    return {**cal.model_dump(mode="json"), "path": str(path.resolve())}


def _sandbox_config(opts: RunOptions, cfg, loaded, specs: list[AgentSpec]) -> dict:
    """The run's sandbox settings (recorded in its config, so resume and decide use them too)."""
    import re

    mode = opts.sandbox or cfg.sandbox or "auto"
    where = f" ({loaded.source})" if loaded.source else ""
    names = {s.name for s in specs}
    unknown = sorted(set(cfg.network) - names)
    if unknown and not opts.agents:
        raise UsageError(f"network{where} names agent(s) {', '.join(unknown)}, but the agents are {', '.join(sorted(names))}")
    for var in [*cfg.sandbox_env, *(v for vs in cfg.network.values() for v in vs)]:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", var):
            raise UsageError(f"sandbox_env / network{where}: {var!r} is not an environment variable name")

    def paths(items: list[str]) -> list[str]:
        return [str((loaded.suite_dir / Path(p).expanduser()).resolve()) for p in items]

    try:
        sandbox_mod.check_mode(mode)
    except sandbox_mod.SandboxUnavailable as exc:
        raise UsageError(str(exc)) from None
    return {"mode": mode, "env": list(cfg.sandbox_env), "readable": paths(cfg.sandbox_readable),
            "writable": paths(cfg.sandbox_writable), "network": {k: list(v) for k, v in cfg.network.items()}}


def configure_sandbox(config: dict, state_dir: Path, ledger: Path | None = None, mode: str | None = None) -> None:
    """Apply a run's sandbox settings to this process; crossreview's state (and ledger) hidden from commands."""
    box = dict(config.get("sandbox") or {})
    if mode:
        box["mode"] = mode
    hidden = [str(state_dir.resolve())]
    ledger = ledger if isinstance(ledger, (str, Path)) and "://" not in str(ledger) else None  # not a database URL
    if ledger and state_dir.resolve() not in Path(ledger).resolve().parents:
        hidden += [str(Path(ledger).resolve()) + suffix for suffix in ("", "-wal", "-shm", "-journal")]
    try:
        sandbox_mod.configure({**box, "hidden": hidden})
    except sandbox_mod.SandboxUnavailable as exc:
        raise UsageError(str(exc)) from None


def _models_and_limits(opts: RunOptions, cfg, specs: list[AgentSpec], pairing: dict[str, str], source) -> tuple[dict, dict]:
    """The run's model settings and budgets; a cost cap needs a price for every model (else UsageError)."""
    from pydantic import ValidationError

    from .budget import NO_CAP, Limits
    from .llm.settings import LLMSettings

    where = f" ({source})" if source else ""
    try:
        llm = LLMSettings(models=cfg.models, prices=cfg.prices, temperature=cfg.temperature,
                          review_rules=cfg.review_rules, on_injection=cfg.on_injection)
    except ValidationError as exc:
        raise UsageError(f"model settings{where}: " + "; ".join(e["msg"] for e in exc.errors())) from None

    def pick(flag, key):
        if flag == NO_CAP:
            return None
        return flag if flag is not None else getattr(cfg, key)

    limits = Limits(
        max_cost=pick(opts.max_cost, "max_cost"),
        max_tokens=pick(opts.max_tokens, "max_tokens"),
        max_task_cost=pick(opts.max_task_cost, "max_task_cost"),
        max_task_tokens=pick(opts.max_task_tokens, "max_task_tokens"),
    )
    if limits.caps_cost:
        _check_priced(llm, _llm_models(specs, pairing))
    return llm.model_dump(mode="json", exclude_defaults=True), limits.to_dict()


def _llm_models(specs: list[AgentSpec], pairing: dict[str, str]) -> list[str]:
    """Every model the run's `llm:` agents and reviewers call."""
    return sorted({s.arg.strip() for s in specs if s.kind == "llm" and s.arg}
                  | {spec.split(":", 1)[1].strip() for spec in pairing.values() if spec.startswith("llm:")})


def _check_priced(llm, models: list[str], fix: str | None = None) -> None:
    """A cost cap cannot hold a model whose price nobody knows: UsageError naming the `[prices]` to add
    (or ``fix``, what to do instead, where adding a price would not help)."""
    if not models:
        return
    from .llm.client import ModelClient

    unpriced = [m for m in models if not ModelClient(llm.resolve(m)).priced()]
    if unpriced:
        raise UsageError(
            f"a cost cap (--max-cost / --max-task-cost) needs a price for every model, and litellm does not know "
            f"{', '.join(unpriced)}: " + (fix or f"add [prices.\"{unpriced[0]}\"] input_cost_per_token = ... and "
                                                 f"output_cost_per_token = ... to crossreview.toml")
        )


def _thread_config(task_run: str, n_agents: int, n_panel: int | None = None) -> dict:
    # LangGraph's default pool is ~6 threads on 2 cores: size it to the fan-out
    # we mean to run at once (every review of every candidate).
    width = max(1, n_agents, n_agents * (n_agents - 1), n_agents * (n_panel or 0))
    return {"configurable": {"thread_id": task_run}, "max_concurrency": min(width, 64), "recursion_limit": 200}


def run_suite(opts: RunOptions, pm: pluggy.PluginManager | None = None) -> SuiteOutcome:
    """Run every task under ``opts.paths``; broken tasks are reported, the rest still run."""
    pm = pm or plugins.get_plugin_manager()
    suite = load_suite(opts.paths)
    if not suite.tasks and not suite.errors:
        where = ", ".join(str(p) for p in opts.paths)
        raise UsageError(f"no task folders (folders with task.toml) under {where}")
    config, res = run_config(opts, suite.tasks, pm)
    if not suite.tasks:
        raise AllTasksBroken("every task is broken, nothing ran:\n" + "\n".join(str(e) for e in suite.errors),
                             suite.errors)
    run = opts.run_id or new_run_id()
    jobs = res.jobs
    with run_lock(opts.state_dir, run), open_session(opts.state_dir, res.ledger, pm) as session:
        session.ledger.start_run(run, config)
        try:
            results = _run_tasks(session, run, suite.tasks, config, jobs, opts.interactive, fresh=True)
        except KeyboardInterrupt:
            session.ledger.set_run_status(run, "interrupted")
            raise
        results = _as_decided_since(session.ledger, results)
        _finish_run(session, run, results)
    pm.hook.crossreview_run_finished(run=run, results=results)
    return SuiteOutcome(run, results, suite.errors, cap_warnings(config, results))


def cap_warnings(config: dict, results: list[TaskResult]) -> list[str]:
    """A money or token cap cannot hold work whose usage nobody reported: say so when it happened.

    Unknown cost marks it: a command that wrote no usage, a model reply without
    usable token counts. Either spent tokens no cap could count.
    """
    from .budget import Limits

    limits = Limits.from_dict(config.get("limits"))
    unknown = [r.task for r in results if r.cost is None]
    caps = [name for name, on in (("money", limits.caps_cost),
                                  ("token", limits.max_tokens is not None or limits.max_task_tokens is not None)) if on]
    if not caps or not unknown:
        return []
    shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
    return [f"the {' and '.join(caps)} cap{'s' if len(caps) > 1 else ''} could not count everything: "
            f"{count_phrase(len(unknown), 'task run')} spent an unknown amount ({shown}) — command agents or reviewers that report no usage "
            "(write it to $CROSSREVIEW_USAGE_FILE to have it counted), or model replies without usable token counts"]


def forget_checkpoints(session: Session, task_runs: list[str]) -> None:
    """Delete the checkpoints of task runs the ledger holds as done: nothing resumes them any more.

    A parked or failed task run keeps its own (decide and resume continue it
    from there). Without this, checkpoints.db grows by ~150 KB per task run.
    """
    done = {tr["id"] for tr in (session.ledger.get_task_run(t) for t in task_runs) if tr and tr["status"] == "done"}
    for task_run in sorted(done):
        session.graph.checkpointer.delete_thread(task_run)


def run_status(decisions: list[str]) -> str:
    """A run's status from its task runs' decisions: error, waiting (for a human) or finished."""
    if "error" in decisions:
        return "error"
    return "waiting" if "escalated" in decisions else "finished"


def _as_decided_since(ledger: Ledger, results: list[TaskResult]) -> list[TaskResult]:
    """``results`` with each escalation a human has decided meanwhile as the ledger now holds it.

    While a run goes on with its other tasks, `crossreview decide` in another
    terminal may carry out a parked task's decision (or park its guided round
    again): the run's own result for it is stale by the time the run ends.
    """
    fresh = []
    for result in results:
        if result.decision == "escalated":
            row = ledger.get_task_run(result.task_run)
            escs = ledger.escalations_of(result.task_run) if row else []
            if row and (row["status"] in ("done", "error") or (escs and escs[-1]["id"] != result.escalation)):
                result = _result_from_row(ledger, row)
        fresh.append(result)
    return fresh


def _finish_run(session: Session, run: str, results: list[TaskResult]) -> None:
    forget_checkpoints(session, [r.task_run for r in results])
    session.ledger.set_run_status(run, run_status([r.decision for r in results]))


T = TypeVar("T")


def _in_workers(session: Session, calls: list[Callable[[], T]], jobs: int) -> list[T]:
    """Run ``calls``, ``jobs`` at once, in worker threads while this thread waits; their results in order.

    Waiting here, never inside a graph, keeps Ctrl-C prompt: LangGraph lets an
    interrupt through only once its running branches end, and a branch in a
    model call ends when the model answers. On Ctrl-C this thread stops the
    agents, removes the worktrees of the task runs under way
    (``session.in_flight``) and re-raises, without waiting for those threads
    (the caller exits the process).
    """
    pool = ThreadPoolExecutor(max_workers=max(1, min(jobs, len(calls))), thread_name_prefix="crossreview-task")
    try:
        results = list(pool.map(lambda call: call(), calls))
    except KeyboardInterrupt:
        kill_all_children()
        pool.shutdown(wait=False, cancel_futures=True)
        for args in list(session.in_flight.values()):
            try:
                cleanup_task_run(session, *args)
            except Exception:  # noqa: BLE001 - best effort: `crossreview gc` removes what is left
                pass
        raise
    pool.shutdown()
    return results


def _run_tasks(session: Session, run: str, tasks: list[Task], config: dict, jobs: int, interactive: bool, fresh: bool) -> list[TaskResult]:
    """Run ``tasks``, ``jobs`` at once, in worker threads (see ``_in_workers``)."""
    return _in_workers(
        session,
        [lambda task=task: run_task(session, run, task, config, interactive, fresh) for task in tasks],
        jobs,
    )


def task_run_id(run: str, task_id: str) -> str:
    """The id of one task's run inside a suite run; also its LangGraph thread id."""
    return f"{run}/{task_id}"


def run_task(session: Session, run: str, task: Task, config: dict, interactive: bool, fresh: bool = True) -> TaskResult:
    """Run (or continue) one task through the graph, then clean its worktrees up."""
    tr = task_run_id(run, task.id)
    held = ExitStack()
    try:
        held.enter_context(locks.hold(locks.task_run_lock_path(session.state_dir, tr)))
    except locks.Busy as busy:
        # Only a `crossreview decide` carrying out a human's decision can hold it
        # (this process holds the run): its result is the one that counts.
        row = session.ledger.get_task_run(tr)
        kept = _result_from_row(session.ledger, row) if row else TaskResult(
            task=task.id, task_run=tr, run=run, decision="error", error="not started")
        return kept.model_copy(update={"reason": f"being decided right now by {busy.holder} (crossreview decide)"})
    gconf = _thread_config(tr, len(config["agents"]), len(config.get("panel") or []))
    session.in_flight[tr] = (gconf, run, task.id, [a["name"] for a in config["agents"]])
    try:
        with held:
            return _run_task(session, run, task, config, interactive, fresh, tr, gconf)
    finally:
        session.in_flight.pop(tr, None)


def _run_task(session: Session, run: str, task: Task, config: dict, interactive: bool, fresh: bool, tr: str,
              gconf: dict) -> TaskResult:
    configure_sandbox(config, session.state_dir, session.ledger.path)
    session.ledger.start_task_run(tr, run, task.id, str(task.path), task.tags, task.metadata)
    session.pm.hook.crossreview_task_started(task=task, task_run=tr)
    # A fresh task run has no checkpoint to look at (reading one costs a query and a decode).
    started = fresh or not session.graph.get_state(gconf).values
    spent = session.context.budgets.suite(run, config.get("limits")).exceeded()
    if spent and started:
        # The suite run's budget is gone: this task is not started (`resume RUN --max-cost ...` with a higher cap runs it).
        session.ledger.set_task_run_status(tr, "error", "error", f"not started: {spent}")
        result = TaskResult(task=task.id, task_run=tr, run=run, decision="error", reason=spent, error=f"not started: {spent}",
                            stopped=spent)
        session.pm.hook.crossreview_task_finished(result=result)
        return result
    if started:
        payload: Any = {
            "run": run,
            "task_run": tr,
            "task": task.model_dump(mode="json"),
            "agents": config["agents"],
            "reviewers": config["reviewers"],
            "policy": config["policy"],
            "suite_dir": config["suite_dir"],
            "llm": config.get("llm") or {},
            "limits": config.get("limits") or {},
            # The gate's shape: who reviews, which candidate is judged, whether to keep a branch.
            **{k: config[k] for k in ("panel", "focus", "keep") if k in config},
            "calibration": config.get("calibration"),
        }
    else:
        payload = None  # continue from the checkpoint: finished branches are kept
    try:
        result = _drive(session, gconf, payload, interactive)
    except KeyboardInterrupt:
        # Ctrl-C or SIGTERM: stop every agent and verifier now (they run in
        # sessions of their own, so the terminal's signal did not reach them).
        kill_all_children()
        raise
    except Stopping:
        # Ctrl-C killed this task's commands: the task run is unfinished, not
        # an error, so `resume` continues it and nothing reports it as failed.
        raise
    except Exception as exc:  # noqa: BLE001 - one task's failure must not stop the suite
        session.ledger.set_task_run_status(tr, "error", "error", f"{type(exc).__name__}: {exc}")
        result = TaskResult(task=task.id, task_run=tr, run=run, decision="error", error=f"{type(exc).__name__}: {exc}",
                            cost=None)  # it may have spent before it failed: unknown, not $0
    finally:
        crash_point("task", "before-cleanup")
        cleanup_task_run(session, gconf, run, task.id, [a["name"] for a in config["agents"]])
    session.pm.hook.crossreview_task_finished(result=result)
    return result


def _drive(session: Session, gconf: dict, payload: Any, interactive: bool) -> TaskResult:
    """Invoke the graph until it finishes or parks waiting for a human."""
    from langgraph.types import Command

    from .graph import escalation_from_interrupt, record_parked

    out = session.graph.invoke(payload, gconf, context=session.context)
    while "__interrupt__" in out:
        value = out["__interrupt__"][0].value
        state = session.graph.get_state(gconf).values
        esc = escalation_from_interrupt(value, state)
        human = recorded_decision(session.ledger, esc.id)
        if human is not None:
            # A human decided it, but the process carrying the decision out
            # stopped before the graph took it (whoever drives this graph holds
            # its lock, so that process is gone): carry it out now, not ask again.
            out = session.graph.invoke(Command(resume=human.model_dump(mode="json")), gconf, context=session.context)
            continue
        session.pm.hook.crossreview_escalation_opened(escalation=esc, ledger=session.ledger)
        human = session.pm.hook.crossreview_ask_human(escalation=esc, interactive=interactive)
        decided_elsewhere = human is not None and not session.ledger.decide_escalation(esc.id, human)
        if human is None or decided_elsewhere:
            reason = esc.reason
            if decided_elsewhere:
                # `crossreview decide` won while the prompt waited here: that process resumes
                # the run and records it; recording it parked now would overwrite its result.
                reason = f"decided elsewhere while asked here ({_decided_by(session.ledger, esc.id)})"
            else:
                record_parked(session.ledger, state)
            return TaskResult(
                task=esc.task,
                task_run=esc.task_run,
                run=esc.run,
                decision="escalated",
                escalation=esc.id,
                reason=reason,
                candidates=_summaries_from_state(state),
                seconds=_elapsed(state),
                stopped=_stopped_from_state(state),
                **_spend_from_state(state),
            )
        out = session.graph.invoke(Command(resume=human.model_dump(mode="json")), gconf, context=session.context)
    return TaskResult.model_validate(out["result"])


def recorded_decision(ledger: Ledger, esc_id: str) -> HumanDecision | None:
    """The decision the ledger holds for escalation ``esc_id`` (None while it waits for a human)."""
    row = ledger.get_escalation(esc_id)
    if not row or not row["decided"] or not row["action"]:
        return None
    return HumanDecision(action=row["action"], pick=row["pick"], guide=row["guide"], by=row["decided_by"] or "",
                         decided_at=row["decided"], shown_at=row["first_shown"])


def decided_but_unfinished(ledger: Ledger, task_run: dict) -> bool:
    """A task run parked at an escalation a human decided, whose run stopped before carrying it out."""
    if task_run["status"] != "parked":
        return False
    escs = ledger.escalations_of(task_run["id"])
    return bool(escs) and bool(escs[-1]["decided"])


def _elapsed(state: dict) -> float:
    """Seconds from the first node's start to the last node's end, from the state's events."""
    from datetime import datetime

    events = state.get("events") or []
    if not events:
        return 0.0
    start = min(datetime.fromisoformat(e["started"]) for e in events)
    end = max(datetime.fromisoformat(e["finished"]) for e in events)
    return (end - start).total_seconds()


def _spend_from_state(state: dict) -> dict:
    from .graph import everything_so_far, spend

    cands, verdicts = everything_so_far(state)
    return spend([c.usage for c in cands] + [v.usage for v in verdicts])


def _stopped_from_state(state: dict) -> str | None:
    from .budget import stopped_by_cap
    from .graph import everything_so_far

    cands, verdicts = everything_so_far(state)
    return stopped_by_cap([c.error for c in cands] + [v.error for v in verdicts])


def _summaries_from_state(state: dict) -> list:
    from .graph import _round_candidates, _round_verdicts, summarize

    verdicts = _round_verdicts(state)
    return [summarize(c, verdicts) for c in _round_candidates(state)]


def _rmdir_if_empty(path: Path) -> None:
    # Task runs finish side by side (--jobs): another may have removed this
    # folder a moment ago, or just put a new worktree in it.
    try:
        path.rmdir()
    except OSError:
        pass


def cleanup_task_run(session: Session, gconf: dict, run: str, task_id: str, agent_names: list[str]) -> None:
    """Remove a task run's worktrees; a parked run keeps its diffs in the checkpoint."""
    values = session.graph.get_state(gconf).values
    if not values.get("base_git_dir"):
        return
    base = BaseRepo(Path(values["base_git_dir"]), values["base_commit"])
    from .graph import worktree_path

    remove_worktrees(
        session.state_dir,
        base,
        [worktree_path(session.state_dir, run, task_id, n) for n in agent_names],
    )
    # Review scratch folders hold copies of diffs already in the ledger.
    shutil.rmtree(session.state_dir / "reviews" / run / task_id, ignore_errors=True)
    _rmdir_if_empty(session.state_dir / "reviews" / run)
    task_dir = session.state_dir / "worktrees" / run / task_id
    _rmdir_if_empty(task_dir)
    _rmdir_if_empty(task_dir.parent)


# --- escalations: decide and resume -----------------------------------------


class NotFound(UsageError):
    """An id the ledger does not know."""


def find_escalation(led: Ledger, given: str) -> dict[str, Any]:
    """The escalation ``given`` names: its whole id, or the start of exactly one id.

    Ids are random (``e-`` and six hex digits) and people copy them by hand from
    a table or a PR comment, so a unique prefix is enough, with or without the
    ``e-``. Raises NotFound when ``given`` starts several ids or none: the
    message lists the nearest ids, so the next attempt is a copy, not a guess.
    """
    esc = led.get_escalation(given)
    if esc is not None:
        return esc
    index = led.escalation_index()
    starts = [r for r in index if given and (r["id"].startswith(given) or r["id"].startswith("e-" + given))]
    if len(starts) == 1:
        return led.get_escalation(starts[0]["id"])

    def named(rows: list[dict[str, Any]]) -> str:
        return ", ".join(f"{r['id']} ({r['task']}, {'decided' if r['decided'] else 'waiting'})" for r in rows)

    hint = "`crossreview inbox` lists the open ones"
    if starts:
        shown = starts[:8]
        more = f" and {len(starts) - len(shown)} more" if len(starts) > len(shown) else ""
        raise NotFound(f"{given!r} starts {count_phrase(len(starts), 'escalation id')}: {named(shown)}{more}; "
                       f"give more of the id ({hint})")
    by_id = {r["id"]: r for r in index}
    close = difflib.get_close_matches(given if given.startswith("e-") else "e-" + given, list(by_id), n=3, cutoff=0.5)
    nearest = f"; closest: {named([by_id[i] for i in close])}" if close else ""
    raise NotFound(f"no escalation {given!r} in {led.path}{nearest}; {hint}")


def decide_escalation(esc_id: str, human: HumanDecision, state_dir: Path = DEFAULT_STATE_DIR, ledger: Path | None = None, interactive: bool = False, pm: pluggy.PluginManager | None = None, sandbox: str | None = None) -> TaskResult:
    """Resume the run parked at escalation ``esc_id`` with the human's decision.

    The decision is recorded before the graph resumes. If this process stops
    before the graph has carried it out (Ctrl-C, a crash, a kill during a
    guided round), ``resume_run`` carries it out: nothing asks the human again.
    """
    pm = pm or plugins.get_plugin_manager()
    led = Ledger(ledger or state_dir / "ledger.db")
    esc = find_escalation(led, esc_id)
    esc_id = esc["id"]  # a prefix was given: every message and lock below names the whole id
    run = led.get_run(esc["run"])
    state_dir = Path(run["config"]["state_dir"]) if run else state_dir
    if esc["decided"]:
        raise UsageError(_already_decided(led, esc, state_dir))
    names = [c["agent"] for c in esc["packet"]["candidates"]]
    if human.action == "pick" and human.pick not in names:
        raise UsageError(f"--pick {human.pick!r}: escalation {esc_id} has candidates {', '.join(names)}")
    if human.action == "guide" and not (human.guide or "").strip():
        raise UsageError("--guide needs the guidance text, e.g. --guide 'handle negative numbers'")
    if human.action == "guide" and run:
        # A guided round solves and reviews again; a pick or a reject runs no agent, so loads nothing.
        warm_up_agents(run["config"]["agents"], run["config"].get("reviewers") or {}, pm)
    held = ExitStack()
    try:
        held.enter_context(locks.hold(locks.task_run_lock_path(ensure_state_dir(state_dir), esc["task_run"])))
    except locks.Busy as busy:
        raise UsageError(f"escalation {esc_id}'s task run is being worked on right now by {busy.holder}; "
                         f"wait for it to finish, then look again (`crossreview inbox`)") from None
    with held, open_session(state_dir, led.path, pm) as session:
        gconf = _thread_config(esc["task_run"], len(run["config"]["agents"]) if run else 2)
        snap = session.graph.get_state(gconf)
        if not snap.interrupts:
            raise UsageError(f"the run of escalation {esc_id} is not waiting for a decision (checkpoint {state_dir})")
        configure_sandbox(run["config"] if run else {}, session.state_dir, session.ledger.path, sandbox)
        if run:
            _seed_budget(session, esc["run"], run["config"])
        if not session.ledger.decide_escalation(esc_id, human):
            # Someone decided it between our check above and now: theirs stands, the graph is theirs to resume.
            raise UsageError(f"escalation {esc_id} was already decided ({_decided_by(session.ledger, esc_id)})")
        crash_point("human", "recorded")
        # This process now owns the run's status unless a run or resume holds the run.
        owns_run = run is not None and not locks.is_held(locks.run_lock_path(session.state_dir, esc["run"]))
        if owns_run:
            # Set before the graph goes on: if this process dies, `runs` shows the run interrupted.
            session.ledger.set_run_status(esc["run"], "running", finished=False)
        result = _carry_out(session, esc, snap.values, gconf, human, interactive)
        forget_checkpoints(session, [esc["task_run"]])
        pm.hook.crossreview_task_finished(result=result)
        # A run that held the run when we began may have ended meanwhile, its
        # status written before this result was: then the status is ours to set.
        if run is not None and (owns_run or not locks.is_held(locks.run_lock_path(session.state_dir, esc["run"]))):
            session.ledger.set_run_status(esc["run"], run_status(_latest_results(session, esc["run"])))
        return result


def _carry_out(session: Session, esc: dict, values: dict, gconf: dict, human: HumanDecision,
               interactive: bool) -> TaskResult:
    """Resume the parked graph with ``human``'s decision in a worker thread (Ctrl-C stays prompt)."""
    from langgraph.types import Command

    task = Task.model_validate(values["task"])
    agents = [a["name"] for a in values["agents"]]
    if human.action == "guide":
        # Only a guided round begins anything again (the agents solve anew); a
        # pick or a reject just records the decision from the checkpoint.
        session.pm.hook.crossreview_task_started(task=task, task_run=esc["task_run"])
    session.in_flight[esc["task_run"]] = (gconf, esc["run"], task.id, agents)

    def drive() -> TaskResult:
        try:
            # A guided round may disagree again: _drive parks it as a new escalation.
            return _drive(session, gconf, Command(resume=human.model_dump(mode="json")), interactive)
        except Stopping:
            # Ctrl-C: the task run stays parked with its decision recorded, which
            # is what tells a second `decide` and `resume` the decision is unfinished.
            raise
        except Exception as exc:  # noqa: BLE001 - recorded; `crossreview resume` carries the decision out
            session.ledger.set_task_run_status(esc["task_run"], "error", "error", f"{type(exc).__name__}: {exc}")
            return TaskResult(task=task.id, task_run=esc["task_run"], run=esc["run"], decision="error",
                              escalation=esc["id"], error=f"{type(exc).__name__}: {exc}", cost=None)
        finally:
            cleanup_task_run(session, gconf, esc["run"], task.id, agents)
            session.in_flight.pop(esc["task_run"], None)

    try:
        [result] = _in_workers(session, [drive], 1)
    except KeyboardInterrupt:
        if not locks.is_held(locks.run_lock_path(session.state_dir, esc["run"])):
            session.ledger.set_run_status(esc["run"], "interrupted")
        raise
    return result


def _already_decided(ledger: Ledger, esc: dict, state_dir: Path) -> str:
    """Why an escalation cannot be decided again, and what to do instead."""
    said = f"escalation {esc['id']} was already decided ({esc['action']} by {esc['decided_by']} at {when(esc['decided'])})"
    # An old id from a guided round: say where the task run went on, so the decider is not left at a dead end.
    then = after_decision_phrase(after_decision(ledger, esc))
    return f"{said}{decision_progress(ledger, esc, state_dir)}" + (f"; {then}" if then else "")


def decision_progress(ledger: Ledger, esc: dict, state_dir: Path) -> str:
    """For a decided escalation whose decision is not carried out yet, a clause saying so and what to do; else ''."""
    tr = ledger.get_task_run(esc["task_run"])
    if tr is None or not decided_but_unfinished(ledger, tr):
        return ""
    if locks.is_held(locks.task_run_lock_path(state_dir, esc["task_run"])):
        return "; it is being carried out right now"
    return (", but the process carrying it out stopped before it finished; "
            f"`crossreview resume {esc['run']}` finishes it")


def after_decision(ledger: Ledger, esc: dict) -> dict[str, Any]:
    """Where the story of an escalation went on: the later escalations of its task run, and how it ended.

    ``escalations`` lists each later round's escalation (``id``, ``round``,
    ``waiting``, ``action``), oldest first; ``outcome`` is the task run's
    ``decision``, ``winner``, ``reason`` and ``error`` once it has ended,
    else None.
    """
    later = [{"id": e["id"], "round": e["round"], "waiting": e["decided"] is None, "action": e["action"]}
             for e in ledger.escalations_of(esc["task_run"]) if e["round"] > esc["round"]]
    tr = ledger.get_task_run(esc["task_run"])
    ended = tr is not None and tr["status"] in ("done", "error")
    outcome = {k: tr[k] for k in ("decision", "winner", "reason", "error")} if ended else None
    return {"escalations": later, "outcome": outcome}


def after_decision_phrase(story: dict[str, Any]) -> str:
    """``after_decision`` in words, e.g. "the guided round escalated again: e-1b2c3d, still waiting"; '' if nothing followed."""
    parts = []
    later = story["escalations"]
    if later:
        named = [e["id"] + ("" if e["waiting"] else f" ({e['action'] or 'decided'})") for e in later]
        rounds = "round" if len(later) == 1 else "rounds"
        parts.append(f"the guided {rounds} escalated again: {', then '.join(named)}"
                     + (", still waiting" if later[-1]["waiting"] else ""))
    out = story["outcome"]
    if out:
        if out["decision"] == "accepted":
            parts.append(f"the task run ended accepted, winner {out['winner']}")
        elif out["decision"] == "error" or out["error"]:
            parts.append(f"the task run ended in an error: {out['error']}")
        else:
            parts.append(f"the task run ended {out['decision']}")
    return "; ".join(parts)


def _decided_by(ledger: Ledger, esc_id: str) -> str:
    row = ledger.get_escalation(esc_id) or {}
    return f"{row.get('action')} by {row.get('decided_by')} at {when(row.get('decided'))}"


def _latest_results(session: Session, run: str) -> list[str]:
    """The decision of every task run of ``run`` the ledger holds."""
    return [tr["decision"] for tr in session.ledger.task_runs(run)]


def resume_run(run: str, state_dir: Path = DEFAULT_STATE_DIR, ledger: Path | None = None, interactive: bool = False, pm: pluggy.PluginManager | None = None, sandbox: str | None = None,
               on_plan: Callable[[int, int], None] | None = None, limits: dict[str, Any] | None = None) -> SuiteOutcome:
    """Finish a run that crashed or was killed, keeping every finished branch.

    ``on_plan(kept, todo)`` hears, before any work, how many task runs are kept as they are
    (finished, or waiting for a human) and how many are to run (a face shows progress with it).

    ``limits``: new caps (``max_cost``, ``max_tokens``, ``max_task_cost``, ``max_task_tokens``;
    a missing or None one keeps the run's recorded cap, ``budget.NO_CAP`` lifts it). A new cap replaces the recorded one for
    the rest of the run (this resume, and every later ``decide`` or ``resume``) and is written to
    the run's config in the ledger; what the run already spent counts against it. Task runs that
    were not started because the budget ran out are run under it; finished ones are kept."""
    pm = pm or plugins.get_plugin_manager()
    led = Ledger(ledger or state_dir / "ledger.db")
    row = led.get_run(run)
    if row is None:
        raise NotFound(f"no run {run!r} in {led.path}; `crossreview runs` lists the runs")
    config = row["config"]
    if sandbox:
        config = {**config, "sandbox": {**(config.get("sandbox") or {}), "mode": sandbox}}
    config, limits_changed = _with_new_limits(config, limits or {})
    # Kept as they are: finished task runs, and those waiting for a human. A
    # decision a human made whose carrying out was cut short is finished here.
    done = {tr["task"]: tr for tr in led.task_runs(run)
            if tr["status"] == "done" or (tr["status"] == "parked" and not decided_but_unfinished(led, tr))}
    from .tasks import load_task

    tasks, errors = [], []
    # A kept task run is not run again: its folder, edited since, is not read.
    kept_paths = {tr["task_path"] for tr in done.values()}
    for path in config["tasks"]:
        if path in kept_paths:
            continue
        loaded = load_task(Path(path))
        if isinstance(loaded, list):
            errors.extend(loaded)
        else:
            tasks.append(loaded)
    todo = [t for t in tasks if t.id not in done]
    if on_plan is not None:
        on_plan(len(done), len(todo) + len(errors))
    if todo:
        # Before the session opens (LangGraph's import, the checkpointer), where `run` builds them too.
        warm_up_agents(config["agents"], config.get("reviewers") or {}, pm)
    with run_lock(Path(config["state_dir"]), run), open_session(Path(config["state_dir"]), led.path, pm) as session:
        configure_sandbox(config, session.state_dir, session.ledger.path)
        # Before any worktree is removed or rebuilt: what the killed process had
        # started and a kill at a bad moment left running would write into them.
        kill_leftovers({row["pid"], *owner_pids(Path(config["state_dir"]), run)} - {None})
        if limits_changed:
            # Under the run's lock, so a resume turned away because the run is busy changes nothing;
            # before the budgets are built, so they and every later decide or resume use the new caps.
            session.ledger.set_run_config(run, config)
        flying = _seed_budget(session, run, config)
        session.ledger.set_run_status(run, "running", finished=False)
        for tr in done.values():
            # Finished before the crash, but killed before its worktrees were removed.
            cleanup_task_run(session, _thread_config(tr["id"], len(config["agents"])), run, tr["task"],
                             [a["name"] for a in config["agents"]])
        try:
            results = _run_tasks(session, run, todo, config, config.get("jobs", 1), interactive, fresh=False)
        except KeyboardInterrupt:
            session.ledger.set_run_status(run, "interrupted")
            raise
        results = _as_decided_since(session.ledger, results)
        finished = [_result_from_row(session.ledger, tr) for tr in done.values()]
        all_results = finished + results
        _finish_run(session, run, all_results)
        if errors:
            # A task that no longer loads is still to do: another resume, once
            # its folder is fixed, runs it.
            session.ledger.set_run_status(run, "interrupted")
    pm.hook.crossreview_run_finished(run=run, results=results)
    warnings = [] if not flying else [
        f"{count_phrase(flying, 'model call')} {'was' if flying == 1 else 'were'} in flight when run {run} was killed: the provider may have billed them, "
        "so what the run cost is unknown (`crossreview stats`: spent on work cut short); "
        "budgets count them as spend of unknown cost"]
    # As `run` says it: the caps cover the whole run, so kept task runs of unknown spend count too.
    warnings += cap_warnings(config, all_results)
    return SuiteOutcome(run, all_results, errors, warnings, kept=len(finished))


LIMIT_KEYS = ("max_cost", "max_tokens", "max_task_cost", "max_task_tokens")


def _with_new_limits(config: dict[str, Any], given: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """``config`` with the caps in ``given`` (None: keep the recorded one; NO_CAP: lift it) replacing the recorded ones,
    and whether any changed. Each change is appended to ``config["limit_changes"]`` (when, before,
    after), so the ledger says which caps the run's work was done under.

    A money cap needs a price for every model the run calls; the run's prices are the ones it
    recorded when it started (a crossreview.toml edited since is not read), so a model it had no
    price for cannot be held to one: UsageError, before anything runs.
    """
    from datetime import datetime, timezone

    from .budget import NO_CAP, Limits

    unknown = set(given) - set(LIMIT_KEYS)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; known: {', '.join(LIMIT_KEYS)}")
    before = Limits.from_dict(config.get("limits")).to_dict()
    after = {**before, **{k: (None if v == NO_CAP else v) for k, v in given.items() if v is not None}}
    if after == before:
        return config, False
    new = Limits.from_dict(after)
    if new.caps_cost:
        from .llm.settings import LLMSettings

        # The gate's panel reviews too: its models spend as much as the agents'.
        specs = [AgentSpec(**a) for a in [*config["agents"], *(config.get("panel") or [])]]
        _check_priced(LLMSettings.from_any(config.get("llm")), _llm_models(specs, config.get("reviewers") or {}),
                      fix="the run records the prices it started with, so it cannot be held to a money cap; "
                          "cap its tokens instead (--max-tokens / --max-task-tokens)")
    change = {"at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "by": "resume",
              "before": before, "after": new.to_dict()}
    return {**config, "limits": new.to_dict(),
            "limit_changes": [*(config.get("limit_changes") or []), change]}, True


def _seed_budget(session: Session, run: str, config: dict) -> int:
    """A run continued in a new process starts its budgets from what its task runs spent;
    returns how many model calls the journal holds as in flight (sent, never answered).

    That is the spend journal (``Ledger.record_spend``), which also holds what
    work a kill cut short had spent, and the calls it killed while they waited
    (each an unpriced charge: a cost cap cannot count them); for task runs older
    than the journal, what their candidates and verdicts record.
    """
    limits = config.get("limits")
    budgets = session.context.budgets
    budgets.suite(run, limits)
    journal = session.ledger.spend_by_task_run(run)
    flying = sum(s.in_flight for s in journal.values())
    for tr in session.ledger.task_runs(run):
        budget = budgets.task(run, tr["id"], limits)
        spent = journal.get(tr["id"])
        if spent is not None:
            budget.charge(spent.tokens, spent.cost, journal=False)
            for _ in range(spent.unpriced):
                budget.charge(0, None, journal=False)
            continue
        for row in session.ledger.candidate_rows(tr["id"]) + session.ledger.verdict_rows(tr["id"]):
            budget.charge((row.get("tokens_in") or 0) + (row.get("tokens_out") or 0), row.get("cost"), journal=False)
    return flying

def _result_from_row(ledger: Ledger, tr: dict) -> TaskResult:
    """A task run finished earlier (kept by a resume), as its own run reported it, from the ledger."""
    escs = ledger.escalations_of(tr["id"])
    return TaskResult(
        task=tr["task"], task_run=tr["id"], run=tr["run"], decision=tr["decision"] or "error",
        winner=tr["winner"], escalation=escs[-1]["id"] if escs else None, reason=tr["reason"] or "",
        branch=tr["branch"], candidates=_summaries_from_rows(ledger, tr["id"]),
        # A parked task run has no seconds of its own yet: until it parked, as its run reported it.
        seconds=tr["seconds"] if tr["seconds"] is not None else (ledger.steps_seconds(tr["id"]) or 0.0),
        stopped=stopped_from_rows(ledger, tr),
        **_spend_from_rows(ledger, tr["id"]),
    )


def stopped_from_rows(ledger: Ledger, tr: dict) -> str | None:
    """The budget cap that cut task run ``tr`` (its ledger row) short, or left it unstarted: read from
    its own and its candidates' and reviews' recorded errors (None: no cap stopped anything)."""
    from .budget import stopped_by_cap

    rows = ledger.candidate_rows(tr["id"]) + ledger.verdict_rows(tr["id"])
    return stopped_by_cap([tr.get("error")] + [r.get("error") for r in rows])


def _spend_from_rows(ledger: Ledger, task_run: str) -> dict:
    from .graph import spend
    from .models import Usage

    rows = ledger.candidate_rows(task_run) + ledger.verdict_rows(task_run)
    return spend([Usage(tokens_in=r["tokens_in"] or 0, tokens_out=r["tokens_out"] or 0, cost=r["cost"]) for r in rows])


def _summaries_from_rows(ledger: Ledger, task_run: str) -> list:
    """The last round's candidates of a recorded task run, as ``summarize`` gives them live."""
    from .models import CandidateSummary

    cands = ledger.candidate_rows(task_run)
    if not cands:
        return []
    last = max(c["round"] for c in cands)
    verdicts = [v for v in ledger.verdict_rows(task_run) if v["round"] == last]
    return [
        CandidateSummary(
            agent=c["agent"], status=c["status"], tests_passed=c["tests_passed"] or 0,
            tests_total=c["tests_total"] or 0,
            approvals=sum(1 for v in verdicts if v["candidate"] == c["agent"] and v["verdict"] == "approve"),
            reviews=sum(1 for v in verdicts if v["candidate"] == c["agent"]),
            tokens=(c["tokens_in"] or 0) + (c["tokens_out"] or 0),
            cost=c["cost"],  # None stays None: unknown money is never shown as $0
            # As summarize gives it live: the known part of an unknown cost (0.0 when nothing is known).
            cost_known=(c.get("cost_known") or 0.0) if c["cost"] is None else None,
            seconds=round(c["seconds"] or 0.0, 3),
            tampering=json.loads(c.get("tampering") or "[]"),
        )
        for c in cands if c["round"] == last
    ]


def orphan_warning(state_dir: Path) -> str | None:
    """A one-line warning when killed runs left worktrees behind."""
    orphans = find_orphans(state_dir) if state_dir.is_dir() else []
    if orphans:
        return f"{count_phrase(len(orphans), 'worktree')} left by killed runs under {state_dir}/worktrees; `crossreview gc` removes them"
    return None


def stdin_is_interactive() -> bool:
    """Prompting is allowed only with a terminal and outside CI."""
    return sys.stdin.isatty() and os.environ.get("CI", "").lower() not in ("true", "1")


# --- one task at a time, in full (the pytest plugin and its fixture) ---------

from .models import Candidate, Verdict  # noqa: E402 - kept beside the API that needs them


@dataclass
class TaskOutcome:
    """One task run in full: its result, and every candidate and verdict of its last round.

    What the pytest plugin reports and the ``crossreview`` fixture returns.
    ``candidates`` carry their test outcomes (``c.tests.outcomes``), diff and
    usage; ``verdicts`` carry each reviewer's verdict, confidence and concerns.
    """

    result: TaskResult
    candidates: list[Candidate] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    ledger: Path | None = None

    @property
    def task(self) -> str:
        return self.result.task

    @property
    def run(self) -> str:
        return self.result.run

    @property
    def task_run(self) -> str:
        return self.result.task_run

    @property
    def decision(self) -> str:
        return self.result.decision

    @property
    def winner(self) -> str | None:
        return self.result.winner

    @property
    def escalation(self) -> str | None:
        """The escalation id while (or after) the run waited for a human, else None."""
        return self.result.escalation

    @property
    def reason(self) -> str:
        return self.result.reason

    @property
    def stopped(self) -> str | None:
        """The budget cap that cut this task run short (its message), else None: its decision was made
        without the work the cap stopped, and every face reads it as not finished (exit 1, a failed test)."""
        return self.result.stopped

    @property
    def branch(self) -> str | None:
        return self.result.branch

    @property
    def error(self) -> str | None:
        return self.result.error

    @property
    def seconds(self) -> float:
        return self.result.seconds

    @property
    def tokens(self) -> int:
        """Tokens of every solve and every review of the last round."""
        return sum(c.usage.tokens for c in self.candidates) + sum(v.usage.tokens for v in self.verdicts)

    @property
    def cost(self) -> float | None:
        """Money of every solve and review of the last round; None when any part is unknown."""
        total = 0.0
        for usage in [c.usage for c in self.candidates] + [v.usage for v in self.verdicts]:
            if usage.cost is None:
                return None
            total += usage.cost
        return total

    def candidate(self, agent: str) -> Candidate:
        """The candidate of agent ``agent`` (KeyError if there is none)."""
        for c in self.candidates:
            if c.agent == agent:
                return c
        raise KeyError(f"no candidate of agent {agent!r}; candidates: {', '.join(c.agent for c in self.candidates)}")

    def verdicts_on(self, agent: str) -> list[Verdict]:
        """Every verdict on agent ``agent``'s candidate."""
        return [v for v in self.verdicts if v.candidate == agent]


def run_config(opts: RunOptions, tasks: list[Task], pm: pluggy.PluginManager | None = None) -> tuple[dict, Resolved]:
    """The config ``run_suite`` records for a run of ``tasks`` (``resume_run`` reads it back).

    For faces that drive task runs one at a time (the pytest plugin). Raises
    UsageError for bad flags, specs or suite config, as ``run_suite`` does.
    """
    pm = pm or plugins.get_plugin_manager()
    res = resolve_options(opts, pm)
    config = {
        "paths": [str(p.resolve()) for p in opts.paths],
        "agents": [s.model_dump() for s in res.agents],
        "reviewers": res.reviewers,
        "policy": res.policy,
        "jobs": res.jobs,
        "suite_dir": str(res.suite_dir),
        "state_dir": str(opts.state_dir.resolve()),
        "llm": res.llm,
        "limits": res.limits,
        "sandbox": res.sandbox,
        "tasks": [str(t.path) for t in tasks],
    }
    if res.calibration is not None:
        config["calibration"] = res.calibration
    return config, res


def task_run_details(session: Session, task_run: str, n_agents: int) -> tuple[list[Candidate], list[Verdict]]:
    """The last round's candidates (with test outcomes) and verdicts, read from the checkpoint."""
    from .graph import _round_candidates, _round_verdicts

    values = session.graph.get_state(_thread_config(task_run, n_agents)).values
    if not values.get("agents"):
        return [], []
    return _round_candidates(values), _round_verdicts(values)


def run_task_detailed(session: Session, run: str, task: Task, config: dict, interactive: bool = False, fresh: bool = True) -> TaskOutcome:
    """``run_task``, then the candidates and verdicts behind its result."""
    result = run_task(session, run, task, config, interactive, fresh)
    candidates, verdicts = task_run_details(session, result.task_run, len(config["agents"]))
    return TaskOutcome(result, candidates, verdicts, session.ledger.path)


def run_one_task(
    path: Path,
    agents: list[str] | None = None,
    reviewers: list[str] | None = None,
    policy: str | None = None,
    state_dir: Path = DEFAULT_STATE_DIR,
    ledger: Path | None = None,
    interactive: bool = False,
    run_id: str | None = None,
    pm: pluggy.PluginManager | None = None,
) -> TaskOutcome:
    """Run the one task folder at ``path`` as a suite run of its own; return it in full.

    Raises UsageError for bad specs, a broken task folder, or a folder that is
    not exactly one task (use ``run_suite`` for a suite).
    """
    pm = pm or plugins.get_plugin_manager()
    path = Path(path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a task folder (one with task.toml)")
    suite = load_suite([path])
    if suite.errors:
        raise UsageError(f"{path} cannot be run:\n" + "\n".join(str(e) for e in suite.errors))
    if len(suite.tasks) != 1:
        raise UsageError(f"{path} holds {len(suite.tasks)} task folders; give exactly one (run_suite runs a suite)")
    task = suite.tasks[0]
    opts = RunOptions(paths=[path], agents=list(agents or []), reviewers=list(reviewers or []), policy=policy,
                      ledger=ledger, state_dir=state_dir, interactive=interactive)
    config, res = run_config(opts, [task], pm)
    run = run_id or new_run_id()
    with open_session(state_dir, res.ledger, pm) as session:
        session.ledger.start_run(run, config)
        try:
            outcome = run_task_detailed(session, run, task, config, interactive)
        except KeyboardInterrupt:
            session.ledger.set_run_status(run, "interrupted")
            raise
        _finish_run(session, run, [outcome.result])
    pm.hook.crossreview_run_finished(run=run, results=[outcome.result])
    return outcome
