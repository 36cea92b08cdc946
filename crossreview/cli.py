"""The `crossreview` command: a thin click face over the library.

Heavy imports (LangGraph, GitPython, litellm) happen inside commands, so
`crossreview --help` starts fast.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from .ledger_cli import open_ledger

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_WAITING = 0, 1, 2, 3


def _console(stderr: bool = False) -> Console:
    """A console; piped or in a CI log, wide enough that tables don't wrap into columns of stubs."""
    import os

    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=160)
    return console


def _consoles(json_mode: bool) -> tuple[Console, Console]:
    return _console(), _console(stderr=True)


def _sigterm_is_ctrl_c() -> None:
    """Ctrl-C and SIGTERM stop every agent and verifier at once, then unwind.

    The children run in sessions of their own (so a timeout can kill their
    whole tree), which also means the terminal's SIGINT never reaches them;
    and LangGraph waits for running branches before it lets an interrupt
    through. So the handler kills them first.
    """
    import signal

    from .sandbox import kill_all_children

    def handler(signum, frame):
        kill_all_children()
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _error_json(e) -> dict:
    """A broken task folder as `--json` reports it."""
    return {"path": str(e.path), "file": str(e.file), "field": e.field, "message": e.message}


def _interrupted(err: Console, run_id: str | None = None) -> None:
    """Say how to go on, then leave at once, exit code 130.

    At once: a model call in flight runs in a thread no signal can stop, and
    a normal exit joins every worker thread — it would wait for the reply
    (minutes, with a slow model) and then let that branch run on into
    worktrees already removed. Everything finished is committed already
    (LangGraph's checkpoints and the ledger are SQLite transactions).
    """
    import os

    what = f"crossreview resume {run_id}" if run_id else "crossreview resume RUN"
    err.print(f"[yellow]interrupted[/yellow]: agents stopped, worktrees removed; finished work is "
              f"checkpointed and `{what}` continues it")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)


def _run_of_escalation(esc_id: str, ledger) -> str | None:
    """The run an escalation belongs to, for the resume hint after Ctrl-C; None when it cannot be read."""
    try:
        from .ledger import Ledger
        from .runner import find_escalation

        esc = find_escalation(Ledger(ledger), esc_id)  # the id as typed: it may be a prefix
    except Exception:  # noqa: BLE001 - only a hint: the generic one is printed instead
        return None
    return esc["run"]


def _fail(message: str, code: int = EXIT_USAGE) -> None:
    # The message is text: `[prices."m"]` or a spec like "[x]" must print as written, not as markup.
    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    sys.exit(code)


def _missing_paths_hint(given: bool) -> str:
    """What to type instead when the default `tasks/` is not here, judged from the current folder.

    A newcomer who `cd`s into the example suite (or into one task) and types `crossreview run`
    would otherwise be told only that `tasks` does not exist, with no hint that `.` would do.
    """
    if given:
        return ""
    here = Path.cwd()
    if (here / "task.toml").is_file():
        return "; this folder is a task folder (it has task.toml): `crossreview run .` runs it"
    from .tasks import find_task_dirs

    if (here / "crossreview.toml").is_file() or find_task_dirs([here]):
        return "; this folder holds task folders: `crossreview run .` runs them"
    return ""


ledger_option = click.option(
    "--ledger", type=click.Path(path_type=Path), default=None,
    help="Ledger file (default: .crossreview/ledger.db).",
)
sandbox_option = click.option(
    "--sandbox", type=click.Choice(["auto", "required", "off"]), default=None,
    help="Confine agents, verifiers and command reviewers with bubblewrap: auto (default: warn loudly "
         "where it cannot run), required (refuse to run without it), off. Default: config's `sandbox`.",
)
state_option = click.option(
    "--state-dir", type=click.Path(path_type=Path), default=Path(".crossreview"), show_default=True,
    help="Where worktrees, checkpoints and the ledger live.",
)


def _show_plugin_warnings() -> None:
    """Print a plugin hook's failure (plugins.PluginWarning) as one `warning:` line on stderr.

    Python's own format would add the file and line of crossreview's guard and
    its source line; the message names the plugin's file and line already.
    """
    import warnings

    from .plugins import PluginWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if isinstance(category, type) and issubclass(category, PluginWarning):
            click.echo(f"warning: {message}", err=True)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


