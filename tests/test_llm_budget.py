"""Budgets: --max-cost / --max-tokens per suite run and per task run stop model work at the cap,
cleanly, and the decision says why. Prices for models litellm does not know come from the config."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import GOOD_SOLUTION, approve_all_reviewer, ledger_rows, make_task, write
from fake_openai import fake_openai, llm_env, tools  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

PRICE_IN, PRICE_OUT = 0.00001, 0.00002
TOKENS_IN, TOKENS_OUT = 1000, 100
PER_CALL = TOKENS_IN * PRICE_IN + TOKENS_OUT * PRICE_OUT  # $0.012


def _spender(fake_openai, model: str = "spender") -> None:
    """An agent that never finishes: it lists files forever, 1100 tokens a call."""
    fake_openai.on(model, [tools(("list_files", {}), prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)])


def _priced(suite, model="openai/spender"):
    write(suite / "crossreview.toml",
          f'[prices."{model}"]\ninput_cost_per_token = {PRICE_IN}\noutput_cost_per_token = {PRICE_OUT}\n')


def _total(state) -> tuple[float, int, int]:
    rows = ledger_rows(state, "SELECT cost, tokens_in + tokens_out AS tokens, calls FROM candidates "
                              "UNION ALL SELECT cost, tokens_in + tokens_out, calls FROM verdicts")
    return sum(r["cost"] or 0 for r in rows), sum(r["tokens"] for r in rows), sum(r["calls"] for r in rows)


def test_max_cost_stops_the_suite_run_at_the_cap(cli, suite, tmp_path, fake_openai):
    make_task(suite, "t1")
    make_task(suite, "t2")
    _priced(suite)
    _spender(fake_openai)
    cap = 0.05
    res = cli("run", str(suite), "--agent", "a=llm:openai/spender", "--max-cost", str(cap), "--json",
              env=llm_env(fake_openai))
    assert res.returncode == 1, res.stderr
    by = {t["task"]: t for t in res.json()["tasks"]}
    # t1 spends up to the cap; its candidate stops cleanly and the decision says why.
    assert by["t1"]["decision"] == "rejected"
    assert "budget exhausted: --max-cost $0.05 for the suite run reached" in by["t1"]["reason"]
    assert "stopped a" in by["t1"]["reason"]
    [cand] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")
    assert cand["status"] == "error" and cand["error"].startswith("budget exhausted")
    # t2 never starts: the suite's money is gone.
    assert by["t2"]["decision"] == "error" and "not started: budget exhausted" in by["t2"]["error"]

    total, tokens, calls = _total(tmp_path / ".crossreview")
    assert cap <= total < cap + PER_CALL  # stopped at the cap, within one call of it
    assert calls == len(fake_openai.requests) == 5
    assert tokens == calls * (TOKENS_IN + TOKENS_OUT)
    assert total == pytest.approx(calls * PER_CALL)

    # Resuming the run in a new process does not give it its money back.
    run = res.json()["run"]
    again = cli("resume", run, "--json", env=llm_env(fake_openai))
    assert "not started: budget exhausted" in {t["task"]: t for t in again.json()["tasks"]}["t2"]["error"]
    assert len(fake_openai.requests) == 5


def test_max_task_tokens_caps_each_task_run(cli, suite, tmp_path, fake_openai):
    make_task(suite, "t1")
    make_task(suite, "t2")
    _spender(fake_openai)
    res = cli("run", str(suite), "--agent", "a=llm:openai/spender", "--max-task-tokens", "2500", "--json",
              env=llm_env(fake_openai))
    by = {t["task"]: t for t in res.json()["tasks"]}
    for name in ("t1", "t2"):  # each task run gets its own 2500 tokens: 3 calls of 1100
        assert "--max-task-tokens 2500 for the task run reached (3300 tokens spent)" in by[name]["reason"]
        assert by[name]["candidates"][0]["tokens"] == 3300
    assert len(fake_openai.requests) == 6
    # No price known and no cost cap: the cost is recorded as unknown, not as 0.
    assert {r["cost"] for r in ledger_rows(tmp_path / ".crossreview", "SELECT cost FROM candidates")} == {None}


def test_a_cost_cap_needs_a_price_and_prices_do_not_leak(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    _priced(suite, "openai/priced")
    res = cli("run", str(suite), "--agent", "a=llm:openai/priced", "--agent", "b=llm:openai/unpriced",
              "--max-cost", "1", env=llm_env(fake_openai))
    assert res.returncode == 2
    assert "needs a price for every model" in res.stderr and "openai/unpriced" in res.stderr
    assert "openai/priced," not in res.stderr  # the configured one is fine
    assert not fake_openai.requests


def test_the_run_reports_what_reviews_spent_too(cli, suite, tmp_path, fake_openai):
    from fake_openai import verdict

    make_task(suite)
    _priced(suite, "openai/rev")
    fake_openai.on("rev", [verdict("approve", prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)])
    fake_openai.on("unpriced", [verdict("approve", prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)])
    args = ["run", str(suite), "--agent", "a=oracle", "--agent", "b=oracle", "--reviewer", "llm:openai/rev"]
    res = cli(*args, "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    [task] = res.json()["tasks"]
    # The solves were free; two reviews were not, and the task run's figures say so.
    assert [c["tokens"] for c in task["candidates"]] == [0, 0]
    assert task["tokens"] == 2 * (TOKENS_IN + TOKENS_OUT)
    assert task["cost"] == pytest.approx(2 * PER_CALL)
    human = cli(*args, env=llm_env(fake_openai))
    assert f"tokens {2 * (TOKENS_IN + TOKENS_OUT)}" in human.stdout and "cost $0.0240" in human.stdout
    # A reviewer without a price: the money is unknown, never $0 or the priced part alone.
    unknown = cli("run", str(suite), "--agent", "a=oracle", "--agent", "b=oracle", "--reviewer", "a=llm:openai/rev",
                  "--reviewer", "b=llm:openai/unpriced", "--json", env=llm_env(fake_openai))
    assert unknown.json()["tasks"][0]["cost"] is None


def test_an_exhausted_budget_does_not_stop_what_spends_nothing(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    _spender(fake_openai)
    res = cli("run", str(suite), "--agent", "x=llm:openai/spender", "--agent", "y=oracle", "--reviewer", "tests",
              "--max-task-tokens", "3000", "--json", env=llm_env(fake_openai))
    [task] = res.json()["tasks"]
    # x ran into the cap; the free `tests` reviewer still judged y, whose tests pass.
    assert {c["agent"]: c for c in task["candidates"]}["x"]["status"] == "error"
    assert "budget exhausted" in task["reason"]
    verdicts = ledger_rows(tmp_path / ".crossreview", "SELECT reviewer, candidate, verdict, error FROM verdicts")
    assert [(v["reviewer"], v["candidate"], v["verdict"]) for v in verdicts] == [("x", "y", "approve")], verdicts
    assert (task["decision"], task["winner"]) == ("accepted", "y"), task["reason"]
    # Accepted without x's attempt: the cap cut the task run short, so the run did not finish its work.
    assert task["stopped"].startswith("budget exhausted: --max-task-tokens 3000")
    assert res.returncode == 1


def test_a_task_run_the_cap_cut_short_is_reported_as_stopped_not_as_finished(cli, suite, tmp_path, fake_openai):
    # x runs into its task run's cap; y's candidate is accepted without x's attempt. The table, the
    # summary, --json, stats and the exit code must all say the cap stopped it: "accepted" alone (exit 0)
    # read as a task run that did all its work. t2 is not started at all once the suite's money is gone.
    make_task(suite, "t1")
    make_task(suite, "t2")
    _priced(suite)
    _spender(fake_openai)
    args = ["run", str(suite), "--agent", "x=llm:openai/spender", "--agent", "y=oracle", "--reviewer", "tests",
            "--jobs", "1", "--max-task-tokens", "3000", "--max-cost", "0.03"]
    res = cli(*args, env=llm_env(fake_openai))
    assert res.returncode == 1, res.stdout + res.stderr  # not 0: "every task accepted" is not what happened
    out = " ".join(res.stdout.split())
    assert "stopped by --max-task-tokens 3000" in out, res.stdout  # under t1's "accepted" in the table
    assert "stopped by --max-cost $0.03" in out, res.stdout  # under t2's "error"
    assert "2 task runs: 1 accepted, 0 rejected, 0 escalated, 1 error, 2 stopped by a budget cap " \
           "(1 cut short, 1 not started)" in out, res.stdout
    assert "accepted → winner y (stopped by --max-task-tokens 3000, decided without what it stopped)" in \
        " ".join(res.stderr.split()), res.stderr

    doc = cli(*args, "--json", env=llm_env(fake_openai))
    assert doc.returncode == 1
    by = {t["task"]: t for t in doc.json()["tasks"]}
    assert (by["t1"]["decision"], by["t1"]["winner"]) == ("accepted", "y")
    assert by["t1"]["stopped"] == "budget exhausted: --max-task-tokens 3000 for the task run reached (3300 tokens spent)"
    assert by["t2"]["decision"] == "error" and by["t2"]["stopped"].startswith("budget exhausted: --max-cost $0.03")

    # A resume reads the same from the ledger (it keeps both: t1 finished, t2's cap still holds).
    again = cli("resume", doc.json()["run"], "--json", env=llm_env(fake_openai))
    assert again.returncode == 1
    assert [t["stopped"] is not None for t in again.json()["tasks"]] == [True, True], again.stdout

    stats = cli("stats", "--json").json()["counts"]
    assert stats["stopped_by_cap"] == {"task_runs": 4, "cut_short": 2, "accepted": 2, "rejected": 0, "waiting": 0,
                                       "not_started": 2}, stats
    human = " ".join(cli("stats").stdout.split())
    assert "stopped by a budget cap 2 cut short (2 accepted, 0 rejected, 0 waiting), decided without the agents " \
           "and reviews the cap stopped" in human, human
    assert "2 failed with an error (2 not started: a budget cap ran out)" in human, human


def test_stopped_by_cap_reads_the_cap_from_errors():
    from crossreview.budget import stopped_by_cap
    from crossreview.reporting import stopped_label

    msg = "budget exhausted: --max-cost $50 for the suite run reached ($50.0100 spent)"
    assert stopped_by_cap([None, "timed out", f"not started: {msg}"]) == msg
    assert stopped_by_cap([None, "", "HTTP 500"]) is None
    assert stopped_label(msg) == "stopped by --max-cost $50"
    assert stopped_label("budget exhausted") == "stopped: budget exhausted"


def test_a_money_cap_over_work_of_unknown_price_says_so(cli, suite, tmp_path):
    make_task(suite)
    silent = write(tmp_path / "silent.py", "import shutil, sys\n")  # changes nothing, reports no usage
    args = ["run", str(suite), "--agent", "a=oracle", "--agent", f"b=command:{{python}} {silent}", "--max-cost", "1"]
    res = cli(*args)
    assert "warning: the money cap could not count everything: 1 task run spent an unknown amount (add)" in \
        " ".join(res.stderr.split())
    doc = cli(*args, "--json").json()
    assert doc["tasks"][0]["cost"] is None and len(doc["warnings"]) == 1
    # A token cap is as blind to it.
    tokens = cli("run", str(suite), "--agent", "a=oracle", "--agent", f"b=command:{{python}} {silent}",
                 "--max-tokens", "1000", "--json").json()
    assert any(w.startswith("the token cap could not count everything") for w in tokens["warnings"])
    # Without a cap there is nothing to warn about.
    assert cli("run", str(suite), "--agent", "a=oracle", "--agent", f"b=command:{{python}} {silent}",
               "--json").json()["warnings"] == []


def test_resume_warns_that_the_cap_could_not_count_everything_as_run_does(cli, suite, tmp_path):
    # A killed run resumed under its money cap: the command agent reports no usage, so the cap cannot
    # hold it. `run` said so after its table; `resume` (the overnight journey's next step) said nothing.
    make_task(suite, "t1")
    make_task(suite, "t2")
    silent = write(tmp_path / "silent.py", "import shutil, sys\n")  # changes nothing, reports no usage
    args = ["--agent", "a=oracle", "--agent", f"b=command:{{python}} {silent}", "--jobs", "1", "--max-cost", "1"]
    killed = cli("run", str(suite), *args, env={"CROSSREVIEW_TEST_CRASH_AT": "review:a:before"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [run] = ledger_rows(tmp_path / ".crossreview", "SELECT id FROM runs")
    res = cli("resume", run["id"])
    assert res.returncode in (0, 1, 3), res.stderr
    err = " ".join(res.stderr.split())
    assert "warning: the money cap could not count everything: 2 task runs spent an unknown amount (t1, t2)" in err, err
    # And in --json (a second resume of the finished run prints its results, and the warning, again).
    doc = cli("resume", run["id"], "--json").json()
    assert [w for w in doc["warnings"] if w.startswith("the money cap could not count everything")], doc["warnings"]


def test_every_charge_of_real_work_is_told_as_it_happens_and_seeding_is_not():
    from crossreview.budget import Budgets

    heard = []
    budgets = Budgets(on_charge=lambda tr, tokens, cost: heard.append((tr, tokens, cost)))
    task = budgets.task("r-1", "r-1/t", {"max_task_cost": 1.0})
    task.charge(120, 0.02)
    task.charge(0, None)       # a command that did not say what it spent: nothing the journal counts
    task.charge(0, 0.0)        # free work (oracle, the tests reviewer): not worth a ledger write
    task.charge(500, 0.5, journal=False)  # counted again from the ledger on resume
    budgets.suite("r-1", None).charge(7, 0.001)  # a suite's own charge has no task run to journal under
    task.charge(40, None)      # tokens of an unpriced model: journaled
    assert heard == [("r-1/t", 120, 0.02), ("r-1/t", 40, None)]
    assert (task.tokens, round(task.cost, 6), task.unpriced_charges) == (660, 0.52, 2)


def test_a_reply_reporting_no_usage_or_nonsense_is_an_unknown_cost_not_free_and_not_a_crash(cli, suite, tmp_path,
                                                                                             fake_openai):
    # litellm reads a reply without usage as 0 tokens, and passes negative or absurd counts on as they
    # come. None of that is a price: the call's cost is unknown (the money cap says it could not count
    # it), and a count no ledger column holds does not take the task run down with an OverflowError.
    make_task(suite)
    _priced(suite)
    good = dict(prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)
    fake_openai.on("spender", [
        tools(("list_files", {}), **good, edit=lambda b: b.pop("usage")),
        tools(("list_files", {}), **good, edit=lambda b: b.update(usage={"prompt_tokens": -900, "completion_tokens": -9})),
        tools(("list_files", {}), **good, edit=lambda b: b.update(usage={"prompt_tokens": 10**30, "completion_tokens": 1})),
        tools(("write_file", {"path": "calc.py", "content": "def add(a, b):\n    return a + b\n"}), **good),
        tools(("finish", {"summary": "done"}), **good),
    ])
    res = cli("run", str(suite), "--agent", "a=llm:openai/spender", "--reviewer", "tests", "--max-cost", "5",
              "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    doc = res.json()
    [t] = doc["tasks"]
    assert t["decision"] == "accepted" and t["error"] is None
    assert t["cost"] is None and t["candidates"][0]["cost"] is None  # unknown, not $0.024
    assert any("money cap could not count everything" in w for w in doc["warnings"])
    calls = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM calls ORDER BY seq")
    assert len(calls) == len(fake_openai.requests) == 5
    assert [c["cost"] is None for c in calls] == [True, True, True, False, False]
    assert all(c["tokens_in"] >= 0 and c["tokens_out"] >= 0 for c in calls)
    assert [(c["tokens_in"], c["tokens_out"]) for c in calls[3:]] == [(TOKENS_IN, TOKENS_OUT)] * 2
    [cand] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")
    assert (cand["tokens_in"], cand["tokens_out"], cand["cost"], cand["calls"]) == (2 * TOKENS_IN, 2 * TOKENS_OUT, None, 5)


def test_a_cap_or_a_price_that_is_not_a_finite_number_is_refused_before_anything_runs(cli, suite, fake_openai):
    # "--max-cost nan" passed the x>0 check and capped nothing (nan compares false); a price of inf
    # made every cost inf and --json print the non-JSON word Infinity.
    make_task(suite)
    _priced(suite)
    _spender(fake_openai)
    for flag in ("--max-cost", "--max-task-cost"):
        for value in ("nan", "inf"):
            res = cli("run", str(suite), "--agent", "a=llm:openai/spender", flag, value, "--json", env=llm_env(fake_openai))
            assert res.returncode == 2 and "is not a finite amount of USD" in res.stderr, (flag, value, res.stderr)
    write(suite / "crossreview.toml", '[prices."openai/spender"]\ninput_cost_per_token = inf\noutput_cost_per_token = 0\n')
    res = cli("run", str(suite), "--agent", "a=llm:openai/spender", "--json", env=llm_env(fake_openai))
    assert res.returncode == 2 and "input_cost_per_token" in res.stderr, res.stderr
    write(suite / "crossreview.toml", 'max_task_cost = inf\n')
    res = cli("run", str(suite), "--agent", "a=llm:openai/spender", "--json", env=llm_env(fake_openai))
    assert res.returncode == 2 and "max_task_cost" in res.stderr, res.stderr
    assert fake_openai.requests == []


def _solver(fake_openai, model: str = "solver") -> None:
    """An agent that writes the solution and finishes: two calls of 1100 tokens per solve."""
    usage = dict(prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)

    def script(req):
        if req.turn == 0:
            return tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION}), **usage)
        return tools(("finish", {"summary": "done"}), **usage)

    fake_openai.on(model, script)


def _three_priced_tasks(suite, fake_openai) -> list[str]:
    """Tasks t1-t3 and a priced solver that passes each in two calls; returns the run's agent options."""
    for name in ("t1", "t2", "t3"):
        make_task(suite, name)
    _priced(suite, "openai/solver")
    _solver(fake_openai)
    return ["--agent", "a=llm:openai/solver", "--reviewer", "tests"]


