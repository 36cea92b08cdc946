"""The pytest face: a task suite is a pytest suite.

    pytest --crossreview tasks/ [--crossreview-agent SPEC ...] [-n 4] [-k ID] [-m TAG]

Registered through the ``pytest11`` entry point and inert until asked for:
without ``--crossreview`` (or ``crossreview = true`` in the ini section) this
module adds its options, ini keys and the ``crossreview`` fixture, and nothing
else: it collects nothing, and imports nothing but pytest and the standard
library. The library (``crossreview.runner``, which pulls in pydantic, GitPython
and, at the first task run, LangGraph) is imported only once the plugin is on.

Each task folder (a folder holding task.toml) is one item, ``<folder>::crossreview``:

- accepted passes;
- rejected (and a run that errored, or a task folder that cannot be loaded)
  fails, with a report of each candidate's tests and the verdicts on it; the
  ``crossreview:`` line at the end counts a folder that cannot be loaded as
  ``N broken``, not as a task run, as ``crossreview run`` does;
- escalated is an outcome of its own: letter ``H`` (waits for a human), word
  ``ESCALATED``, counted as ``N escalated`` in the summary line. The session
  exits 3 when something waits for a human and nothing failed;
- a task run a budget cap cut short (``TaskResult.stopped``) fails, whatever its
  decision: it was decided without the work the cap stopped, and ``crossreview
  run`` exits 1 for it (runner.exit_code_for); the report names the cap.

Runs and the ledger: one run id per pytest session, made by the controller
and handed to pytest-xdist workers through ``workerinput``, so every task of
the session is one suite run in the ledger (``crossreview resume RUN`` finishes
it after a crash). If the selected tasks come from several suites (several
crossreview.toml), each suite is a run of its own: ``RUN``, ``RUN-2``, ...
Workers share the ledger and checkpoints (SQLite in WAL mode with busy
timeouts); each task gets its own worktrees and branches (they are named by
run and task), and changes to a task's base repository are serialised by a
file lock in the library, so no two workers touch the same tree at once.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:  # pragma: no cover - typing only
    from .models import Task, TaskError
    from .runner import TaskOutcome

ESCALATED = "escalated"
"""The stats category (summary-line word) of a task that waits for a human."""
ESCALATED_LETTER = "H"
ESCALATED_WORD = "ESCALATED"
EXIT_WAITING = 3
ITEM_NAME = "crossreview"
_PLUGIN_NAME = "crossreview-session"
_WORKERINPUT_RUN = "crossreview_run"
_MAX_TESTS_SHOWN = 8
_MAX_CONCERNS_SHOWN = 6
# Tags that would change what pytest does with the item if they became markers.
_PYTEST_BUILTIN_MARKS = {"skip", "skipif", "xfail", "parametrize", "usefixtures", "filterwarnings"}


# --- options and ini keys (always registered; cheap) -------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("crossreview", "crossreview: run task folders (task.toml) as tests")
    group.addoption(
        "--crossreview", action="store_true", default=False,
        help="Collect every task folder (a folder with task.toml) as one test item, <folder>::crossreview.",
    )
    group.addoption(
        "--crossreview-agent", action="append", dest="crossreview_agents", default=[], metavar="SPEC",
        help="Repeatable. oracle | noop | command:<cmd> | llm:<model>, optionally NAME=SPEC. "
             "Default: ini crossreview_agents, else the suite's crossreview.toml, else oracle and noop.",
    )
    group.addoption(
        "--crossreview-reviewer", action="append", dest="crossreview_reviewers", default=[], metavar="SPEC",
        help="NAME=SPEC gives agent NAME its reviewer; a bare SPEC gives it to every agent.",
    )
    group.addoption("--crossreview-policy", default=None, metavar="NAME",
                    help="Consensus policy: unanimous (default), majority, calibrated, cascade, or a plugin's; "
                         "`crossreview plugins` lists the installed ones.")
    group.addoption("--crossreview-calibration", default=None, metavar="FILE",
                    help="Policy file of the calibrated / cascade policies (default: the suite config's "
                         "`calibration`, else <state-dir>/calibration.json).")
    group.addoption("--crossreview-ledger", default=None, metavar="PATH",
                    help="Ledger file (default: .crossreview/ledger.db).")
    group.addoption("--crossreview-state-dir", default=None, metavar="DIR",
                    help="Where worktrees, checkpoints and the ledger live (default: .crossreview beside the "
                         "ini file, else in the current directory).")
    group.addoption("--crossreview-no-input", action="store_true", default=False,
                    help="Never prompt; escalations wait in the inbox. Always so unless -s is given, stdin is a "
                         "terminal, CI is not set and no xdist worker runs the task.")
    parser.addini("crossreview", type="bool", default=False,
                  help="Turn the crossreview plugin on as --crossreview does.")
    parser.addini("crossreview_agents", type="linelist", default=[],
                  help="Agent specs, one per line (as `agents` in crossreview.toml).")
    parser.addini("crossreview_reviewers", type="linelist", default=[],
                  help="Reviewer specs, one per line (as `reviewers` in crossreview.toml).")
    parser.addini("crossreview_policy", type="string", default="",
                  help="Consensus policy (as `policy` in crossreview.toml).")
    parser.addini("crossreview_ledger", type="string", default="",
                  help="Ledger file, relative to the ini file (as `ledger` in crossreview.toml).")
    parser.addini("crossreview_state_dir", type="string", default="",
                  help="State directory, relative to the ini file (default .crossreview).")


def _enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("crossreview", False) or config.getini("crossreview"))


def pytest_load_initial_conftests(early_config: pytest.Config, parser: pytest.Parser, args: list[str]) -> None:
    """Let ``pytest --crossreview tasks/fizzbuzz::crossreview`` rerun what a report names.

    pytest refuses ``::`` after a directory, and a task's item is named after
    its folder; the argument is rewritten to the folder (which holds one item).
    """
    if "--crossreview" not in args and not early_config.getini("crossreview"):
        return
    suffix = "::" + ITEM_NAME
    for i, arg in enumerate(args):
        if isinstance(arg, str) and arg.endswith(suffix):
            folder = arg[: -len(suffix)]
            if (early_config.invocation_params.dir / folder / "task.toml").is_file():
                args[i] = folder


def pytest_configure(config: pytest.Config) -> None:
    if not _enabled(config):
        return
    config.addinivalue_line("markers", "crossreview: a crossreview task folder run as a test item")
    config.pluginmanager.register(CrossreviewPlugin(config), _PLUGIN_NAME)


# --- collection: a task folder is one item -----------------------------------


class TaskDirectory(pytest.Directory):
    """A task folder: collects to its one item and never recurses into repo/ or tests/."""

    def collect(self):
        from .tasks import TASK_FILE, load_task

        loaded = load_task(self.path)
        if isinstance(loaded, list):
            yield TaskItem.from_parent(self, name=ITEM_NAME, task=None, load_errors=loaded)
            return
        item = TaskItem.from_parent(self, name=ITEM_NAME, task=loaded, load_errors=[])
        item.extra_keyword_matches.add(loaded.id)
        for tag in loaded.tags:
            if tag in _PYTEST_BUILTIN_MARKS or tag.startswith("_"):
                item.extra_keyword_matches.add(tag)  # selectable with -k, but no marker
                continue
            if not any(line.split(":", 1)[0].strip() == tag for line in self.config.getini("markers")):
                self.config.addinivalue_line("markers", f"{tag}: crossreview task tag (from {TASK_FILE})")
            item.add_marker(tag)
        item.add_marker(ITEM_NAME)
        yield item


class TaskFailed(Exception):
    """A task that was rejected, errored, cut short by a budget cap or cannot run: the message is the readable report."""


class TaskItem(pytest.Item):
    """One task folder's run through crossreview."""

    def __init__(self, *, task: "Task | None", load_errors: "list[TaskError]", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.task = task
        self.load_errors = load_errors
        self.outcome: "TaskOutcome | None" = None

    @property
    def task_id(self) -> str:
        return self.task.id if self.task else self.path.name

    def runtest(self) -> None:
        self.config.pluginmanager.get_plugin(_PLUGIN_NAME).run_item(self)

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, TaskFailed):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self):
        return self.path / "task.toml", None, f"crossreview task {self.task_id}"


