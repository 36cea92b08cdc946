"""stats / report / export on the command line: help without heavy imports, ledger locations."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import heavy_imports
from crossreview.ledger.db import LedgerURL, is_url, parse_location

@pytest.mark.parametrize("args", [["stats", "--help"], ["report", "--help"], ["export", "--help"], ["--help"]])
def test_help_imports_nothing_heavy(args):
    out = heavy_imports(args)
    assert "HEAVY=\n" in out.stdout, out.stdout + out.stderr
    assert "Usage:" in out.stdout


def test_stats_reads_no_heavy_module(tmp_path):
    from crossreview.ledger import Ledger

    Ledger(tmp_path / "l.db")
    out = heavy_imports(["stats", "--ledger", str(tmp_path / "l.db")])
    assert "HEAVY=\n" in out.stdout, out.stdout + out.stderr


def test_every_ledger_option_takes_a_url():
    from click.testing import CliRunner

    from crossreview.cli import main

    for command in ("run", "inbox", "show", "decide", "resume", "gc", "stats", "report", "export"):
        res = CliRunner().invoke(main, [command, "--help"])
        assert "postgresql://" in res.output, command


@pytest.mark.parametrize("given, url", [
    ("postgresql://u:p@h:5432/db", "postgresql://u:p@h:5432/db"),
    ("postgres://u@/db?host=/tmp/s", "postgres://u@/db?host=/tmp/s"),
    # what pathlib makes of a URL (click.Path, or a suite folder joined with it)
    (Path("postgresql://u@h/db"), "postgresql://u@h/db"),
    (Path("/work/suite") / "postgresql://u@/db?host=/tmp/s", "postgresql://u@/db?host=/tmp/s"),
])
def test_urls_are_recognised_even_after_pathlib(given, url):
    loc = parse_location(given)
    assert isinstance(loc, LedgerURL) and loc.url == url and is_url(given)


def test_paths_stay_paths(tmp_path):
    for given in (tmp_path / "ledger.db", "ledger.db", "dir/postgres.db"):
        assert parse_location(given) == Path(given) and not is_url(given)


@pytest.mark.slow
def test_export_to_stdout_and_report_default_name(cli, tmp_path):
    from crossreview.ledger import Ledger

    Ledger(tmp_path / ".crossreview" / "ledger.db")
    res = cli("export")
    assert res.returncode == 0 and res.stdout == ""
    res = cli("export", "--format", "csv")
    assert res.stdout.startswith("run,suite,task_run,task,tags,")
    res = cli("report")
    assert res.returncode == 0 and (tmp_path / "crossreview-report.html").exists()
    res = cli("stats")
    assert res.returncode == 0 and "no task runs in the ledger" in res.stdout