def test_resume_with_a_higher_cap_runs_what_the_budget_left_unstarted(cli, suite, tmp_path, fake_openai):
    # A nightly run stopped by its --max-cost is continued with more money: `resume RUN --max-cost`
    # runs the task runs the cap left unstarted, and pays for nothing it had finished.
    agent = _three_priced_tasks(suite, fake_openai)
    res = cli("run", str(suite), *agent, "--max-cost", "0.02", "--json", env=llm_env(fake_openai))
    by = {t["task"]: t for t in res.json()["tasks"]}
    assert by["t1"]["decision"] == "accepted", by["t1"]  # $0.024: one solve passes the cap
    for name in ("t2", "t3"):
        assert "not started: budget exhausted: --max-cost $0.02" in by[name]["error"]
    assert len(fake_openai.requests) == 2
    run = res.json()["run"]
    state = tmp_path / ".crossreview"

    # Without new caps the recorded one holds: nothing runs.
    same = cli("resume", run, "--json", env=llm_env(fake_openai))
    assert all("not started" in (t["error"] or "") for t in same.json()["tasks"] if t["task"] != "t1")
    assert len(fake_openai.requests) == 2

    # A higher cap: t2 and t3 run (2 calls each), t1 is kept, not solved or paid again.
    more = cli("resume", run, "--max-cost", "1", "--json", env=llm_env(fake_openai))
    assert more.returncode == 0, more.stderr
    assert {t["task"]: t["decision"] for t in more.json()["tasks"]} == {"t1": "accepted", "t2": "accepted",
                                                                         "t3": "accepted"}
    assert len(fake_openai.requests) == 6
    total, tokens, calls = _total(state)
    assert calls == 6 and total == pytest.approx(6 * PER_CALL)
    [journal] = ledger_rows(state, "SELECT SUM(cost) AS cost, COUNT(*) AS n FROM spend")
    assert journal["cost"] == pytest.approx(6 * PER_CALL)  # the spend journal: nothing paid twice
    # The run's config in the ledger says which caps its work was done under.
    [row] = ledger_rows(state, "SELECT config FROM runs WHERE id=?", (run,))
    config = json.loads(row["config"])
    assert config["limits"]["max_cost"] == 1
    [change] = config["limit_changes"]
    assert (change["before"]["max_cost"], change["after"]["max_cost"], change["by"]) == (0.02, 1, "resume")


