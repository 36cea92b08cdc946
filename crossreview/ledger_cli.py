"""`crossreview stats`, `report` and `export`: the ledger's figures on the command line.

Registered on the main group by ``register(main)`` (the last lines of cli.py).
Only click is imported at module level: the ledger, rich and the report are
imported inside the commands, so `crossreview --help` stays fast.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import click

_URL = re.compile(r"^(postgres|postgresql)://", re.IGNORECASE)


class LedgerLocation(click.ParamType):
    """A ledger file path, or a postgresql:// URL (kept whole: pathlib would squeeze its '//')."""

    name = "PATH|URL"

    def convert(self, value, param, ctx):
        if value is None or not isinstance(value, str):
            return value
        if _URL.match(value):
            from .ledger.db import LedgerURL

            return LedgerURL(value)
        return Path(value)


LEDGER_LOCATION = LedgerLocation()


def parse_since(value: str) -> datetime:
    """'2026-03-01', an ISO date-time (UTC unless it says otherwise), or '7d' / '2w' / '12h' ago."""
    text = value.strip()
    m = re.fullmatch(r"(\d+)\s*([hdw])", text)
    if m:
        n, unit = int(m.group(1)), m.group(2)
        delta = {"h": timedelta(hours=n), "d": timedelta(days=n), "w": timedelta(weeks=n)}[unit]
        return datetime.now(timezone.utc) - delta
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{value!r}: give a date (2026-03-01), a date-time (2026-03-01T09:00), "
                                 f"or an age (7d, 2w, 12h)") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


class Since(click.ParamType):
    name = "DATE"

    def convert(self, value, param, ctx):
        if isinstance(value, datetime):
            return value
        try:
            return parse_since(value)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


def _fail(message: str, code: int = 2) -> None:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True).print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False)
    sys.exit(code)


def open_ledger(state_dir: Path, ledger):
    """The ledger a command reads: --ledger (file or URL), else <state-dir>/ledger.db.

    Every command that reads an existing ledger opens it here (inbox, show, decide, resume, runs,
    stats, report, export, calibrate), so a missing one is told the same way: exit 2, and for a --ledger path
    the user typed, that it may be a typo and how to make a ledger there.
    """
    import shlex

    from .ledger import Ledger, LedgerError
    from .ledger.db import LedgerURL

    location = ledger if ledger is not None else state_dir / "ledger.db"
    if not isinstance(location, LedgerURL) and not Path(location).exists():
        if ledger is not None:  # a path the user typed: more likely a typo than a place nothing ran yet
            _fail(f"no ledger at {location}: check the --ledger path (a typo?); "
                  f"`crossreview run --ledger {shlex.quote(str(location))}` makes a ledger there")
        _fail(f"no ledger at {location}: run `crossreview run` first (or pass --ledger)")
    try:
        return Ledger(location)
    except LedgerError as exc:
        _fail(str(exc))


def _console():
    import os

    from rich.console import Console

    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=160)
    return console


_ledger_opt = click.option("--ledger", type=LEDGER_LOCATION, default=None,
                           help="Ledger file or postgresql:// URL (default: <state-dir>/ledger.db).")
_state_opt = click.option("--state-dir", type=click.Path(path_type=Path), default=Path(".crossreview"),
                          show_default=True, help="Where the default ledger lives.")
_calibration_opt = click.option(
    "--calibration", type=click.Path(path_type=Path), default=None, metavar="FILE",
    help="Show this policy file's certificate and drift (default: <state-dir>/calibration.json, if there).")
_since_opt = click.option("--since", type=Since(), default=None,
                          help="Only task runs started since DATE (2026-03-01, an ISO date-time, or 7d / 2w / 12h).")
_suite_opt = click.option("--suite", default=None, metavar="S",
                          help="Only runs of suite S (the suite folder's name, or its full path).")


def _figures(state_dir, ledger, since, suite, calibration=None, with_calibration=False):
    from .ledger import LedgerError
    from .ledger.figures import compute

    led = open_ledger(state_dir, ledger)
    cal, path = _calibration_file(state_dir, calibration) if with_calibration else (None, None)
    try:
        return led, compute(led, since=since, suite=suite, calibration=cal, calibration_path=path)
    except LedgerError as exc:
        _fail(str(exc))


def _calibration_file(state_dir: Path, given: Path | None):
    """The policy file stats shows: --calibration (must exist), else <state-dir>/calibration.json if there."""
    from .ledger.calibration import CalibrationError, default_path, load_calibration

    path = given or default_path(state_dir)
    if given is None and not path.exists():
        return None, None
    try:
        return load_calibration(path), str(path)
    except CalibrationError as exc:
        _fail(str(exc))


@click.command()
@_since_opt
@_suite_opt
@_ledger_opt
@_state_opt
@_calibration_opt
@click.option("--json", "json_mode", is_flag=True, help="Print the figures as one JSON document.")
def stats(since, suite, ledger, state_dir, calibration, json_mode):
    """The ledger's figures: how often a human stepped in, for how long, at what cost.

    \b
    Intervention rate (overall, per suite, tag, week), human minutes per
    escalation, autonomy between interventions, reviewer agreement (Fleiss'
    and Cohen's kappa), per-agent approval and accuracy, tokens and money per
    call / agent / phase, cost multiplier against one agent alone, parallel
    efficiency, decision quality against holdout tests, agents started per
    task run (cascade) and, with a calibration file, its certificate and a
    drift warning. Definitions: the README's section on the ledger.
    """
    import json

    _, figures = _figures(state_dir, ledger, since, suite, calibration, with_calibration=True)
    if json_mode:
        click.echo(json.dumps(figures, indent=2))
        return
    from .ledger.render import print_stats

    print_stats(_console(), figures)