# --- the plugin, once --crossreview is on ------------------------------------


class CrossreviewPlugin:
    """Per-process state: the run id, open sessions, and what each task run decided."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        workerinput = getattr(config, "workerinput", None)
        self.is_worker = workerinput is not None
        if self.is_worker and workerinput.get(_WORKERINPUT_RUN):
            self.run_id = workerinput[_WORKERINPUT_RUN]
        else:
            import secrets

            # The library's run id format (runner.new_run_id), made here so
            # the controller does not import the library just to name a run.
            self.run_id = "r-" + secrets.token_hex(4)
        base = config.rootpath if config.inipath else config.invocation_params.dir
        ini_dir = config.inipath.parent if config.inipath else config.rootpath
        opt_state = config.getoption("crossreview_state_dir")
        ini_state = config.getini("crossreview_state_dir")
        if opt_state:
            self.state_dir = (config.invocation_params.dir / opt_state).resolve()
        elif ini_state:
            self.state_dir = (ini_dir / ini_state).resolve()
        else:
            self.state_dir = (base / ".crossreview").resolve()
        opt_ledger = config.getoption("crossreview_ledger")
        ini_ledger = config.getini("crossreview_ledger")
        # (base folder, text): made a location (a path, or a postgresql:// URL) on first use.
        self._ledger_arg: tuple[Path, str] | None = None
        if opt_ledger:
            self._ledger_arg = (config.invocation_params.dir, opt_ledger)
        elif ini_ledger:
            self._ledger_arg = (ini_dir, ini_ledger)
        self.agents = list(config.getoption("crossreview_agents") or config.getini("crossreview_agents"))
        self.reviewers = list(config.getoption("crossreview_reviewers") or config.getini("crossreview_reviewers"))
        self.policy = config.getoption("crossreview_policy") or config.getini("crossreview_policy") or None
        calibration = config.getoption("crossreview_calibration")
        self.calibration = (config.invocation_params.dir / calibration) if calibration else None
        self.interactive = (
            not config.getoption("crossreview_no_input")
            and not self.is_worker
            and config.getoption("capture", "fd") == "no"
            and sys.__stdin__ is not None
            and sys.__stdin__.isatty()
            and os.environ.get("CI", "").lower() not in ("true", "1")
        )
        self._plan: dict[int, Any] | None = None
        self._items: list[TaskItem] = []
        self._sessions: dict[Path, Any] = {}
        self._stack = None
        self._started_runs: set[str] = set()
        self.reports: list[dict] = []

    # -- xdist: one run id for every worker --

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:
        node.workerinput[_WORKERINPUT_RUN] = self.run_id

    # -- usage errors before anything runs --

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        if self.is_worker:
            return  # the controller checked already
        from .runner import UsageError, resolve_options
        from .tasks import ConfigError, load_suite_config

        from . import plugins

        try:
            pm = plugins.get_plugin_manager()
        except plugins.PluginError as exc:
            raise pytest.UsageError(f"crossreview: {exc}") from None
        seen: set[Path] = set()
        for arg in self.config.args or ["."]:
            path = (self.config.invocation_params.dir / str(arg).split("::", 1)[0]).resolve()
            try:
                suite_dir = load_suite_config([path]).suite_dir
            except ConfigError as exc:
                raise pytest.UsageError(f"crossreview: {exc}") from None
            if suite_dir in seen:
                continue
            seen.add(suite_dir)
            try:
                resolve_options(self._options([path]), pm)
            except UsageError as exc:
                raise pytest.UsageError(f"crossreview: {exc}") from None

    @property
    def ledger(self) -> Any:
        """The ledger given by option or ini key: an absolute path or a LedgerURL; None if not given."""
        if self._ledger_arg is None:
            return None
        return _ledger_location(*self._ledger_arg)

    def _options(self, paths: list[Path]):
        from .runner import RunOptions

        return RunOptions(paths=paths, agents=self.agents, reviewers=self.reviewers, policy=self.policy,
                          ledger=self.ledger, state_dir=self.state_dir, interactive=self.interactive,
                          calibration=self.calibration)

    # -- collection --

    @pytest.hookimpl(tryfirst=True)
    def pytest_collect_directory(self, path: Path, parent: pytest.Collector):
        if (path / "task.toml").is_file():
            return TaskDirectory.from_parent(parent, path=path)
        return None

    # -- running --

    def _make_plan(self) -> dict[int, Any]:
        """Per selected task item: its run id and run config, or why it cannot run.

        Computed from the whole selection (identical on every xdist worker), so
        every worker names runs alike and records the same task list.
        """
        from .runner import UsageError, run_config
        from .tasks import load_suite_config

        from . import plugins

        pm = plugins.get_plugin_manager()
        items = [i for i in self._items if i.task is not None]
        by_suite: dict[Path, list[TaskItem]] = {}
        first_with_id: dict[str, TaskItem] = {}
        plan: dict[int, Any] = {}
        for item in items:
            other = first_with_id.setdefault(item.task.id, item)
            if other is not item:
                plan[id(item)] = (f"task id {item.task.id!r} is already used by {other.path}; "
                                  "give each task its own id ([task] id in task.toml)")
                continue
            try:
                suite_dir = load_suite_config([item.task.path]).suite_dir
            except Exception as exc:  # noqa: BLE001 - shown on the item
                plan[id(item)] = str(exc)
                continue
            by_suite.setdefault(suite_dir, []).append(item)
        for index, suite_dir in enumerate(sorted(by_suite, key=str)):
            members = by_suite[suite_dir]
            run = self.run_id if index == 0 else f"{self.run_id}-{index + 1}"
            try:
                config, res = run_config(self._options([suite_dir]), [i.task for i in members], pm)
            except UsageError as exc:
                for i in members:
                    plan[id(i)] = str(exc)
                continue
            ledger = _ledger_location(self.state_dir, res.ledger or "ledger.db")
            for i in members:
                plan[id(i)] = (run, config, ledger)
        return plan

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        # The final selection the runs are made of: after -k, -m, --deselect, and
        # after the plugins that filter in a hook wrapper once every
        # pytest_collection_modifyitems has run (--lf, --sw), which a trylast
        # modifyitems would see before they filter.
        self._items = [i for i in session.items if isinstance(i, TaskItem)]

    def _session_for(self, ledger: Any):
        key = str(getattr(ledger, "url", ledger))
        if key not in self._sessions:
            from contextlib import ExitStack

            from . import plugins
            from .runner import open_session

            if self._stack is None:
                self._stack = ExitStack()
            self._sessions[key] = self._stack.enter_context(
                open_session(self.state_dir, ledger, plugins.get_plugin_manager())
            )
        return self._sessions[key]

    def run_item(self, item: TaskItem) -> None:
        if item.load_errors:
            raise TaskFailed(format_load_errors(item.path, item.load_errors))
        if self._plan is None:
            self._plan = self._make_plan()
        planned = self._plan.get(id(item))
        if planned is None:  # selected by a hook after ours: plan it alone
            self._items = [item]
            planned = self._make_plan().get(id(item))
        if isinstance(planned, str):
            raise TaskFailed(f"crossreview: {item.task_id} cannot run: {planned}")
        run, config, ledger = planned
        from .runner import run_task_detailed

        from .ledger import LedgerError

        try:
            session = self._session_for(ledger)
            if run not in self._started_runs:
                if session.ledger.get_run(run) is None:  # another worker may have started it
                    session.ledger.start_run(run, config)
                self._started_runs.add(run)
        except (LedgerError, OSError, sqlite3.Error) as exc:
            raise TaskFailed(f"crossreview: cannot open the ledger {ledger} or the state in {self.state_dir}: {exc}") from None
        with _KillChildrenOnInterrupt():
            outcome = run_task_detailed(session, run, item.task, config, self.interactive)
        item.outcome = outcome
        item.user_properties.extend(junit_properties(outcome))
        if outcome.decision in ("rejected", "error") or outcome.stopped:
            # A cap that cut the task run short fails it even when what was left was accepted: the
            # CLI exits 1 for it, and a pass would tell CI the task was solved with all its work done.
            raise TaskFailed(format_outcome(outcome))

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo):
        rep = yield
        if not isinstance(item, TaskItem) or call.when != "call":
            return rep
        outcome = item.outcome
        if outcome is None:
            if item.load_errors:
                # Nothing ran, so no decision: the summary counts it as the CLI does, a broken folder.
                rep.crossreview = {"task": item.task_id, "broken": True}
            return rep
        rep.crossreview = {
            "task": outcome.task,
            "run": outcome.run,
            "task_run": outcome.task_run,
            "decision": outcome.decision,
            "winner": outcome.winner,
            "escalation": outcome.escalation,
            "reason": outcome.reason,
            "tokens": outcome.tokens,
            "cost": outcome.cost,
            "ledger": str(outcome.ledger) if outcome.ledger else None,
            "stopped": outcome.stopped,
        }
        if outcome.decision == ESCALATED and rep.passed:
            # Not a pass, not a failure: a skip to everything that reads
            # outcomes (JUnit shows <skipped>, -x does not stop, --lf does not
            # rerun it), a category of its own to the terminal's summary.
            rep.outcome = "skipped"
            rep.longrepr = (str(item.path / "task.toml"), 1, escalation_line(outcome))
        return rep

    @pytest.hookimpl(tryfirst=True)
    def pytest_report_teststatus(self, report, config):
        info = getattr(report, "crossreview", None)
        # An escalated task run the cap cut short failed (run_item): shown as the failure it is.
        if info and report.when == "call" and info.get("decision") == ESCALATED and not report.failed:
            return ESCALATED, ESCALATED_LETTER, (ESCALATED_WORD, {"yellow": True})
        return None

    def pytest_runtest_logreport(self, report) -> None:
        info = getattr(report, "crossreview", None)
        if info and report.when == "call":
            self.reports.append({**info, "nodeid": report.nodeid})

    # -- the end --

    def pytest_terminal_summary(self, terminalreporter, exitstatus, config) -> None:
        if self.is_worker or not self.reports:
            return
        from .words import count_phrase

        tr = terminalreporter
        waiting = [r for r in self.reports if r.get("decision") == ESCALATED]
        if waiting:
            tr.write_sep("=", f"{len(waiting)} waiting for a human", yellow=True)
            for r in waiting:
                tr.write_line(f"{r['nodeid']}: {r.get('escalation')} {r.get('reason', '')}")
            tr.write_line(f"decide with `crossreview show {waiting[0].get('escalation')}`, then "
                          f"`crossreview decide ID --pick NAME | --reject`; `crossreview inbox` lists them all")
        ran = [r for r in self.reports if not r.get("broken")]
        broken = len(self.reports) - len(ran)
        counts: dict[str, int] = {}
        for r in ran:
            counts[r.get("decision", "error")] = counts.get(r.get("decision", "error"), 0) + 1
        tokens = sum(r.get("tokens") or 0 for r in ran)
        costs = [r.get("cost") for r in ran if "cost" in r]
        cost = "unknown" if any(c is None for c in costs) else f"${sum(costs):.4f}"
        runs = sorted({r["run"] for r in ran if r.get("run")})
        ledgers = sorted({r["ledger"] for r in ran if r.get("ledger")})
        parts = ", ".join(f"{counts.get(k, 0)} {k}" for k in ("accepted", "rejected", "escalated"))
        if counts.get("error"):
            parts += f", {counts['error']} error"
        if broken:
            parts += f", {broken} broken"
        stopped = sum(1 for r in ran if r.get("stopped"))
        if stopped:
            # As `crossreview run`'s summary: also counted among the decisions above, which were made without it.
            parts += f", {stopped} stopped by a budget cap"
        tr.write_line(f"crossreview: {count_phrase(len(ran), 'task run')}: {parts} · tokens {tokens} · "
                      f"cost {cost} · run {', '.join(runs) or '-'} · ledger {', '.join(ledgers) or '-'}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None
            self._sessions.clear()
        if self.is_worker:
            return
        self._finish_runs(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
        if session.exitstatus == pytest.ExitCode.INTERRUPTED and _xdist_stopped_at_maxfail(self.config):
            # -x / --maxfail under xdist: xdist stops by raising an interrupt, which
            # pytest reports as 2 -- crossreview's "usage error, nothing ran". It is
            # a failure, as -x is without xdist.
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        waiting = any(r.get("decision") == ESCALATED for r in self.reports)
        if waiting and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = EXIT_WAITING

    def _finish_runs(self, interrupted: bool) -> None:
        """Mark each run of the session finished / waiting / error / interrupted in its ledger."""
        by_ledger: dict[str, set[str]] = {}
        for r in self.reports:
            if r.get("run") and r.get("ledger"):
                by_ledger.setdefault(r["ledger"], set()).add(r["run"])
        if not by_ledger:
            return
        from .ledger import Ledger, LedgerError

        mine = self.ledger
        for shown, runs in by_ledger.items():
            # A URL is shown without its password: reopen the one given to us by option or ini.
            location = mine if mine is not None and str(mine) == shown else shown
            try:
                ledger = Ledger(location)
                for run in runs:
                    ledger.set_run_status(run, _run_status(ledger, run, interrupted))
            except (LedgerError, OSError, sqlite3.Error):
                continue  # the status stays "running"; every task run is recorded already

    def pytest_unconfigure(self, config) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None


class _KillChildrenOnInterrupt:
    """While a task runs, Ctrl-C and SIGTERM kill every agent and verifier first.

    They run in sessions of their own (so a timeout can kill a whole tree), so
    the terminal's signal does not reach them, and LangGraph waits for running
    branches before an interrupt gets through; as the CLI does, kill them, then
    raise KeyboardInterrupt for pytest to report.
    """

    def __enter__(self):
        import signal

        self._old: dict[int, Any] = {}
        if threading.current_thread() is not threading.main_thread():
            return self

        def handler(signum, frame):
            from .sandbox import kill_all_children

            kill_all_children()
            raise KeyboardInterrupt

        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._old[sig] = signal.signal(sig, handler)
            except (ValueError, OSError):  # pragma: no cover - not the main thread after all
                pass
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for sig, old in self._old.items():
            signal.signal(sig, old)


def _xdist_stopped_at_maxfail(config: pytest.Config) -> bool:
    """Whether pytest-xdist's controller stopped the session because --maxfail (-x) failures were reached."""
    dsession = config.pluginmanager.get_plugin("dsession")
    return str(getattr(dsession, "shouldstop", "") or "").startswith("stopping after ")