def test_resume_can_lift_a_cap_altogether_with_none(cli, suite, tmp_path, fake_openai):
    # A higher cap was the only way on: a user who wants the run finished whatever it costs had to guess
    # a big number. `--max-cost none` lifts the cap (recorded as such); leaving the option out keeps it.
    agent = _three_priced_tasks(suite, fake_openai)
    run = cli("run", str(suite), *agent, "--max-cost", "0.02", "--max-task-tokens", "9000", "--json",
              env=llm_env(fake_openai)).json()["run"]
    assert len(fake_openai.requests) == 2  # t1 spent past the cap; t2 and t3 not started

    help_text = " ".join(cli("resume", "--help").stdout.split())
    assert "`none` lifts the cap" in help_text and "--max-cost USD|none" in help_text, help_text
    bad = cli("resume", run, "--max-cost", "lots")
    assert bad.returncode == 2 and "or `none` to lift the cap" in " ".join(bad.stderr.split()), bad.stderr

    res = cli("resume", run, "--max-cost", "none", "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    assert {t["task"]: t["decision"] for t in res.json()["tasks"]} == {"t1": "accepted", "t2": "accepted",
                                                                        "t3": "accepted"}
    assert len(fake_openai.requests) == 6
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT config FROM runs WHERE id=?", (run,))
    config = json.loads(row["config"])
    # Only the cap given is lifted: the task-token cap not named stays as recorded.
    assert (config["limits"]["max_cost"], config["limits"]["max_task_tokens"]) == (None, 9000)
    [change] = config["limit_changes"]
    assert (change["before"]["max_cost"], change["after"]["max_cost"]) == (0.02, None)

    # `run` takes the same word: it lifts a cap the suite's config sets.
    write(suite / "crossreview.toml", "max_cost = 0.02\n" + (suite / "crossreview.toml").read_text())
    capped = cli("run", str(suite), *agent, "--json", env=llm_env(fake_openai))
    assert sum(1 for t in capped.json()["tasks"] if t["stopped"]) == 2, capped.stdout
    free = cli("run", str(suite), *agent, "--max-cost", "NONE", "--json", env=llm_env(fake_openai))
    assert free.returncode == 0 and not any(t["stopped"] for t in free.json()["tasks"]), free.stdout