class _Main(click.Group):
    """The command group; an installed plugin that cannot be used is a usage error (2), not a traceback."""

    def invoke(self, ctx: click.Context):
        _show_plugin_warnings()
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from .plugins import PluginError

            if isinstance(exc, PluginError):
                _fail(str(exc))
            raise


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="crossreview")
def main() -> None:
    """Give one coding task to several agents, have them review each other,
    and ask a human only when they disagree.

    \b
    Start here:
      crossreview run tasks/          run the example suite on offline agents
      crossreview inbox               escalations waiting for you
      crossreview show ID             the packet: who did what, where they disagree
      crossreview decide ID --pick alice
                                      finish the parked run with your decision
                                      (alice is an agent of tasks/; `show ID`
                                      names the agents you can pick)
      crossreview gate --base main    CI: review a pull request, escalate splits

    Exit codes (run, gate): 0 all accepted, 1 something rejected, broken or stopped by a budget cap,
    2 usage or input error (nothing ran), 3 something waits for a human.
    """


class _Cap(click.ParamType):
    """A cap's value: a number in ``inner``'s range, or ``none`` (budget.NO_CAP) to lift the cap.

    A word rather than a separate --no-max-cost flag: one option per cap says both "this much" and
    "no limit", and a `resume` given both could not say which wins."""

    def __init__(self, inner: click.ParamType, unit: str):
        self.inner, self.unit = inner, unit
        self.name = f"{unit}|none"

    def convert(self, value, param, ctx):
        from .budget import NO_CAP

        if isinstance(value, str) and value.strip().lower() == NO_CAP:
            return NO_CAP
        try:
            return self.inner.convert(value, param, ctx)
        except click.BadParameter as exc:
            self.fail(f"{exc.message.rstrip('.')}; give a number of {self.unit}, or `none` to lift the cap", param, ctx)


def _finite(ctx, param, value):
    """A money cap must be a number: "nan" or "inf" would pass the range check and cap nothing."""
    if isinstance(value, float) and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite amount of USD (give `none` to lift the cap)")
    return value


def budget_options(resume: bool):
    """--max-cost, --max-tokens, --max-task-cost, --max-task-tokens: the same names and meaning on
    `run` and `resume`, so a run stopped by its cap is continued with a higher one, or with none."""
    if resume:
        # A resume continues a run that has spent already: say the cap is the run's total, not extra money.
        first = ("New cap for the whole suite run, replacing the recorded one for the rest of the run: stop "
                 "starting model calls once the run has spent this much in all, what it spent before this "
                 "resume included (so give the total you allow, not the extra). `none` lifts the cap. "
                 "Default: the run's recorded cap.")
    else:
        first = ("Stop starting model calls once the suite run has spent this much (default: config's max_cost; "
                 "`none`: no cap, whatever the config says).")
    usd, tokens = (_Cap(click.FloatRange(min=0, min_open=True), "USD"), _Cap(click.IntRange(min=1), "tokens"))
    options = [
        click.option("--max-cost", type=usd, default=None, metavar="USD|none", callback=_finite, help=first),
        click.option("--max-tokens", type=tokens, default=None, metavar="N|none",
                     help="The same for tokens (in + out) over the suite run."),
        click.option("--max-task-cost", type=usd, default=None, metavar="USD|none",
                     callback=_finite, help="The same, per task run."),
        click.option("--max-task-tokens", type=tokens, default=None, metavar="N|none",
                     help="The same for tokens, per task run."),
    ]

    def decorate(f):
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@click.option("--agent", "agents", multiple=True, metavar="SPEC",
              help="Repeatable. oracle | noop | command:<cmd> | llm:<model>, optionally NAME=SPEC "
                   "(default names a, b, c...). Default: from crossreview.toml, else oracle and noop.")
@click.option("--reviewer", "reviewers", multiple=True, metavar="SPEC",
              help="NAME=SPEC gives agent NAME its reviewer; a bare SPEC gives it to every agent. "
                   "Default: offline agents review with `tests`.")
@click.option("--policy", default=None, metavar="NAME",
              help="Consensus policy: unanimous (default), majority, calibrated, cascade, or a plugin's; "
                   "`crossreview plugins` lists the installed ones.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Policy file of --policy calibrated / cascade, written by `crossreview calibrate` "
                   "(default: config's `calibration`, else <state-dir>/calibration.json).")
@click.option("--jobs", "-j", type=click.IntRange(min=1), default=None,
              help="Task runs at once (the agents of one task always run together).")
@ledger_option
@state_option
@click.option("--no-input", is_flag=True,
              help="Never prompt; escalations wait in the inbox. Default when stdin is not a terminal or CI=true.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout, for machines.")
