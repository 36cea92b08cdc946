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


@pytest.mark.slow
@pytest.mark.parametrize("command", ["stats", "report", "export"])
def test_a_ledger_path_that_is_not_there_is_a_usage_error_that_says_it_may_be_a_typo(cli, tmp_path, command):
    """As inbox says it: a --ledger the user typed is likely a typo; without --ledger, nothing has run here yet."""
    res = cli(command, "--ledger", "team/ledgr.db")
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and res.stdout == "", res.stdout + res.stderr
    assert "no ledger at team/ledgr.db: check the --ledger path (a typo?)" in said
    assert "`crossreview run --ledger team/ledgr.db` makes a ledger there" in said
    res = cli(command)
    said = " ".join(res.stderr.split())
    assert res.returncode == 2 and "no ledger at .crossreview/ledger.db: run `crossreview run` first" in said
    assert "typo" not in said
    # Nothing written: no ledger at the mistyped path, no report, no export file.
    assert sorted(p.name for p in tmp_path.iterdir()) == []


HOSTILE_TAGS = [
    ["a;b"], ["a", "b"], [], [""], ["c,d", 'say "hi"', "it's"], ["line\nbreak", "cr\rhere", "tab\there"],
    ["back\\slash;", '["not", "a list"]', "naïve ☃"],
]


@pytest.mark.slow
def test_export_csv_keeps_any_tag_text(cli, tmp_path):
    """Tags with the separator, commas, quotes and line breaks: each row reads back exactly."""
    import csv
    import json

    from crossreview.ledger import Ledger

    led = Ledger(tmp_path / ".crossreview" / "ledger.db")
    led.start_run("r-1", {"suite_dir": str(tmp_path / "odd\rsuite")})  # a lone CR in another text cell too
    for i, tags in enumerate(HOSTILE_TAGS):
        led.start_task_run(f"r-1/t{i}", "r-1", f"t{i}", f"tasks/t{i}", tags, {})
    res = cli("export", "--format", "csv", "-o", "runs.csv")  # a file: the bytes as written, no newline translation
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "runs.csv", newline="", encoding="utf-8") as fh:
        table = list(csv.DictReader(fh))
    assert [r["task"] for r in table] == [f"t{i}" for i in range(len(HOSTILE_TAGS))]
    assert [json.loads(r["tags"]) for r in table] == HOSTILE_TAGS
    assert all(r["suite"] == "odd\rsuite" for r in table)
    assert all(None not in r and r["status"] == "running" for r in table)  # no cell spilled into another


def _killed_run(path: Path):
    """A ledger holding suite run r-1, killed (kill -9) while its one task run was running."""
    from crossreview.ledger import Ledger

    led = Ledger(path)
    led.start_run("r-1", {"suite_dir": "tasks"})
    led.start_task_run("r-1/add", "r-1", "add", "tasks/add", [], {})
    return led


def test_merge_brings_a_killed_run_as_far_as_its_resumed_copy_got(tmp_path):
    import shutil

    from crossreview.ledger import Ledger
    from crossreview.ledger.merge import merge_into

    killed = _killed_run(tmp_path / "killed.db")
    shutil.copy(tmp_path / "killed.db", tmp_path / "resumed.db")
    resumed = Ledger(tmp_path / "resumed.db")
    with resumed.connect() as db:  # `resume` finished it on another machine
        db.execute("UPDATE task_runs SET status='done', decision='accepted', finished=started")
    resumed.set_run_status("r-1", "finished")
    merge_into(killed, resumed)
    assert [(r["status"], r["finished"] is not None) for r in killed.runs()] == [("finished", True)]
    merge_into(resumed, _killed_run(tmp_path / "killed-again.db"))  # and never back
    assert [r["status"] for r in resumed.runs()] == ["finished"]