def test_decide_keeps_the_runs_caps_and_takes_the_ones_a_resume_recorded(cli, suite, tmp_path, fake_openai):
    # `decide --guide` runs the agents again in a new process: the run's recorded caps must hold there
    # too, and a cap a later `resume` changed (here: lifted) is the one a later decide uses. decide has
    # no cap options of its own; `resume RUN --max-task-tokens ...` is how a parked run's caps change.
    make_task(suite, "t1")
    make_task(suite, "t2")
    # Bounded even if the caps were lost: 6 model calls per solve at most.
    write(suite / "crossreview.toml", '[models."*"]\nmax_turns = 6\n')
    usage = dict(prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)

    def script(req):
        # The first round finishes at once (nothing written: the reviewers split, a human is asked);
        # the guided round lists files until something stops it.
        if "GUIDED" in req.text():
            return tools(("list_files", {}), **usage)
        return tools(("finish", {"summary": "nothing to do"}), **usage)

    for model in ("x", "y"):
        fake_openai.on(model, script)
    approve = approve_all_reviewer(tmp_path / "approve.py")
    parked = cli("run", str(suite), "--agent", "x=llm:openai/x", "--agent", "y=llm:openai/y", "--reviewer",
                 f"x={approve}", "--reviewer", "y=tests", "--max-task-tokens", "3000", "--json",
                 env=llm_env(fake_openai))
    assert parked.returncode == 3, parked.stderr
    run = parked.json()["run"]
    esc = {t["task"]: t["escalation"] for t in parked.json()["tasks"]}
    assert len(fake_openai.requests) == 4  # one finishing call per agent per task: 2200 tokens a task run

    first = cli("decide", esc["t1"], "--guide", "GUIDED: write calc.add", "--json", env=llm_env(fake_openai))
    t1 = first.json()
    assert "budget exhausted: --max-task-tokens 3000 for the task run reached" in t1["reason"], t1
    assert t1["stopped"] is not None
    guided = len(fake_openai.requests) - 4
    assert 1 <= guided <= 2, guided  # within one call per agent of the cap (2200 spent + 1100 each)

    # A resume of the parked run with the cap lifted runs nothing (t2 waits for a human) but records it.
    lifted = cli("resume", run, "--max-task-tokens", "none", "--json", env=llm_env(fake_openai))
    assert lifted.returncode in (1, 3), lifted.stderr
    sent = len(fake_openai.requests)
    second = cli("decide", esc["t2"], "--guide", "GUIDED: write calc.add", "--json", env=llm_env(fake_openai))
    t2 = second.json()
    assert "budget exhausted" not in t2["reason"] and t2["stopped"] is None, t2
    assert len(fake_openai.requests) - sent == 2 * 6  # each agent ran to its max_turns: no cap stopped it