@budget_options(resume=False)
@sandbox_option
def run(paths, agents, reviewers, policy, calibration, jobs, ledger, state_dir, no_input, json_mode,
        max_cost, max_tokens, max_task_cost, max_task_tokens, sandbox):
    """Run every task under PATHS (default: tasks/).

    \b
    Each agent solves the task in its own git worktree, the task's tests run on
    every result, the agents review each other's diffs, and the policy accepts,
    rejects or escalates to a human. Progress goes to stderr, the results table
    to stdout, everything to the ledger. In a terminal an escalation asks for
    your decision at once (Enter skips: it waits in `crossreview inbox`).

    \b
    Exit codes: 0 every task accepted; 1 one rejected, errored or broken;
    2 usage or input error, nothing ran; 3 one waits for a human; 130 Ctrl-C
    (`crossreview resume RUN_ID` continues it).
    """
    from .plugins import get_plugin_manager
    from .reporting import TerminalReporter, print_errors, print_results_table, result_json, summary_line
    from .runner import AllTasksBroken, RunOptions, UsageError, orphan_warning, run_suite, stdin_is_interactive
    from .tasks import find_task_dirs

    out, err = _consoles(json_mode)
    given = bool(paths)
    paths = list(paths) or [Path("tasks")]
    for p in paths:
        if not p.exists():
            _fail(f"{p} does not exist; give a folder of task folders (each with task.toml)"
                  + _missing_paths_hint(given))
    warning = orphan_warning(state_dir)
    if warning:
        err.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    pm = get_plugin_manager()
    reporter = TerminalReporter(out, err, total=len(find_task_dirs(paths)))
    pm.register(reporter, name="terminalreporter")
    interactive = not no_input and not json_mode and stdin_is_interactive()
    opts = RunOptions(paths=paths, agents=list(agents), reviewers=list(reviewers), policy=policy, jobs=jobs,
                      ledger=ledger, state_dir=state_dir, interactive=interactive, max_cost=max_cost,
                      max_tokens=max_tokens, max_task_cost=max_task_cost, max_task_tokens=max_task_tokens,
                      sandbox=sandbox, calibration=calibration)
    started = time.monotonic()
    _sigterm_is_ctrl_c()
    from .runner import new_run_id

    opts.run_id = new_run_id()
    try:
        outcome = run_suite(opts, pm)
    except UsageError as exc:
        if json_mode and isinstance(exc, AllTasksBroken):  # machines still get their one document
            click.echo(json.dumps({"run": None, "tasks": [], "errors": [_error_json(e) for e in exc.errors]},
                                  indent=2))
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(err, opts.run_id)
    finally:
        pm.unregister(reporter)
    wall = time.monotonic() - started
    if json_mode:
        doc = {"run": outcome.run, "tasks": [result_json(r) for r in outcome.results],
               "errors": [_error_json(e) for e in outcome.errors], "warnings": outcome.warnings}
        click.echo(json.dumps(doc, indent=2))
    else:
        print_errors(err, outcome.errors)
        print_results_table(out, outcome.results)
        out.print(summary_line(outcome.results, outcome.errors, wall), highlight=False)
        for warning in outcome.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
        _footer(out, outcome.run, outcome.results, state_dir, ledger)
    sys.exit(outcome.exit_code)


def _where_flags(state_dir: Path, ledger: Path | None) -> str:
    """The --state-dir/--ledger a hint's command needs to find what this one used (empty for the defaults)."""
    import shlex

    flags = ""
    if Path(state_dir) != Path(".crossreview"):
        flags += f" --state-dir {shlex.quote(str(state_dir))}"
    if ledger is not None:
        flags += f" --ledger {shlex.quote(str(ledger))}"
    return flags