def _run_status(ledger: Any, run: str, interrupted: bool) -> str:
    """What a session leaves its run as: finished, waiting, error, or interrupted (tasks left to resume)."""
    row = ledger.get_run(run)
    task_runs = ledger.task_runs(run)
    ended = {tr["task_path"] for tr in task_runs if tr["status"] in ("done", "parked", "error")}
    decisions = {tr["decision"] for tr in task_runs}
    if interrupted or (row is not None and not set(row["config"].get("tasks", [])) <= ended):
        return "interrupted"  # `crossreview resume RUN` runs what is left
    if "error" in decisions:
        return "error"
    if ESCALATED in decisions:
        return "waiting"
    return "finished"


def _ledger_location(base: Path, value: Any) -> Any:
    """A ledger given as text or path: a postgresql:// URL as it is, a file made absolute against ``base``."""
    from .ledger import parse_location

    loc = parse_location(value)
    return (base / loc).resolve() if isinstance(loc, Path) else loc


# --- what the reports say ----------------------------------------------------


def escalation_line(outcome: "TaskOutcome") -> str:
    """One line for an escalated task: where it waits and what to run."""
    return (f"escalated: waits for a human ({outcome.escalation}): {outcome.reason}; "
            f"`crossreview show {outcome.escalation}`")