def test_what_a_run_spent_counts_against_the_cap_a_resume_gives_it(cli, suite, tmp_path, fake_openai):
    for name in ("t1", "t2"):
        make_task(suite, name)
    _priced(suite, "openai/solver")
    _solver(fake_openai)
    agent = ["--agent", "a=llm:openai/solver", "--reviewer", "tests"]
    run = cli("run", str(suite), *agent, "--max-cost", "0.02", "--json", env=llm_env(fake_openai)).json()["run"]
    # $0.03 in all, $0.024 spent: t2 starts, its first call brings the run to $0.036, and the cap stops it there.
    res = cli("resume", run, "--max-cost", "0.03", "--json", env=llm_env(fake_openai))
    t2 = {t["task"]: t for t in res.json()["tasks"]}["t2"]
    assert "budget exhausted: --max-cost $0.03 for the suite run reached ($0.0360 spent)" in t2["reason"], t2
    assert len(fake_openai.requests) == 3


def test_a_resume_cannot_put_a_money_cap_on_a_model_without_a_price(cli, suite, tmp_path, fake_openai):
    make_task(suite, "t1")
    make_task(suite, "t2")
    _solver(fake_openai, "unpriced")
    res = cli("run", str(suite), "--agent", "a=llm:openai/unpriced", "--reviewer", "tests", "--max-tokens", "2000",
              "--json", env=llm_env(fake_openai))
    run = res.json()["run"]
    sent = len(fake_openai.requests)
    bad = cli("resume", run, "--max-cost", "1", env=llm_env(fake_openai))
    assert bad.returncode == 2
    err = " ".join(bad.stderr.split())
    assert "needs a price for every model" in err and "openai/unpriced" in err and "--max-tokens" in err, err
    assert len(fake_openai.requests) == sent
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT config FROM runs")
    assert '"max_cost": null' in row["config"] and "limit_changes" not in row["config"]
    # The token cap it can hold: raised, the unstarted task runs.
    ok = cli("resume", run, "--max-tokens", "100000", "--json", env=llm_env(fake_openai))
    assert {t["task"]: t["decision"] for t in ok.json()["tasks"]} == {"t1": "accepted", "t2": "accepted"}, ok.stderr