def test_merge_ends_a_waiting_run_once_its_escalations_are_decided_elsewhere(tmp_path):
    import shutil

    from crossreview.ledger import Ledger
    from crossreview.ledger.merge import merge_into

    parked = _killed_run(tmp_path / "parked.db")
    with parked.connect() as db:
        db.execute("UPDATE task_runs SET status='parked', decision='escalated'")
        db.insert("escalations", {"id": "e-1", "task_run": "r-1/add", "run": "r-1", "task": "add", "round": 0,
                                  "reason": "split", "created": "2026-01-01T00:00:00+00:00", "packet": "{}"})
    parked.set_run_status("r-1", "waiting")
    shutil.copy(tmp_path / "parked.db", tmp_path / "decided.db")
    decided = Ledger(tmp_path / "decided.db")
    with decided.connect() as db:  # `gate --record-human` in another CI job: only the escalation changed
        db.execute("UPDATE escalations SET decided='2026-01-01T01:00:00+00:00', decided_by='ada', action='reject'")
    merge_into(parked, decided)
    assert parked.get_task_run("r-1/add")["status"] == "done"
    assert [r["status"] for r in parked.runs()] == ["finished"]


def test_merging_a_ledger_into_itself_is_refused_before_any_other_source_is_merged(cli, tmp_path):
    from crossreview.ledger import Ledger

    _killed_run(tmp_path / "a.db")
    Ledger(tmp_path / "team.db")
    res = cli("merge", "a.db", "team.db", "--ledger", "team.db")
    assert res.returncode == 2 and "team.db is the ledger being merged into" in res.stderr
    assert Ledger(tmp_path / "team.db").runs() == []  # all or nothing: a.db was not half folded in


@pytest.mark.slow
def test_export_human_minutes_are_null_when_nobody_timed_the_decision(cli, suite, tmp_path):
    """An escalation decided unseen, or still waiting, has no human minutes: null, as `stats` says, not 0."""
    import json

    from conftest import approve_all_reviewer, make_task

    make_task(suite, "seen")
    make_task(suite, "unseen")
    make_task(suite, "waiting")
    reviewer = approve_all_reviewer(tmp_path / "approve.py")
    # noop fails the tests but the reviewer approves it: every task escalates.
    res = cli("run", str(suite), "--agent", "noop", "--agent", "noop", "--reviewer", reviewer, "--json")
    assert res.returncode == 3, res.stderr
    esc = {t["task"]: t["escalation"] for t in res.json()["tasks"]}
    assert cli("show", esc["seen"], "--no-diff").returncode == 0
    assert cli("decide", esc["seen"], "--pick", "a").returncode == 0
    assert cli("decide", esc["unseen"], "--pick", "a").returncode == 0

    rows = {r["task"]: r for r in map(json.loads, cli("export").stdout.splitlines())}
    assert rows["seen"]["human_minutes"] is not None and rows["seen"]["human_minutes"] >= 0
    assert rows["unseen"]["human_minutes"] is None
    assert rows["waiting"]["human_minutes"] is None
    stats = cli("stats", "--json").json()["human_time"]
    assert (stats["decided"], stats["unseen"], stats["waiting"]) == (1, 1, 1)


def test_per_agent_figures_say_which_agent_each_name_stood_for(cli, suite, tmp_path):
    """Agents are named a, b, c... unless named, so `stats` and `report` showed approval per "a" and
    "b" with no word of which model that was: a researcher comparing three models could not read the
    per-model figures. A name that meant another agent in another run shows both: its figures mix them."""
    from conftest import make_task

    make_task(suite)
    first = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    assert first.returncode == 0, first.stderr
    stats = cli("stats", "--json").json()
    by = {a["agent"]: a for a in stats["agents"]}
    assert (by["a"]["specs"], by["b"]["specs"]) == (["oracle"], ["noop"])
    assert by["a"]["reviewer_specs"] == ["tests"]
    text = cli("stats").stdout
    assert "oracle" in text and "noop" in text
    res = cli("report", "-o", str(tmp_path / "r.html"))
    assert res.returncode == 0, res.stderr
    assert "<td>a</td><td>oracle (reviews with tests)</td>" in (tmp_path / "r.html").read_text()

    again = cli("run", str(suite), "--agent", "noop", "--agent", "oracle", "--json")
    assert again.returncode == 0, again.stderr
    by = {a["agent"]: a for a in cli("stats", "--json").json()["agents"]}
    assert by["a"]["specs"] == ["noop", "oracle"]
    assert "mixed runs" in cli("stats").stdout