def junit_properties(outcome: "TaskOutcome") -> list[tuple[str, str]]:
    """The per-task properties --junitxml writes (CI systems show them on the test case)."""
    props = [
        ("crossreview.decision", outcome.decision),
        ("crossreview.winner", outcome.winner or ""),
        ("crossreview.escalation", outcome.escalation or ""),
        ("crossreview.cost", "unknown" if outcome.cost is None else f"{outcome.cost:.6f}"),
        ("crossreview.tokens", str(outcome.tokens)),
        ("crossreview.run", outcome.run),
        ("crossreview.task_run", outcome.task_run),
        ("crossreview.reason", outcome.reason),
        ("crossreview.stopped", outcome.stopped or ""),
    ]
    return props


def format_load_errors(path: Path, errors: "list[TaskError]") -> str:
    """A broken task folder: every problem, with its file, key and fix."""
    lines = [f"crossreview: the task folder {path} cannot be loaded:"]
    lines += [f"  {e}" for e in errors]
    return "\n".join(lines)


def format_outcome(outcome: "TaskOutcome") -> str:
    """The readable report of a task run: per candidate its tests, the verdicts on it and their concerns."""
    from .words import files_phrase

    from .reporting import stopped_label

    r = outcome.result
    # "accepted" alone would not say why an accepted task failed: the cap's label goes in the first line.
    stopped = f", {stopped_label(r.stopped)}" if r.stopped else ""
    lines = [f"crossreview: {r.task} {r.decision}{stopped} (task run {r.task_run})"]
    if r.stopped:
        lines.append(f"stopped: {r.stopped}; decided without the agents and reviews it stopped, so the task "
                     "fails whatever the decision (raise or lift the cap to let it do all its work)")
    if r.reason:
        lines.append(f"reason: {r.reason}")
    if r.error:
        lines.append(f"error: {r.error}")
    for c in outcome.candidates:
        lines.append("")
        tests = c.tests
        passed = f"tests {tests.passed}/{tests.total} passed" if tests else "tests not run"
        if tests and tests.timed_out:
            passed += " (timed out)"
        diff = (f"{files_phrase(len(c.files_changed))} +{c.lines_added} -{c.lines_removed}"
                if c.files_changed else "no changes")
        status = "" if c.status == "ok" else f" [{c.status}: {c.error}]"
        lines.append(f"candidate {c.agent} ({c.spec}): {passed}; diff: {diff}; {c.seconds:.1f}s{status}")
        if tests:
            bad = [o for o in tests.outcomes if o.outcome in ("failed", "error")]
            for o in bad[:_MAX_TESTS_SHOWN]:
                message = " ".join(o.message.split())[:160]
                lines.append(f"    {o.outcome} {o.name}" + (f": {message}" if message else ""))
            if len(bad) > _MAX_TESTS_SHOWN:
                lines.append(f"    ... and {len(bad) - _MAX_TESTS_SHOWN} more")
            if tests.total == 0 and tests.output.strip():
                tail = tests.output.strip().splitlines()[-5:]
                lines += [f"    | {t}" for t in tail]
        on_it = outcome.verdicts_on(c.agent)
        if not on_it:
            lines.append("  reviews: none")
        for v in on_it:
            extra = f" [{v.error}]" if v.error else ""
            lines.append(f"  review by {v.reviewer}: {v.verdict} (confidence {v.confidence:.2f}){extra}")
            for concern in v.concerns[:_MAX_CONCERNS_SHOWN]:
                lines.append(f"    - {concern}")
            if len(v.concerns) > _MAX_CONCERNS_SHOWN:
                lines.append(f"    - ... and {len(v.concerns) - _MAX_CONCERNS_SHOWN} more")
    if outcome.ledger:
        lines.append("")
        lines.append(f"ledger {outcome.ledger} · run {r.run}")
    return "\n".join(lines)