def test_decide_exits_1_when_the_cap_cut_the_guided_round_short_even_if_accepted(cli, suite, tmp_path, fake_openai):
    # decide had its own exit-code table: a guided round the cap cut short but accepted exited 0 while
    # `run` exits 1 for the same task run. One rule (runner.exit_code_for) for every face.
    make_task(suite, "t1")
    usage = dict(prompt_tokens=TOKENS_IN, completion_tokens=TOKENS_OUT)

    def script(req):
        # The first round finishes at once; the guided round lists files until the cap stops it.
        if "GUIDED" in req.text():
            return tools(("list_files", {}), **usage)
        return tools(("finish", {"summary": "nothing to do"}), **usage)

    fake_openai.on("x", script)
    # y (free: a command) writes the solution only when guided ({instruction} is the instruction file).
    # The first round splits (an approve-all reviewer approves x's empty attempt, the tests reject y's),
    # so a human is asked; in the guided round the free tests reviewer approves y's solution.
    guided = write(tmp_path / "guided.py", "import pathlib, sys\n"
                                           "if 'GUIDED' in pathlib.Path(sys.argv[1]).read_text():\n"
                                           f"    pathlib.Path('calc.py').write_text({GOOD_SOLUTION!r})\n")
    approve = approve_all_reviewer(tmp_path / "approve.py")
    parked = cli("run", str(suite), "--agent", "x=llm:openai/x", "--agent", f"y=command:{{python}} {guided} {{instruction}}",
                 "--reviewer", "x=tests", "--reviewer", f"y={approve}", "--max-task-tokens", "3000", "--json",
                 env=llm_env(fake_openai))
    assert parked.returncode == 3, parked.stdout + parked.stderr
    [esc] = [t["escalation"] for t in parked.json()["tasks"]]

    res = cli("decide", esc, "--guide", "GUIDED: write calc.add", "--json", env=llm_env(fake_openai))
    t1 = res.json()
    assert (t1["decision"], t1["winner"]) == ("accepted", "y"), json.dumps(t1, indent=1)
    assert t1["stopped"].startswith("budget exhausted: --max-task-tokens 3000"), t1
    assert res.returncode == 1, res.stderr  # as `run` exits for a task run the cap cut short
    help_text = " ".join(cli("decide", "--help").stdout.split())
    assert "a guided round a budget cap of the run cut short" in help_text, help_text