def _footer(out: Console, run_id: str, results, state_dir: Path, ledger: Path | None) -> None:
    """Where to go next: the inbox, the kept branches, the run id."""
    waiting = [r for r in results if r.decision == "escalated"]
    if waiting:
        where = _where_flags(state_dir, ledger)
        out.print(f"{len(waiting)} waiting for a human: `crossreview inbox{where}`, "
                  f"then `crossreview show {waiting[0].escalation}{where}`", highlight=False)
    kept = [r for r in results if r.branch]
    if kept:
        r = kept[0]
        out.print(f"accepted changes are kept on branches crossreview/{run_id}/<task>, e.g. "
                  f"`git --git-dir {state_dir}/repos/{r.task}.git show {r.branch}` (tasks with their own git repository: in it)")
    out.print(f"run {run_id} · ledger {ledger or state_dir / 'ledger.db'}", style="dim")


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@state_option
@click.option("--json", "json_mode", is_flag=True, help="Print the checks as JSON.")
def validate(paths, state_dir, json_mode):
    """Check each task under PATHS: well formed, oracle passes, noop fails."""
    from concurrent.futures import ThreadPoolExecutor

    from .tasks import ConfigError, load_suite, load_suite_config
    from .validate import validate_task
    from .worktrees import ensure_state_dir

    out, err = _consoles(json_mode)
    given = bool(paths)
    paths = list(paths) or [Path("tasks")]
    for p in paths:  # as `run` says it: "no task folders under tasks" would hide that there is no tasks/
        if not p.exists():
            _fail(f"{p} does not exist; give a folder of task folders (each with task.toml)"
                  + _missing_paths_hint(given).replace("crossreview run .", "crossreview validate ."))
    suite = load_suite(paths)
    if not suite.tasks and not suite.errors:
        _fail(f"no task folders (folders with task.toml) under {', '.join(map(str, paths))}"
              + _missing_paths_hint(given).replace("crossreview run .", "crossreview validate ."))
    from .plugins import get_plugin_manager
    from .runner import RunOptions, UsageError, resolve_options

    try:  # what `run` would stop at (exit 2): a broken config, an unknown policy, agent or reviewer
        resolve_options(RunOptions(paths=paths, state_dir=state_dir), get_plugin_manager(), load_suite_config(paths))
        config_error = None
    except (ConfigError, UsageError) as exc:
        config_error = str(exc)
    ensure_state_dir(state_dir)
    with ThreadPoolExecutor(max_workers=4) as pool:
        reports = list(pool.map(lambda t: validate_task(t, state_dir.resolve()), suite.tasks))
    ok = all(r.ok for r in reports) and not suite.errors and config_error is None
    if json_mode:
        click.echo(json.dumps({
            "ok": ok,
            "tasks": [{"task": r.task, "path": str(r.path), "ok": r.ok,
                       "checks": [{"name": c.name, "ok": c.ok, "detail": c.detail} for c in r.checks]} for r in reports],
            "errors": [_error_json(e) for e in suite.errors],
            "config_error": config_error,
        }, indent=2))
    else:
        from rich.markup import escape

        # Task names, checks and errors are text, not markup: "[verifier] command" must print as it is.
        for r in reports:
            out.print(f"[bold]{escape(r.task)}[/bold] " + ("[green]ok[/green]" if r.ok else "[red]FAILED[/red]"),
                      highlight=False)
            for c in r.checks:
                mark = "[green]✓[/green]" if c.ok else "[red]✗[/red]"
                out.print(f"  {mark} {escape(c.name)}" + (f": {escape(c.detail)}" if c.detail else ""), highlight=False)
        for e in suite.errors:
            out.print(f"[bold red]✗[/bold red] {escape(str(e))}", highlight=False)
        broken = len({e.path for e in suite.errors})  # folders, not problems: one folder may have several
        out.print(f"{sum(r.ok for r in reports)}/{len(reports) + broken} tasks valid")
        if config_error:
            out.print(f"[bold red]✗[/bold red] suite config: {escape(config_error)} (`crossreview run` stops at it)",
                      highlight=False)
    sys.exit(EXIT_OK if ok else EXIT_REJECTED)


@main.command()
@ledger_option
@state_option
@click.option("--json", "json_mode", is_flag=True, help="Print the inbox as JSON.")
def inbox(ledger, state_dir, json_mode):
    """Escalations waiting for a human."""
    from rich.table import Table

    default = state_dir / "ledger.db"
    # Nothing has run here yet: nothing waits, which is an answer, not an error.
    # A --ledger that is not there is one (open_ledger says so): likely a typo.
    fresh = ledger is None and not default.exists()
    rows = [] if fresh else open_ledger(state_dir, ledger).inbox()
    if json_mode:
        click.echo(json.dumps({"escalations": [
            {"id": r["id"], "task": r["task"], "run": r["run"], "reason": r["reason"], "created": r["created"]}
            for r in rows]}, indent=2))
        return
    out = _console()
    if fresh:
        out.print(f"inbox empty: nothing has run here yet (no ledger at {default}; `crossreview run` makes it)",
                  highlight=False, markup=False)
        return
    if not rows:
        out.print("inbox empty: no escalation waits for a human")
        return
    from .words import count_phrase, when

    table = Table(title=f"{count_phrase(len(rows), 'escalation')} waiting", title_justify="left")
    for col in ("id", "task", "run", "waiting since", "reason"):
        table.add_column(col)
    for r in rows:
        # when(): converted to UTC and says so; cutting the ISO text would show another zone's clock as UTC.
        table.add_row(r["id"], r["task"], r["run"], when(r["created"]), escape(r["reason"]))
    out.print(table)
    out.print(f"next: crossreview show {rows[0]['id']}{_where_flags(state_dir, ledger)}", highlight=False)