@click.command()
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("crossreview-report.html"),
              show_default=True, help="The HTML file to write.")
@_since_opt
@_suite_opt
@_ledger_opt
@_state_opt
@_calibration_opt
def report(output, since, suite, ledger, state_dir, calibration):
    """One self-contained HTML file with the figures and plots (opens offline, no server)."""
    from .ledger.report import write_report
    from .words import count_phrase

    led, figures = _figures(state_dir, ledger, since, suite, calibration, with_calibration=True)
    write_report(led, figures, output)
    counts = figures["counts"]
    click.echo(f"wrote {output} ({count_phrase(counts['task_runs'], 'task run')}, "
               f"{count_phrase(counts['escalations'], 'escalation')})")


@click.command()
@click.option("--format", "fmt", type=click.Choice(["jsonl", "csv"]), default="jsonl", show_default=True)
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help="File to write (default: standard output).")
@_since_opt
@_suite_opt
@_ledger_opt
@_state_opt
def export(fmt, output, since, suite, ledger, state_dir):
    """Every task run as one row (JSON lines or CSV), for pandas and friends.

    \b
    pandas.read_json("runs.jsonl", lines=True)  /  pandas.read_csv("runs.csv")
    """
    from .ledger import LedgerError
    from .ledger.export import task_run_rows, write_csv, write_jsonl
    from .words import count_phrase

    led = open_ledger(state_dir, ledger)
    try:
        rows = task_run_rows(led, since=since, suite=suite)
    except LedgerError as exc:
        _fail(str(exc))
    writer = write_csv if fmt == "csv" else write_jsonl
    if output is None:
        writer(rows, sys.stdout)
        return
    with open(output, "w", newline="", encoding="utf-8") as fh:
        writer(rows, fh)
    click.echo(f"wrote {count_phrase(len(rows), 'task run')} to {output}", err=True)


@click.command()
@click.argument("sources", nargs=-1, required=True, type=LEDGER_LOCATION)
@_ledger_opt
@_state_opt
def merge(sources, ledger, state_dir):
    """Fold other ledgers (SOURCES: files or URLs) into this one.

    Each CI run of `crossreview gate` keeps its own ledger (the example
    workflow uploads it as an artifact); download them and merge them into
    one, and `stats` covers every pull request. Merging the same ledger twice
    adds nothing. An escalation the gate left open and `gate --record-human`
    decided in another ledger ends decided.

    \b
    gh run download --pattern 'crossreview-ledger-*' --dir ledgers
    crossreview merge ledgers/*/ledger.db --ledger team.db
    """
    from .ledger import Ledger, LedgerError
    from .ledger.db import LedgerURL
    import tempfile

    from .ledger.merge import merge_into, open_source
    from .words import count_phrase

    dest = ledger if ledger is not None else state_dir / "ledger.db"
    for src in sources:
        if not isinstance(src, LedgerURL) and not Path(src).is_file():
            _fail(f"{src}: no such ledger file; give the ledger.db files to fold in")
        if not isinstance(src, LedgerURL) and not isinstance(dest, LedgerURL) and Path(src).resolve() == Path(dest).resolve():
            _fail(f"{src} is the ledger being merged into; give the others")  # before anything is merged
    try:
        target = Ledger(dest)
        with tempfile.TemporaryDirectory(prefix="crossreview-merge-") as scratch:
            for src in sources:
                got = merge_into(target, open_source(src, scratch))
                click.echo(f"{src}: +{count_phrase(got.runs, 'run')}, +{count_phrase(got.task_runs, 'task run')}, "
                           f"+{count_phrase(got.escalations, 'escalation')}, "
                           f"{count_phrase(got.decisions, 'decision')} filled in")
    except LedgerError as exc:
        _fail(str(exc))
    click.echo(f"merged {count_phrase(len(sources), 'ledger')} into {dest}")


def _accept_urls(group: click.Group) -> None:
    """Let every command's --ledger take a postgresql:// URL, not only a file.

    cli.py declares --ledger as a click.Path, which squeezes the URL's '//';
    this swaps in a type that keeps a URL whole (and returns the same Path for
    a file as before).
    """
    for cmd in group.commands.values():
        for p in cmd.params:
            if p.name == "ledger" and isinstance(p.type, click.Path):
                p.type = LEDGER_LOCATION
                p.metavar = p.metavar or "PATH|URL"
                if p.help:
                    p.help = p.help.replace("Ledger file", "Ledger file or postgresql:// URL")


def register(group: click.Group) -> None:
    """Add stats, report and export to the `crossreview` group."""
    from .calibrate_cli import calibrate

    for cmd in (stats, report, export, merge, calibrate):
        group.add_command(cmd)
    _accept_urls(group)