def test_runs_shows_a_run_whose_task_runs_a_cap_stopped_as_not_plainly_finished(cli, suite, tmp_path, fake_openai):
    # `crossreview runs` listed a run whose task runs the cap cut short as plain "finished", with only
    # its decisions ("1 accepted"): the one place runs are listed said nothing of the exit code 1.
    make_task(suite, "t1")
    _spender(fake_openai)
    capped = cli("run", str(suite), "--agent", "x=llm:openai/spender", "--agent", "y=oracle", "--reviewer", "tests",
                 "--max-task-tokens", "3000", "--json", env=llm_env(fake_openai))
    assert capped.returncode == 1 and capped.json()["tasks"][0]["stopped"], capped.stdout
    clean = cli("run", str(suite), "--agent", "y=oracle", "--agent", "z=oracle", "--json")
    assert clean.returncode == 0, clean.stderr

    by = {r["id"]: r for r in cli("runs", "--json").json()["runs"]}
    assert by[capped.json()["run"]]["stopped_by_cap"] == 1
    assert by[clean.json()["run"]]["stopped_by_cap"] == 0
    table = cli("runs").stdout
    [capped_line] = [line for line in table.splitlines() if capped.json()["run"] in line]
    [clean_line] = [line for line in table.splitlines() if clean.json()["run"] in line]
    assert "finished" in capped_line and "1 accepted" in capped_line, table
    # The cell's second line, under "finished".
    assert "1 task run stopped by a budget cap" in table.split(capped.json()["run"], 1)[1], table
    assert table.count("stopped by a budget cap") == 1, table