@main.command()
@click.argument("escalation_id")
@ledger_option
@state_option
@click.option("--no-diff", is_flag=True, help="Leave the diffs out.")
@click.option("--json", "json_mode", is_flag=True, help="Print the packet as JSON.")
def show(escalation_id, ledger, state_dir, no_diff, json_mode):
    """The escalation packet: what each agent did, test outcomes, verdicts, where they disagree.

    ESCALATION_ID may be the start of an id that no other id starts with (`crossreview inbox` lists them).
    """
    from .packet import render_packet

    from .runner import NotFound, after_decision, after_decision_phrase, find_escalation

    led = open_ledger(state_dir, ledger)
    try:
        esc = find_escalation(led, escalation_id)  # the whole id, or a unique start of it
    except NotFound as exc:
        _fail(str(exc))
    if not json_mode:
        led.mark_shown(esc["id"])  # the human's decision time starts now

    story = after_decision(led, esc)
    if json_mode:
        click.echo(json.dumps({**esc, "later_escalations": story["escalations"], "outcome": story["outcome"]},
                              indent=2, default=str))
        return
    render_packet(_console(), esc, with_diffs=not no_diff)
    if esc["decided"]:
        from .runner import decision_progress
        from .words import when

        run = led.get_run(esc["run"])
        run_state = Path(run["config"]["state_dir"]) if run else state_dir
        _console().print(f"[dim]already decided: {escape(esc['action'] + ' ' + (esc['pick'] or esc['guide'] or ''))} "
                         f"by {esc['decided_by']} at {when(esc['decided'])}"
                         f"{escape(decision_progress(led, esc, run_state))}[/dim]")
        # An old id (a guided round escalated again): where the story went on, so nobody is stranded here.
        then = after_decision_phrase(story)
        if then:
            _console().print(f"then: {then}", markup=False, highlight=False)
        if story["escalations"] and story["escalations"][-1]["waiting"]:
            _console().print(f"next: crossreview show {story['escalations'][-1]['id']}{_where_flags(state_dir, ledger)}",
                             highlight=False)


@main.command()
@click.argument("escalation_id")
@click.option("--pick", metavar="NAME", help="Accept this agent's candidate.")
@click.option("--reject", is_flag=True, help="Reject every candidate.")
@click.option("--guide", metavar="TEXT", help="Send the agents back with this guidance (a new round).")
@click.option("--by", default=None, help="Who decided (default: your user name).")
@ledger_option
@state_option
@click.option("--json", "json_mode", is_flag=True, help="Print the task run's result as JSON.")
@sandbox_option
def decide(escalation_id, pick, reject, guide, by, ledger, state_dir, json_mode, sandbox):
    """Resume the run parked at ESCALATION_ID with your decision.

    \b
    Give exactly one of --pick NAME (an agent `crossreview show ESCALATION_ID`
    lists), --reject, or --guide TEXT (a new round; it may escalate again).
    ESCALATION_ID may be the start of an id that no other id starts with.
    Each escalation is decided once. Exit code, as `run`'s: 0 accepted,
    1 rejected, or a guided round a budget cap of the run cut short
    (whatever was decided without the work it stopped), 3 the guided round
    escalated again, 2 usage error.
    """
    from .default_plugins.terminal import _user
    from .models import HumanDecision
    from .plugins import get_plugin_manager
    from .reporting import TerminalReporter, result_json, results_table
    from .runner import UsageError, decide_escalation, exit_code_for

    given = [x for x in (pick is not None, reject, guide is not None) if x]
    if len(given) != 1:
        _fail("give exactly one of --pick NAME, --reject, --guide TEXT")
    action = "pick" if pick is not None else "reject" if reject else "guide"
    human = HumanDecision(action=action, pick=pick, guide=guide, by=by or _user())
    # Opened here, not by the library: Ledger() makes a missing file, and a mistyped --ledger
    # would get an empty ledger and "no escalation" instead of "check the path".
    location = open_ledger(state_dir, ledger).path
    out, err = _consoles(json_mode)
    pm = get_plugin_manager()
    # A guided round runs the agents again: show it as `run` does. A pick or a
    # reject runs nothing, and the table below already says how it ended.
    reporter = TerminalReporter(out, err, quiet=action != "guide")
    pm.register(reporter, name="terminalreporter")
    _sigterm_is_ctrl_c()
    try:
        result = decide_escalation(escalation_id, human, state_dir=state_dir, ledger=location, sandbox=sandbox, pm=pm)
    except UsageError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(err, _run_of_escalation(escalation_id, location))
    finally:
        pm.unregister(reporter)
    if json_mode:
        click.echo(json.dumps(result_json(result), indent=2))
    else:
        _console().print(results_table([result]))
    # The rule every face follows (runner.exit_code_for): a guided round the cap cut short is not
    # "accepted" (0), whatever was decided on what the cap left.
    sys.exit(exit_code_for([result]))