# --- the fixture (available whether or not --crossreview is on) --------------


class CrossreviewFixture:
    """Run task folders from a test; every run has its own state directory under the test's temp dir."""

    def __init__(self, state_dir: Path, rootpath: Path) -> None:
        self.state_dir = state_dir
        self.rootpath = rootpath
        self.ledger = state_dir / "ledger.db"
        """The ledger every run of this fixture writes to."""

    def run(
        self,
        path: str | os.PathLike,
        agents: list[str] | None = None,
        reviewers: list[str] | None = None,
        policy: str | None = None,
    ) -> "TaskOutcome":
        """Run one task folder; return its decision, winner, candidates, verdicts, escalation id, costs and
        ``stopped`` (a budget cap that cut it short: its decision was made without what the cap stopped).

        ``path`` is relative to the current directory, else to pytest's rootdir.
        Agents, reviewers and policy default as in ``crossreview run``: the
        suite's crossreview.toml, else oracle and noop with the tests reviewer.
        Nothing prompts: an escalation waits in this fixture's ledger. Bad
        specs or a broken task folder raise ``crossreview.runner.UsageError``.
        """
        from .runner import run_one_task

        p = Path(path)
        if not p.is_absolute() and not p.exists() and (self.rootpath / p).exists():
            p = self.rootpath / p
        return run_one_task(p, agents=agents, reviewers=reviewers, policy=policy,
                            state_dir=self.state_dir, ledger=self.ledger, interactive=False)


@pytest.fixture
def crossreview(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> CrossreviewFixture:
    """Run a crossreview task from a test: ``crossreview.run("tasks/fizzbuzz", agents=["oracle", "noop"])``.

    Returns a ``crossreview.runner.TaskOutcome``: ``decision``, ``winner``,
    ``candidates`` (with test outcomes), ``verdicts``, ``escalation``,
    ``tokens``, ``cost`` and ``stopped`` (the budget cap's message when a cap
    in the suite's crossreview.toml cut the task run short, else None). Each test gets its own ledger (``crossreview.ledger``).
    """
    state_dir = tmp_path_factory.mktemp("crossreview")
    return CrossreviewFixture(state_dir, request.config.rootpath)
