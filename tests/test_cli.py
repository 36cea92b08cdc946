"""The command line: help without heavy imports, validate, gc."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import heavy_imports, EXAMPLE_TASKS, make_task

@pytest.mark.parametrize("args", [["--help"], ["run", "--help"], ["plugins"], ["decide", "--help"]])
def test_help_and_plugins_import_no_heavy_modules(args):
    out = heavy_imports(args).stdout
    assert "HEAVY=\n" in out, out


def test_help_explains_the_commands(cli):
    res = cli("--help")
    for word in ("run", "validate", "inbox", "show", "decide", "resume", "gc", "plugins", "Exit codes"):
        assert word in res.stdout
    res = cli("run", "--help")
    assert "NAME=SPEC" in res.stdout and "--no-input" in res.stdout and "--jobs" in res.stdout
    # A newcomer reads `run --help` to learn what a run does and why it exited 1 on the examples.
    text = " ".join(res.stdout.split())
    assert "Exit codes: 0 every task accepted; 1 one rejected" in text and "crossreview resume" in text
    # --policy takes a name, not free text: the help says which, and where to find a plugin's.
    assert "--policy NAME" in text and "TEXT" not in text.split("--policy")[1].split("--")[0]
    for name in ("unanimous", "majority", "calibrated", "cascade", "`crossreview plugins` lists"):
        assert name in text.split("--policy NAME")[1].split("--calibration")[0], name
    text = " ".join(cli("decide", "--help").stdout.split())
    assert "exactly one of --pick NAME" in text and "3 the guided round escalated again" in text


def test_help_example_picks_an_agent_the_example_suite_has(cli):
    # The "Start here" lines are a walk through `crossreview run tasks/`: its --pick must name
    # an agent that suite's escalation offers, or the first decision a newcomer types fails.
    import tomllib

    suite = tomllib.loads((EXAMPLE_TASKS / "crossreview.toml").read_text())
    names = {spec.split("=", 1)[0] for spec in suite["agents"]}
    [picked] = re.findall(r"decide ID --pick (\S+)", cli("--help").stdout)
    assert picked in names, (picked, names)


def test_validate_example_suite(cli, tmp_path):
    shutil.copytree(EXAMPLE_TASKS, tmp_path / "tasks")
    res = cli("validate", "tasks", "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    doc = res.json()
    assert doc["ok"] and len(doc["tasks"]) == 5 and doc["errors"] == []
    for t in doc["tasks"]:
        names = {c["name"]: c["ok"] for c in t["checks"]}
        assert names["oracle passes the tests"] and names["noop fails the tests"]
        assert names["oracle passes the holdout"]
    # Validation is not an intervention: nothing goes to the ledger, no worktree is left.
    assert not (tmp_path / ".crossreview" / "ledger.db").exists()
    assert not any((tmp_path / ".crossreview" / "worktrees").glob("validate-*"))


def test_validate_reports_a_broken_suite_config_that_run_would_stop_at(cli, suite):
    make_task(suite, "good")
    (suite / "crossreview.toml").write_text('polcy = "unanimous"\n')
    res = cli("validate", str(suite))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "suite config:" in res.stdout and "crossreview.toml" in res.stdout and "polcy" in res.stdout
    doc = cli("validate", str(suite), "--json").json()
    assert not doc["ok"] and "polcy" in doc["config_error"]
    assert cli("run", str(suite)).returncode == 2
    (suite / "crossreview.toml").write_text('policy = "unanimus"\n')  # well formed, but no such policy
    res = cli("validate", str(suite))
    assert res.returncode == 1 and "unanimus" in res.stdout


def test_validate_reports_each_problem_and_checks_the_rest(cli, suite):
    make_task(suite, "good")
    make_task(suite, "trivial", repo={"calc.py": "def add(a, b):\n    return a + b\n"})  # noop passes
    make_task(suite, "unsolvable", solution={"calc.py": "def add(a, b):\n    return 0\n"})
    broken = make_task(suite, "broken")
    (broken / "instruction.md").unlink()
    # One folder with two problems is one broken task, not two.
    make_task(suite, "twice", toml='[agent]\ntimeout = 5\n[verifier]\ntimeout = 5\n')
    make_task(suite, "notests", tests={"helper.txt": "not a test\n"})
    res = cli("validate", str(suite), "--json")
    assert res.returncode == 1
    doc = res.json()
    by = {t["task"]: {c["name"]: c for c in t["checks"]} for t in doc["tasks"]}
    assert all(c["ok"] for c in by["good"].values())
    assert not by["trivial"]["noop fails the tests"]["ok"]
    assert "cannot tell a fix from no change" in by["trivial"]["noop fails the tests"]["detail"]
    assert not by["unsolvable"]["oracle passes the tests"]["ok"]
    assert "test_add::test_small" in by["unsolvable"]["oracle passes the tests"]["detail"]
    errs = {Path(e["path"]).name: [] for e in doc["errors"]}
    for e in doc["errors"]:
        errs[Path(e["path"]).name].append(e)
    [err] = errs["broken"]
    assert err["file"].endswith("broken/instruction.md") and "missing" in err["message"]
    assert len(errs["twice"]) == 2
    human = cli("validate", str(suite))
    assert "✗ noop fails the tests" in human.stdout and "1/6 tasks valid" in human.stdout
    # Error text is printed as it is, brackets and all (not eaten as markup).
    assert "[verifier] command" in " ".join(human.stdout.split())


def test_gc_with_nothing_to_do(cli, tmp_path):
    res = cli("gc")
    assert res.returncode == 0 and "nothing to collect" in res.stdout


def test_a_bad_spec_names_the_config_file_only_when_it_came_from_there(tmp_path):
    import subprocess
    import sys

    suite = tmp_path / "suite"
    make_task(suite)
    (suite / "crossreview.toml").write_text('agents = ["oracle", "noop"]\n')

    def run(*args):
        res = subprocess.run([sys.executable, "-m", "crossreview", "run", str(suite), *args], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "CI": "true", "COLUMNS": "500"})
        assert res.returncode == 2, res.stderr
        return res.stderr

    flag = run("--agent", "bogus:x", "--agent", "noop")
    assert "unknown agent 'bogus:x'" in flag and "crossreview.toml" not in flag
    reviewer = run("--reviewer", "bogus:y")
    assert "unknown reviewer 'bogus:y'" in reviewer and "crossreview.toml" not in reviewer
    (suite / "crossreview.toml").write_text('agents = ["bogus:z", "noop"]\npolicy = "nope"\n')
    assert f"(from {suite / 'crossreview.toml'})" in run()
    (suite / "crossreview.toml").write_text('agents = ["oracle", "noop"]\npolicy = "nope"\n')
    policy = run()
    assert "unknown policy 'nope'" in policy and f"(from {suite / 'crossreview.toml'})" in policy
    assert "crossreview.toml" not in run("--policy", "nope2")


def test_errors_print_brackets_as_written(cli, suite):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "[bold]x", "--agent", "noop")
    assert res.returncode == 2 and "unknown agent '[bold]x'" in res.stderr


@pytest.mark.parametrize("flag, value, what, fix", [
    # an empty name before '='
    ("--agent", "=oracle", "empty agent name before '='", "--agent x=oracle), or just SPEC (--agent oracle)"),
    ("--reviewer", "=tests", "empty agent name before '='",
     "one of the agents (a, b), e.g. --reviewer a=tests, or just SPEC (--reviewer tests)"),
    # an empty spec after NAME=
    ("--agent", "x=", "the spec after 'x=' is empty", "e.g. --agent x=oracle"),
    ("--reviewer", "a=", "the spec after 'a=' is empty",
     "e.g. --reviewer a=tests, or leave out --reviewer a=... for agent a's default reviewer"),
    ("--reviewer", "b= ", "the spec after 'b=' is empty", "e.g. --reviewer b=tests"),
    # no spec at all
    ("--agent", "", "the spec is empty",
     "write the agent, e.g. --agent oracle to be named by position, or NAME=SPEC, e.g. --agent x=oracle"),
    ("--agent", " ", "the spec is empty", "e.g. --agent oracle"),
    ("--reviewer", "", "the spec is empty",
     "write the reviewer, e.g. --reviewer tests to give it to every agent, or NAME=SPEC, "
     "e.g. --reviewer a=tests; or leave out --reviewer for each agent's default reviewer"),
    ("--reviewer", " ", "the spec is empty", "e.g. --reviewer tests"),
])
def test_an_empty_name_or_spec_is_reported_as_such(cli, suite, flag, value, what, fix):
    """Not an unknown agent or reviewer '': the flag, what was given, what is empty and what to write instead."""
    make_task(suite)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", flag, value)
    said = " ".join(res.stderr.split())
    assert res.returncode == 2, res.stderr
    assert f"{flag} {value!r}: {what}" in said and fix in said
    assert "unknown" not in said


def test_run_json_with_every_task_broken_still_prints_one_document(cli, suite):
    broken = make_task(suite, "broken")
    (broken / "instruction.md").unlink()
    res = cli("run", str(suite), "--json")
    assert res.returncode == 2 and "every task is broken" in res.stderr
    doc = res.json()
    assert doc["run"] is None and doc["tasks"] == []
    [err] = doc["errors"]
    assert err["file"].endswith("broken/instruction.md")


def test_gc_prunes_worktree_records_of_a_killed_run_in_a_bare_repository(cli, tmp_path):
    from conftest import stub_project

    project = stub_project(tmp_path / "project")
    subprocess.run(["git", "clone", "-q", "--bare", str(project), str(tmp_path / "project.git")], check=True)
    suite = tmp_path / "suite"
    make_task(suite, toml=f'[repo]\npath = "{tmp_path / "project.git"}"\n', repo={})
    killed = cli("run", str(suite), "--agent", "oracle", "--agent", "noop",
                 env={"CROSSREVIEW_TEST_CRASH_AT": "verify:a:before"})
    assert killed.returncode == -9, killed.stderr
    assert cli("gc").returncode == 0
    listed = subprocess.run(["git", "--git-dir", str(tmp_path / "project.git"), "worktree", "list", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert "worktree " + str(tmp_path / "project.git") in listed and listed.count("worktree ") == 1, listed


def test_validate_says_what_a_failing_solve_sh_printed_last(cli, suite):
    make_task(suite, "scripted", solution={"solve.sh": "echo working\necho 'pip: no such package foo' >&2\nexit 3\n"})
    res = cli("validate", str(suite), "--json")
    assert res.returncode == 1
    [task] = res.json()["tasks"]
    [check] = [c for c in task["checks"] if not c["ok"]][:1]
    assert "solve.sh exited 3: pip: no such package foo" in check["detail"]


@pytest.mark.parametrize("command", ["run", "validate"])
def test_without_paths_inside_a_suite_or_a_task_the_error_says_to_give_dot(cli, suite, command):
    """`crossreview run` defaults to tasks/; typed from inside the suite (or one task) folder it must say
    that `.` is what was meant, not only that tasks/ does not exist."""
    task = make_task(suite, "add")
    res = cli(command, cwd=suite)
    assert res.returncode == 2, res.stderr
    text = " ".join(res.stderr.split())
    assert "tasks does not exist" in text and f"`crossreview {command} .` runs them" in text, text
    text = " ".join(cli(command, cwd=task).stderr.split())
    assert f"this folder is a task folder (it has task.toml): `crossreview {command} .` runs it" in text, text
    # Where nothing is a task, there is nothing to suggest.
    empty = suite.parent / "empty"
    empty.mkdir()
    text = " ".join(cli(command, cwd=empty).stderr.split())
    assert "tasks does not exist" in text and "crossreview run ." not in text, text


def test_results_table_on_an_80_column_terminal_keeps_every_task_id_whole(cli, suite):
    """The task id is what `show`, `--suite` and the branch names go by: a narrow terminal may fold it
    onto two lines but must not cut it to "a_rather_long…"."""
    make_task(suite, "a_rather_long_task_id")
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    assert rows and all(len(line) <= 80 for line in rows), res.stdout
    first_cells = "".join(line.split("│")[1].strip() for line in rows)
    assert "a_rather_long_task_id" in first_cells and "…" not in res.stdout, res.stdout


def test_stats_on_an_80_column_terminal_keeps_agent_names_and_specs_whole(cli, suite):
    """`stats`' per-agent rows are read by name and spec; on a narrow terminal they fold, never "shortc…"."""
    make_task(suite)
    res = cli("run", str(suite), "--agent", "a_long_agent_name=oracle", "--agent", "b=noop")
    assert res.returncode == 0, res.stderr
    res = cli("stats", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    agents = res.stdout.split("\nAgents")[1].split("└")[0]
    rows = [line.split("│") for line in agents.splitlines() if line.startswith("│")]
    assert "a_long_agent_name" in "".join(r[1].strip() for r in rows), res.stdout
    assert "oracle" in "".join(r[2].strip() for r in rows), res.stdout