@main.command()
@click.argument("run_id")
@ledger_option
@state_option
@click.option("--no-input", is_flag=True, help="Never prompt.")
@click.option("--json", "json_mode", is_flag=True, help="Print one JSON document on stdout.")
@budget_options(resume=True)
@sandbox_option
def resume(run_id, ledger, state_dir, no_input, json_mode, max_cost, max_tokens, max_task_cost, max_task_tokens,
           sandbox):
    """Finish RUN_ID after a crash or kill, keeping every finished agent's work.

    Also continues a run stopped by its budget: with a higher --max-cost (or --max-tokens, ...) the
    task runs "not started: budget exhausted" run; `--max-cost none` (and so on) lifts that cap
    altogether; without one, the run's recorded caps hold.
    """
    from .plugins import get_plugin_manager
    from .reporting import TerminalReporter, print_errors, print_results_table, result_json, summary_line
    from .runner import UsageError, resume_run, stdin_is_interactive

    # As decide: a mistyped --ledger is told so, and no empty ledger is made there.
    location = open_ledger(state_dir, ledger).path
    out, err = _consoles(json_mode)
    pm = get_plugin_manager()
    reporter = TerminalReporter(out, err)
    pm.register(reporter, name="terminalreporter")
    started = time.monotonic()
    _sigterm_is_ctrl_c()
    try:
        outcome = resume_run(run_id, state_dir=state_dir, ledger=location, sandbox=sandbox,
                             interactive=not no_input and not json_mode and stdin_is_interactive(), pm=pm,
                             on_plan=lambda kept, todo: reporter.resuming(run_id, kept, todo),
                             limits={"max_cost": max_cost, "max_tokens": max_tokens,
                                     "max_task_cost": max_task_cost, "max_task_tokens": max_task_tokens})
    except UsageError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(err, run_id)
    finally:
        pm.unregister(reporter)
    if json_mode:
        click.echo(json.dumps({"run": outcome.run, "tasks": [result_json(r) for r in outcome.results],
                               "errors": [_error_json(e) for e in outcome.errors], "warnings": outcome.warnings},
                              indent=2))
    else:
        print_errors(err, outcome.errors)
        print_results_table(out, outcome.results)
        out.print(summary_line(outcome.results, outcome.errors, time.monotonic() - started,
                               wall_of="this resume" if outcome.kept else ""), highlight=False)
        for warning in outcome.warnings:
            err.print(f"[yellow]warning:[/yellow] {escape(warning)}", highlight=False)
        _footer(out, outcome.run, outcome.results, state_dir, ledger)
    sys.exit(outcome.exit_code)


@main.command()
@ledger_option
@state_option
@click.option("--json", "json_mode", is_flag=True, help="Print the runs as JSON.")
def runs(ledger, state_dir, json_mode):
    """Every suite run in the ledger, newest first, with its decisions and the task runs a budget cap stopped."""
    from rich.table import Table

    from .runner import run_is_live, stopped_from_rows

    led = open_ledger(state_dir, ledger)
    rows = []
    for r in led.runs():
        counts: dict[str, int] = {}
        stopped = 0
        for tr in led.task_runs(r["id"]):
            key = tr["decision"] or tr["status"]
            counts[key] = counts.get(key, 0) + 1
            # Read from the recorded errors, as run/resume/stats read it, so older runs show it too.
            stopped += stopped_from_rows(led, tr) is not None
        if r["status"] == "running" and not run_is_live((r.get("config") or {}).get("state_dir") or state_dir, r["id"]):
            r = {**r, "status": "interrupted"}  # killed (kill -9, a reboot): no process holds it any more
        rows.append({**r, "decisions": counts, "stopped_by_cap": stopped})
    if json_mode:
        click.echo(json.dumps({"runs": rows}, indent=2))
        return
    from .words import count_phrase, when

    table = Table(title="runs", title_justify="left")
    for col in ("run", "started", "status", "task runs"):
        table.add_column(col)
    for r in rows:
        # when(): converted to UTC and says so, as inbox shows it (JSON above keeps ISO).
        # "finished" alone would read as a run that did all its work; its exit code was 1 (exit_code_for).
        status = r["status"] + (f"\n{count_phrase(r['stopped_by_cap'], 'task run')} stopped by a budget cap"
                                if r["stopped_by_cap"] else "")
        table.add_row(r["id"], when(r["started"]) if r["started"] else "", status,
                      ", ".join(f"{n} {k}" for k, n in sorted(r["decisions"].items())) or "-")
    _console().print(table)


@main.command()
@ledger_option
@state_option
def gc(ledger, state_dir):
    """Remove worktrees and branches left behind by killed processes."""
    from .gc import collect
    from .words import count_phrase

    if not state_dir.exists():
        Console().print("nothing to collect: no state directory")
        return
    trees, branches, processes = collect(state_dir.resolve(), ledger)
    stopped = f"; stopped {count_phrase(processes, 'process', 'processes')} a killed run left running" if processes else ""
    Console().print(f"removed {count_phrase(trees, 'worktree')} and {count_phrase(branches, 'branch', 'branches')}{stopped}")


