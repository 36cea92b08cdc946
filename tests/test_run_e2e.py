"""`crossreview run` end to end: real task folders, git worktrees, pytest, SQLite, subprocesses."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import (
    EXAMPLE_TASKS,
    approve_all_reviewer,
    git_branches,
    git_worktrees,
    ledger_rows,
    make_task,
    watch_agents,
    write,
)


def _only(doc: dict) -> dict:
    assert len(doc["tasks"]) == 1, doc
    return doc["tasks"][0]


@pytest.mark.parametrize(
    "agents, decision, winner, code",
    [
        (["oracle", "oracle"], "accepted", "a", 0),
        (["oracle", "noop"], "accepted", "a", 0),
        (["noop", "oracle"], "accepted", "b", 0),
        (["noop", "noop"], "rejected", None, 1),
    ],
)
def test_offline_agent_pairs(cli, suite, tmp_path, agents, decision, winner, code):
    make_task(suite)
    args = ["run", str(suite), "--json"]
    for a in agents:
        args += ["--agent", a]
    res = cli(*args)
    assert res.returncode == code, res.stderr
    t = _only(res.json())
    assert (t["decision"], t["winner"]) == (decision, winner)
    assert t["escalation"] is None
    by_agent = {c["agent"]: c for c in t["candidates"]}
    for name, spec in zip("ab", agents):
        c = by_agent[name]
        assert c["tests_total"] == 2
        assert c["tests_passed"] == (2 if spec == "oracle" else 0)
        assert c["reviews"] == 1
        # The `tests` reviewer approves exactly what passes.
        assert c["approvals"] == (1 if spec == "oracle" else 0)
        assert c["tokens"] == 0 and c["cost"] == 0


def test_forced_split_escalates_with_exit_3(cli, suite, tmp_path):
    make_task(suite)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    res = cli("run", str(suite), "--agent", "noop", "--agent", "noop",
              "--reviewer", f"a={approve}", "--reviewer", "b=tests", "--json")
    assert res.returncode == 3, res.stderr
    t = _only(res.json())
    assert t["decision"] == "escalated" and t["winner"] is None
    assert t["escalation"].startswith("e-")
    inbox = cli("inbox", "--json").json()["escalations"]
    assert [e["id"] for e in inbox] == [t["escalation"]]
    assert inbox[0]["task"] == "add"


def test_run_records_everything_in_the_ledger(cli, suite, tmp_path):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    assert res.returncode == 0, res.stderr
    doc = res.json()
    state = tmp_path / ".crossreview"
    runs = ledger_rows(state, "SELECT * FROM runs")
    assert [r["id"] for r in runs] == [doc["run"]] and runs[0]["status"] == "finished"
    tr = ledger_rows(state, "SELECT * FROM task_runs")
    assert len(tr) == 1 and tr[0]["decision"] == "accepted" and tr[0]["winner"] == "a"
    assert tr[0]["started"] <= tr[0]["finished"]
    cands = ledger_rows(state, "SELECT agent, tests_passed, tests_total, diff FROM candidates ORDER BY agent")
    assert [(c["agent"], c["tests_passed"], c["tests_total"]) for c in cands] == [("a", 2, 2), ("b", 0, 2)]
    assert "+    return a + b" in cands[0]["diff"] and cands[1]["diff"] == ""
    verdicts = ledger_rows(state, "SELECT reviewer, candidate, verdict FROM verdicts ORDER BY reviewer")
    assert [tuple(v) for v in verdicts] == [("a", "b", "reject"), ("b", "a", "approve")]
    outcomes = ledger_rows(state, "SELECT agent, name, outcome FROM test_outcomes WHERE suite='tests' ORDER BY agent, name")
    assert [tuple(o) for o in outcomes] == [
        ("a", "test_add::test_negative", "passed"), ("a", "test_add::test_small", "passed"),
        ("b", "test_add::test_negative", "failed"), ("b", "test_add::test_small", "failed"),
    ]
    nodes = {r["node"] for r in ledger_rows(state, "SELECT node FROM events")}
    assert {"prepare", "solve", "verify", "review", "decide", "record"} <= nodes
    for e in ledger_rows(state, "SELECT started, finished FROM events"):
        assert e["started"] <= e["finished"]


def test_accepted_candidate_is_kept_as_a_branch_and_nothing_else_is_left(cli, suite, tmp_path):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    t = _only(res.json())
    git_dir = tmp_path / ".crossreview" / "repos" / "add.git"
    branch = f"crossreview/{res.json()['run']}/add"
    assert t["branch"] == branch
    assert [b for b in git_branches(git_dir) if b.startswith("crossreview/")] == [branch]
    content = subprocess.run(["git", "--git-dir", str(git_dir), "show", f"{branch}:calc.py"],
                             capture_output=True, text=True, check=True).stdout
    assert content == "def add(a, b):\n    return a + b\n"
    assert git_worktrees(git_dir) == [str(git_dir)]  # the bare repo itself, no worktree left
    assert not any((tmp_path / ".crossreview" / "worktrees").glob("r-*"))


def test_example_suite_shows_every_outcome(cli, tmp_path):
    shutil.copytree(EXAMPLE_TASKS, tmp_path / "tasks")
    res = cli("run", "tasks/", "--json")
    assert res.returncode == 1, res.stderr  # one task is rejected
    by_task = {t["task"]: t for t in res.json()["tasks"]}
    assert {k: v["decision"] for k, v in by_task.items()} == {
        "fizzbuzz": "accepted",
        "parse_duration": "rejected",
        "roman_numerals": "escalated",
        "version_compare": "accepted",
        "weekday_name": "accepted",
    }
    assert by_task["fizzbuzz"]["winner"] == "alice"
    # version_compare's accepted candidate fails the holdout: an escaped defect, recorded.
    hold = ledger_rows(tmp_path / ".crossreview",
                       "SELECT c.holdout_passed, c.holdout_total FROM candidates c JOIN task_runs t ON t.id = c.task_run"
                       " WHERE t.task='version_compare' AND c.agent='alice'")
    assert hold[0]["holdout_total"] > hold[0]["holdout_passed"]


def test_human_table_output(cli, suite):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop")
    assert res.returncode == 0
    assert "accepted" in res.stdout and "a ✓ 2/2, 1/1" in res.stdout and "b ✗ 0/2, 0/1" in res.stdout
    assert "1 task run: 1 accepted, 0 rejected, 0 escalated" in res.stdout
    assert "tokens 0" in res.stdout and "agent-seconds" in res.stdout
    # Progress goes to stderr, per agent.
    assert "a solved in" in res.stderr and "b tests 0/2 passed" in res.stderr


def test_broken_task_is_reported_and_the_rest_still_runs(cli, suite):
    make_task(suite, "good")
    bad = make_task(suite, "bad")
    (bad / "task.toml").write_text('[verifier]\ncomand = "pytest"\n')
    res = cli("run", str(suite), "--agent", "oracle", "--json")
    assert res.returncode == 1
    doc = res.json()
    assert [t["task"] for t in doc["tasks"]] == ["good"]
    assert doc["tasks"][0]["decision"] == "accepted"
    [err] = doc["errors"]
    assert err["file"].endswith("bad/task.toml") and err["field"] == "verifier.comand"
    assert "expected one of: command, timeout_sec, tests_visible" in err["message"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--agent", "bogus"], "unknown agent 'bogus'"),
        (["--agent", "command:"], "needs a command"),
        (["--agent", "oracle", "--agent", "a=noop"], "two agents are named 'a'"),
        (["--policy", "whatever"], "unknown policy 'whatever'"),
        (["--reviewer", "z=tests"], "names agent 'z'"),
    ],
)
def test_usage_errors_exit_2_and_run_nothing(cli, suite, tmp_path, args, message):
    make_task(suite)
    res = cli("run", str(suite), *args)
    assert res.returncode == 2
    assert message in res.stderr
    assert not (tmp_path / ".crossreview" / "ledger.db").exists()


def test_missing_path_and_empty_suite_exit_2(cli, tmp_path):
    res = cli("run", str(tmp_path / "nope"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    (tmp_path / "empty").mkdir()
    res = cli("run", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no task folders" in res.stderr


def test_suite_config_supplies_agents_and_flags_win(cli, suite, tmp_path):
    make_task(suite)
    write(suite / "crossreview.toml", 'agents = ["x=noop", "y=noop"]\npolicy = "majority"\n')
    res = cli("run", str(suite), "--json")
    t = _only(res.json())
    assert sorted(c["agent"] for c in t["candidates"]) == ["x", "y"] and t["decision"] == "rejected"
    res = cli("run", str(suite), "--agent", "oracle", "--json")
    assert [c["agent"] for c in _only(res.json())["candidates"]] == ["a"]
    write(suite / "crossreview.toml", 'agentz = ["noop"]\n')
    res = cli("run", str(suite))
    assert res.returncode == 2 and "unknown key 'agentz'" in res.stderr and "crossreview.toml" in res.stderr


def test_hidden_tests_are_copied_only_after_the_agent(cli, suite, tmp_path):
    make_task(suite)
    spy = write(tmp_path / "spy.py", "import os, pathlib\n"
                "pathlib.Path(os.environ['CROSSREVIEW_COUNT_DIR'], 'saw').write_text(str(sorted(os.listdir('.'))))\n"
                "pathlib.Path('calc.py').write_text('def add(a, b):\\n    return a + b\\n')\n")
    watch_agents(suite, tmp_path / "spy")
    res = cli("run", str(suite), "--agent", f"command:{{python}} {spy}", "--json",
              env={"CROSSREVIEW_COUNT_DIR": str(tmp_path / "spy")})
    assert _only(res.json())["decision"] == "accepted", res.stderr
    seen = (tmp_path / "spy" / "saw").read_text()
    assert ".crossreview-tests" not in seen and "calc.py" in seen


def test_visible_tests_cannot_be_rewritten_by_the_agent(cli, suite, tmp_path):
    make_task(suite, toml='[verifier]\ntests_visible = true\n')
    # The agent sees the tests and "fixes" them instead of the code.
    cheat = write(tmp_path / "cheat.py", "import pathlib\n"
                  "t = pathlib.Path('.crossreview-tests/test_add.py')\n"
                  "assert t.exists()\n"
                  "t.write_text('def test_small():\\n    pass\\n')\n")
    res = cli("run", str(suite), "--agent", f"command:{{python}} {cheat}", "--json")
    t = _only(res.json())
    # The task's own copy of the tests is run (both fail), and trying to rewrite them is tampering:
    # never decided without a human.
    assert t["decision"] == "escalated", res.stderr
    assert "test_add.py: edits the task's tests it was shown" in t["reason"]
    assert t["candidates"][0]["tests_total"] == 2 and t["candidates"][0]["tests_passed"] == 0


def test_task_from_an_existing_git_repository_and_ref(cli, suite, tmp_path):
    from conftest import GIT_AS_TESTER as git, stub_project

    repo = stub_project(tmp_path / "project")
    first = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    write(repo / "calc.py", "def add(a, b):\n    return a + b\n")
    subprocess.run([*git, "-C", str(repo), "commit", "-qam", "solved already"], check=True)
    make_task(suite, toml=f'[repo]\npath = "{repo}"\nref = "{first}"\n', repo={})
    res = cli("run", str(suite), "--agent", "noop", "--agent", "oracle", "--json")
    t = _only(res.json())
    # Worktrees start at the first commit, where add() is a stub: noop fails.
    assert (t["decision"], t["winner"]) == ("accepted", "b"), res.stderr
    branches = git_branches(repo / ".git")
    assert f"crossreview/{res.json()['run']}/add" in branches
    assert not [b for b in branches if b.startswith("crossreview/work/")]
    assert git_worktrees(repo / ".git") == [str(repo)]
    status = subprocess.run(["git", "-C", str(repo), "status", "--porcelain"], capture_output=True, text=True).stdout
    assert status == ""


def test_a_failing_agent_is_an_error_candidate_and_the_run_goes_on(cli, suite, tmp_path):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "command:exit 7", "--agent", "oracle", "--json")
    t = _only(res.json())
    assert (t["decision"], t["winner"]) == ("accepted", "b")
    bad = next(c for c in t["candidates"] if c["agent"] == "a")
    assert bad["status"] == "error" and bad["reviews"] == 0


def test_jobs_runs_tasks_side_by_side(cli, suite):
    for name in ("one", "two", "three"):
        make_task(suite, name)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--jobs", "3", "--json")
    assert res.returncode == 0, res.stderr
    assert sorted(t["task"] for t in res.json()["tasks"]) == ["one", "three", "two"]


def test_command_agent_cost_is_unknown_unless_it_reports_usage(cli, suite, tmp_path):
    make_task(suite)
    reporting = write(tmp_path / "reporting.py", "import json, os, pathlib\n"
                      "pathlib.Path('calc.py').write_text('def add(a, b):\\n    return a + b\\n')\n"
                      "pathlib.Path(os.environ['CROSSREVIEW_USAGE_FILE']).write_text("
                      "json.dumps({'tokens_in': 120, 'tokens_out': 30, 'cost': 0.25, 'calls': 2}))\n")
    res = cli("run", str(suite), "--agent", f"command:{{python}} {reporting}", "--agent", "command:true", "--json")
    by = {c["agent"]: c for c in _only(res.json())["candidates"]}
    assert (by["a"]["tokens"], by["a"]["cost"]) == (150, 0.25)
    assert by["b"]["cost"] is None  # said nothing: unknown, never a guessed 0
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT tokens_in, tokens_out, cost, calls FROM candidates WHERE agent='a'")
    assert tuple(row) == (120, 30, 0.25, 2)
    human = cli("run", str(suite), "--agent", "command:true")
    assert "cost unknown" in human.stdout


def test_agents_on_the_command_line_drop_the_configs_reviewer_pairing(cli, suite, tmp_path):
    make_task(suite)
    write(suite / "crossreview.toml", 'agents = ["x=noop", "y=oracle"]\nreviewers = ["x=tests"]\nledger = "team.db"\n')
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    assert res.returncode == 0, res.stderr
    # The config's ledger key is honoured, relative to the config file.
    assert (suite / "team.db").exists() and not (tmp_path / ".crossreview" / "ledger.db").exists()
    runs = cli("runs", "--ledger", str(suite / "team.db"), "--json").json()["runs"]
    assert [r["id"] for r in runs] == [res.json()["run"]] and runs[0]["decisions"] == {"accepted": 1}


def test_a_task_without_holdout_skips_the_holdout_step(tmp_path, suite, cli):
    # One step (and checkpoint) less per task run: the holdout step runs only where there is a holdout.
    make_task(suite, "plain")
    make_task(suite, "held", holdout={"test_more.py": "from calc import add\n\ndef test_big():\n    assert add(10**6, 1) == 10**6 + 1\n"})
    r = cli("run", str(suite), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = ledger_rows(tmp_path / ".crossreview", "SELECT t.task, e.node FROM events e JOIN task_runs t ON t.id = e.task_run")
    held_steps = [row["node"] for row in steps if row["task"] == "held"]
    plain_steps = [row["node"] for row in steps if row["task"] == "plain"]
    assert "holdout" in held_steps and "holdout" not in plain_steps
    assert len(held_steps) == len(plain_steps) + 1
    held = ledger_rows(tmp_path / ".crossreview", "SELECT c.holdout_total FROM candidates c JOIN task_runs t "
                       "ON t.id = c.task_run WHERE t.task = 'held'")
    assert held and all(row["holdout_total"] == 1 for row in held)


def test_a_diff_too_large_to_review_makes_an_error_candidate_not_a_huge_checkpoint(cli, suite, tmp_path):
    from conftest import ledger_rows, make_task, write

    make_task(suite)
    big = write(tmp_path / "big.py", "import pathlib\npathlib.Path('data.txt').write_text(('y' * 79 + '\\n') * 40_000)\n")
    res = cli("run", str(suite), "--agent", "oracle", "--agent", f"big=command:{{python}} {big}", "--json")
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    assert (task["decision"], task["winner"]) == ("accepted", "a")
    cands = {c["agent"]: c for c in ledger_rows(tmp_path / ".crossreview", "SELECT agent, status, error, diff FROM candidates")}
    assert cands["big"]["status"] == "error" and "the diff is 3,2" in cands["big"]["error"]
    assert len(cands["big"]["diff"]) < 30_000 and "too large to review" in cands["big"]["diff"]


def test_oracle_neither_writes_through_nor_reads_links_out_of_the_task_folder(cli, suite, tmp_path):
    victim = write(tmp_path / "victim.txt", "original\n")
    (tmp_path / "victim_dir").mkdir()
    secret = write(tmp_path / "secret.txt", "the host's private key\n")
    d = make_task(suite)
    (d / "repo" / "out.txt").symlink_to(victim)
    (d / "repo" / "pkg").symlink_to(tmp_path / "victim_dir")
    write(d / "solution" / "out.txt", "from the solution\n")
    write(d / "solution" / "pkg" / "planted.py", "X = 1\n")
    (d / "solution" / "leak.txt").symlink_to(secret)
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    t = _only(res.json())
    assert (t["decision"], t["winner"]) == ("accepted", "a"), res.stderr
    assert victim.read_text() == "original\n"
    assert list((tmp_path / "victim_dir").iterdir()) == []
    log = subprocess.run(["git", "--git-dir", str(tmp_path / ".crossreview" / "repos" / "add.git"), "log", "-p",
                          "--all"], capture_output=True, text=True).stdout
    assert "+from the solution" in log and "private key" not in log


def test_a_task_folders_own_repo_git_config_runs_nothing(cli, suite, tmp_path):
    # repo/.git came with the task folder: its filters must not run on the host (README: use repo/
    # folders for tasks from elsewhere; they are snapshotted without their .git).
    d = make_task(suite)
    repo = d / "repo"
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(repo)]
    subprocess.run([*git, "init", "-q"], check=True)
    marker = tmp_path / "ran"
    subprocess.run([*git, "config", "filter.x.clean", f"sh -c 'touch {marker}-clean; cat'"], check=True)
    subprocess.run([*git, "config", "filter.x.smudge", f"sh -c 'touch {marker}-smudge; cat'"], check=True)
    write(repo / ".gitattributes", "* filter=x\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "x"], check=True)
    for f in tmp_path.glob("ran-*"):
        f.unlink()
    res = cli("run", str(suite), "--agent", "oracle", "--agent", "noop", "--json")
    t = _only(res.json())
    assert (t["decision"], t["winner"]) == ("accepted", "a"), res.stderr
    assert not list(tmp_path.glob("ran-*"))
    assert (tmp_path / ".crossreview" / "repos" / "add.git").is_dir()


def test_a_worktree_git_cannot_diff_is_that_candidates_error_not_the_task_runs(cli, suite, tmp_path):
    # A repository nested in the worktree with no commit: `git add -A` refuses it. Only the agent that
    # made it loses its candidate; the others are reviewed and decided as usual.
    make_task(suite)
    nest = write(tmp_path / "nest.py", "import os\nos.makedirs('sub/.git/objects', exist_ok=True)\n"
                                       "os.makedirs('sub/.git/refs', exist_ok=True)\n"
                                       "open('sub/.git/HEAD', 'w').write('ref: refs/heads/main\\n')\n")
    res = cli("run", str(suite), "--agent", f"command:{{python}} {nest}", "--agent", "oracle", "--json")
    t = _only(res.json())
    assert (t["decision"], t["winner"], t["error"]) == ("accepted", "b", None), res.stderr
    bad = next(c for c in t["candidates"] if c["agent"] == "a")
    assert bad["status"] == "error" and bad["reviews"] == 0
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT error FROM candidates WHERE agent = 'a'")
    assert "could not be taken" in row["error"] and "does not have a commit checked out" in row["error"]