@main.command()
@click.option("--base", default=None, metavar="REF",
              help="The branch or commit the pull request goes into. In a pull_request workflow: the event's base.")
@click.option("--head", default=None, metavar="REF",
              help="The pull request's commit (default: the event's head, else HEAD).")
@click.option("--attempts", type=click.IntRange(min=0), default=None, metavar="N",
              help="N of the agents also solve the task from the base; their attempts are reviewed alongside "
                   "(default: [gate] attempts in the base's config, else 0).")
@click.option("--task", "task", default=None, metavar="DIR",
              help="A task folder (relative to the repository root, read from the base) the pull request solves. "
                   "Default: [gate] task, else (with [gate] task_from_body) a `crossreview-task: DIR` line in the "
                   "PR body, else the PR's "
                   "title and body with the base's [gate] verifier.")
@click.option("--title", default=None, help="The pull request's title (default: from the event).")
@click.option("--body", default=None, help="The pull request's body (default: from the event).")
@click.option("--repo", type=click.Path(path_type=Path, file_okay=False), default=Path("."), show_default=True,
              help="The repository's checkout.")
@click.option("--record-human", is_flag=True,
              help="Instead of judging: record a human's decision (a review or merge/close event) on an "
                   "escalated pull request in the ledger.")
@click.option("--report", "report_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Also write the report (as --json prints it) to FILE, e.g. for a fork's workflow_run job.")
@click.option("--publish", "publish_file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Instead of judging: post a saved report's comment and label (a workflow_run job for forks).")
@click.option("--expect-head", default=None, metavar="SHA",
              help="With --publish: the head the pull request must have (github.event.workflow_run.head_sha).")
@click.option("--label", default=None, help="With --publish: the label to set (default crossreview:needs-human).")
@ledger_option
@state_option
@click.option("--json", "json_mode", is_flag=True, help="Print the gate's report as one JSON document.")
@sandbox_option
def gate(base, head, attempts, task, title, body, repo, record_human, report_file, publish_file, expect_head, label,
         ledger, state_dir, json_mode, sandbox):
    """CI: judge the pull request base..head; accept when the agents agree, ask a human when they split.

    \b
    The diff base..head is one candidate, `pr`. The agents configured in the
    BASE commit's crossreview.toml (or [tool.crossreview]) review it with the
    outcome of the base's [gate] verifier run on head; the policy and the
    task come from the base too, so a pull request cannot loosen its own
    gate. Exit codes: 0 accept, 1 reject (or a budget cap in the base's
    config cut the review short: never accepted then), 3 a human must
    decide, 2 usage.

    \b
    Inside GitHub Actions it also writes the step summary, the outputs
    decision / winner / escalation, annotations for concerns that name a
    file and line, one pull request comment (updated on every push), and the
    [gate] label (default crossreview:needs-human) while a human is needed.

    \b
    crossreview gate --base origin/main --head HEAD
    crossreview gate --record-human        # on pull_request_review / closed events
    crossreview gate --publish report.json --expect-head SHA   # forks: workflow_run
    """
    import os

    from .runner import UsageError

    out, err = _consoles(json_mode)
    if publish_file is not None:
        from .gate import publish_saved

        try:
            posted = publish_saved(publish_file, expect_head, label, os.environ)
        except UsageError as exc:
            _fail(str(exc))
        for line in posted.github:
            out.print(f"github: {line}", highlight=False, markup=False)
        sys.exit(EXIT_OK)
    if record_human:
        from .gate import record_human as record

        try:
            done = record(ledger or state_dir / "ledger.db", os.environ)
        except UsageError as exc:
            _fail(str(exc))
        if json_mode:
            click.echo(json.dumps({"recorded": done.recorded, "escalation": done.escalation, "message": done.message}))
        else:
            out.print(done.message, highlight=False)
        sys.exit(EXIT_OK)
    from .gate import GateOptions, run_gate

    opts = GateOptions(base=base, head=head, repo=repo, attempts=attempts, task=task, title=title, body=body,
                       state_dir=state_dir, ledger=ledger, sandbox=sandbox, environ=dict(os.environ),
                       commands=sys.stderr if json_mode else sys.stdout,
                       progress=None if json_mode else
                       (lambda line: err.print(f"crossreview gate: {line}", highlight=False, markup=False)))
    _sigterm_is_ctrl_c()
    try:
        report = run_gate(opts)
    except UsageError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        _interrupted(err)
    if report_file is not None:
        report_file.parent.mkdir(parents=True, exist_ok=True)
        report_file.write_text(report.model_dump_json(indent=2))
    if json_mode:
        click.echo(report.model_dump_json(indent=2))
    else:
        _print_gate(out, report)
    sys.exit(report.exit_code)


def _print_gate(out: Console, report) -> None:
    from rich.table import Table

    from .words import files_phrase

    style = {"accepted": "green", "rejected": "red", "escalated": "magenta"}.get(report.decision, "yellow")
    out.print(f"[bold {style}]{report.decision}[/bold {style}]: ", end="")
    out.print(report.reason, highlight=False, markup=False)
    table = Table(show_header=True)
    for col in ("candidate", "tests", "change", "reviews"):
        table.add_column(col)
    for c in report.candidates:
        on_it = [v for v in report.verdicts if v["candidate"] == c["agent"]]
        tests = f"{c['tests_passed']}/{c['tests_total']}" if c["status"] == "ok" else c["status"]
        if c.get("tampering"):  # as the comment's table says it: these counts are not to be trusted
            tests += " ⚠ may fake its results"
        table.add_row(c["agent"], tests, f"{files_phrase(len(c['files']))} +{c['lines_added']} -{c['lines_removed']}",
                      ", ".join(f"{v['reviewer']}: {v['verdict']}" for v in on_it) or "-")
    if report.candidates:  # none when a review settled or kept an earlier decision
        out.print(table)
    for line in report.github:
        out.print(f"github: {line}", highlight=False, markup=False)
    where = f" · escalation {report.escalation} (`crossreview show {report.escalation}`)" if report.escalation else ""
    out.print(f"run {report.run} · base config {report.config_source or '(none: defaults)'}{where}", style="dim")


@main.command("plugins")
@click.option("--json", "json_mode", is_flag=True, help="Print as JSON.")
def plugins_cmd(json_mode):
    """Installed plugins and the agents, reviewers and policies they add."""
    from . import plugins as plugins_mod

    pm = plugins_mod.get_plugin_manager()
    for m in getattr(pm, "misdeclared", []):
        click.echo(f"warning: {m}", err=True)  # stderr: --json stays one document
    sections = {
        "agents": plugins_mod.agent_kinds(pm),
        "reviewers": plugins_mod.reviewer_kinds(pm),
        "policies": plugins_mod.policies(pm),
    }
    if json_mode:
        click.echo(json.dumps({
            "plugins": plugins_mod.plugin_names(pm),
            **{k: [{"name": r.name, "plugin": r.plugin, "help": r.help} for r in v.values()] for k, v in sections.items()},
        }, indent=2))
        return
    out = _console()
    out.print("[bold]plugins[/bold]: " + ", ".join(plugins_mod.plugin_names(pm)))
    for title, regs in sections.items():
        out.print(f"[bold]{title}[/bold]")
        for r in regs.values():
            out.print(f"  {r.name:<12} {r.help}  [dim]({r.plugin})[/dim]", highlight=False)


from .ledger_cli import register as _register_ledger; _register_ledger(main)  # noqa: E402,E702 - stats, report, export


# An installed plugin that cannot be used (README, "Writing a plugin"): the commands that run
# agents, reviewers, policies or hooks stop at it (exit 2, _Main), as a run without the plugin's
# kinds and hooks would not be the run the user asked for. The commands that only read or tidy
# crossreview's own state go on and warn: a broken plugin must not hide the escalations waiting
# for a human, nor what the ledger holds. Every command is in exactly one of the two.
NEEDS_PLUGINS = ("run", "validate", "decide", "resume", "gate", "plugins")
WORKS_WITHOUT_PLUGINS = ("inbox", "show", "runs", "gc", "stats", "report", "export", "merge", "calibrate")


def _warn_if_a_plugin_is_broken(name: str, callback):
    """``callback`` of command ``name``, after one warning line on stderr if an installed plugin cannot be loaded."""
    import functools

    @functools.wraps(callback)
    def wrapper(*args, **kwargs):
        from .plugins import PluginError, get_plugin_manager

        try:
            get_plugin_manager()
        except PluginError as exc:
            # One line (click, not rich, which would wrap it), on stderr: stdout may be --json.
            stopped = ", ".join(NEEDS_PLUGINS[:-1]) + " and " + NEEDS_PLUGINS[-1]
            click.echo(f"warning: {exc}. Until then crossreview {stopped} stop at it (exit 2); "
                       f"{name} needs no plugin and goes on", err=True)
        return callback(*args, **kwargs)

    return wrapper


for _name in WORKS_WITHOUT_PLUGINS:
    main.commands[_name].callback = _warn_if_a_plugin_is_broken(_name, main.commands[_name].callback)


if __name__ == "__main__":  # pragma: no cover
    main()
