"""The figures of a real `crossreview run` on the example suite agree with what happened."""

from __future__ import annotations

import shutil
from datetime import datetime

import pytest

from conftest import EXAMPLE_TASKS, GOOD_SOLUTION, ledger_rows, make_task, write
from fake_openai import error, fake_openai, llm_env, tools  # noqa: F401 - fixture
from test_ledger_report import assert_self_contained, drawn_plots

pytestmark = pytest.mark.slow

ORDER = {"prepare": 0, "solve": 1, "verify": 2, "review": 3, "decide": 4, "holdout": 5, "record": 6}


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def check_timestamps(state) -> None:
    """Every recorded node ran in pipeline order, inside its task run, inside its suite run."""
    runs = {r["id"]: r for r in ledger_rows(state, "SELECT * FROM runs")}
    for tr in ledger_rows(state, "SELECT * FROM task_runs"):
        run = runs[tr["run"]]
        assert ts(run["started"]) <= ts(tr["started"])
        if tr["finished"]:
            assert ts(tr["started"]) <= ts(tr["finished"])
        events = ledger_rows(state, "SELECT * FROM events WHERE task_run=?", (tr["id"],))
        if tr["status"] != "done":
            # A parked task run is written as far as it got: up to decide (and holdout), no record.
            nodes = {e["node"] for e in events}
            assert {"prepare", "solve", "verify", "decide"} <= nodes and "record" not in nodes, nodes
            for e in events:
                assert ts(tr["started"]) <= ts(e["started"]) <= ts(e["finished"]), dict(e)
            continue
        assert events, tr["id"]
        for e in events:
            assert ts(tr["started"]) <= ts(e["started"]) <= ts(e["finished"]) <= ts(tr["finished"]), dict(e)
        by_node: dict[str, list] = {}
        for e in events:
            by_node.setdefault(e["node"], []).append(e)
        assert set(by_node) >= {"prepare", "solve", "verify", "decide", "record"}
        # Stages follow each other: everything of a stage ends before the next stage starts
        # (per agent for solve -> verify; all solves and verifies before any review).
        for a, b in (("prepare", "solve"), ("verify", "review"), ("review", "decide"), ("decide", "holdout"),
                     ("holdout", "record"), ("decide", "record")):
            if a in by_node and b in by_node:
                assert max(ts(e["finished"]) for e in by_node[a]) <= min(ts(e["started"]) for e in by_node[b]), (a, b)
        for s in by_node["solve"]:
            [v] = [v for v in by_node["verify"] if v["agent"] == s["agent"]]
            assert ts(s["finished"]) <= ts(v["started"])
        cands = ledger_rows(state, "SELECT * FROM candidates WHERE task_run=?", (tr["id"],))
        for c in cands:
            assert ts(c["started"]) <= ts(c["finished"])
            assert abs((ts(c["finished"]) - ts(c["started"])).total_seconds() - c["seconds"]) < 1e-3


def test_figures_of_a_real_run_match_what_happened(cli, tmp_path):
    shutil.copytree(EXAMPLE_TASKS, tmp_path / "tasks")
    res = cli("run", "tasks", "--json")
    assert res.returncode in (1, 3), res.stderr
    doc = res.json()
    tasks = doc["tasks"]
    decisions = [t["decision"] for t in tasks]
    state = tmp_path / ".crossreview"

    f = cli("stats", "--json").json()
    c = f["counts"]
    assert c["runs"] == 1 and c["task_runs"] == len(tasks) == 5
    assert (c["accepted"], c["rejected"], c["waiting"]) == (
        decisions.count("accepted"), decisions.count("rejected"), decisions.count("escalated"))
    assert c["by_human"] == {"accepted": 0, "rejected": 0}
    escalated = [t for t in tasks if t["decision"] == "escalated"]
    assert escalated, "the example suite has an escalation"
    assert f["interventions"]["escalated"] == len(escalated) == c["escalations"]
    assert f["interventions"]["rate"] == pytest.approx(len(escalated) / 5)
    assert [e["id"] for e in f["escalations"]] == [t["escalation"] for t in escalated]
    assert {r["key"] for r in f["interventions"]["by_suite"]} == {"tasks"}
    assert f["human_time"]["decided"] == 0 and f["human_time"]["waiting"] == len(escalated)
    # Reviews as run --json reported them (the parked one counts from its packet).
    per_agent = {a["agent"]: a for a in f["agents"]}
    approvals = sum(cd["approvals"] for t in tasks for cd in t["candidates"])
    reviews = sum(cd["reviews"] for t in tasks for cd in t["candidates"])
    assert sum(a["approvals"] for a in per_agent.values()) == approvals
    assert sum(a["reviews"] for a in per_agent.values()) == reviews
    wins = [t["winner"] for t in tasks if t["winner"]]
    assert sum(a["wins"] for a in per_agent.values()) == len(wins)
    # Offline agents: no tokens; cost known exactly where run --json knew it.
    assert f["cost"]["tokens"] == 0 and f["cost"]["calls"] == 0
    recorded = [t for t in tasks if t["decision"] != "escalated"]
    # Parked task runs are written as they park: every task run's spending is known.
    unknown = sum(1 for t in tasks for cd in t["candidates"] if cd["cost"] is None)
    assert f["cost"]["by_phase"]["solve"]["cost"]["unknown"] == unknown
    assert f["cost"]["task_runs_costed"] == len(tasks)
    assert f["cost"]["multiplier"]["tokens"] is None and "offline" in f["cost"]["multiplier"]["note"]
    assert f["cost"]["multiplier"]["agent_seconds"] > 1.0
    # Two agents solve side by side, then review side by side.
    par = f["parallel"]
    assert par["task_runs"] == len(recorded) and par["peak_agents_running"] == 2
    assert 0 < par["efficiency"] <= 1 and 1 <= par["mean_agents_running"] <= 2
    assert f["reviewer_agreement"]["fleiss"]["kappa"] is None  # two agents: one reviewer per candidate
    assert f["agreement_score"]["task_runs"] == 5
    check_timestamps(state)

    # A human looks at the escalation and decides it; the figures follow.
    esc = escalated[0]["escalation"]
    assert cli("show", esc, "--no-diff").returncode == 0
    res = cli("decide", esc, "--pick", "alice", "--by", "tester")
    assert res.returncode in (0, 1, 3), res.stderr
    f2 = cli("stats", "--json").json()
    [row] = ledger_rows(state, "SELECT * FROM escalations WHERE id=?", (esc,))
    minutes = (ts(row["decided"]) - ts(row["first_shown"])).total_seconds() / 60
    assert f2["human_time"]["decided"] == 1 and f2["human_time"]["median_minutes"] == pytest.approx(minutes)
    assert 0 <= minutes < 5
    assert f2["counts"]["by_human"]["accepted"] == 1 and f2["counts"]["waiting"] == len(escalated) - 1
    assert f2["interventions"]["escalated"] == len(escalated)  # still an intervention after the decision
    assert f2["cost"]["task_runs_costed"] == len(tasks)
    q = f2["quality"]
    assert q["task_runs_with_holdout"] == 5  # every example task has holdout/
    assert q["human_errors"]["of"] == 1
    assert q["escaped_defects"]["of"] == f2["counts"]["by_consensus"]["accepted"]
    check_timestamps(state)

    # The report of the real ledger draws every plot.
    res = cli("report", "-o", "report.html")
    assert res.returncode == 0, res.stderr
    html_file = tmp_path / "report.html"
    assert_self_contained(html_file.read_text())
    assert f'href="#packet-{esc}"' in html_file.read_text()
    plots = drawn_plots(html_file)
    for name in ("intervention_rate", "human_minutes", "cost_vs_interventions", "approval_matrix", "agents", "quality"):
        assert plots[name]["drawn"] > 0 and not plots[name]["empty"], plots[name]

    res = cli("export", "--format", "csv")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 6


def test_an_agent_whose_every_model_call_failed_is_not_the_cost_baseline(cli, suite, tmp_path, fake_openai):
    """b's provider answers HTTP 500 to everything: b makes no candidate and spends $0. The cost
    multiplier compares the run with the cheapest agent that solved every task run, a; counting b
    as the single agent (0 tokens, $0) left the multiplier undefined, or, had b's failing calls
    spent a little, made it huge."""
    for name in ("t1", "t2"):
        make_task(suite, name)
    prices = "".join(f'[prices."openai/{m}"]\ninput_cost_per_token = 0.00001\noutput_cost_per_token = 0.00002\n'
                     for m in ("solver", "down"))
    write(suite / "crossreview.toml", f'[models."*"]\nmax_attempts = 2\nretry_backoff = 0.01\n{prices}')

    def solver(req):
        if req.turn == 0:
            return tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION}),
                         prompt_tokens=1000, completion_tokens=100)
        return tools(("finish", {"summary": "done"}), prompt_tokens=1000, completion_tokens=100)

    fake_openai.on("solver", solver)
    fake_openai.on("down", [error(500, "boom")])
    res = cli("run", str(suite), "--agent", "a=llm:openai/solver", "--agent", "b=llm:openai/down",
              "--reviewer", "tests", "--json", env=llm_env(fake_openai))
    statuses = {(t["task"], c["agent"]): c["status"] for t in res.json()["tasks"] for c in t["candidates"]}
    assert statuses == {("t1", "a"): "ok", ("t1", "b"): "error", ("t2", "a"): "ok", ("t2", "b"): "error"}, res.stderr
    f = cli("stats", "--json").json()
    # Only a spent (2 solves of 2 calls, 1100 tokens and $0.012 each; the tests reviewer is free):
    # the whole run costs exactly what a alone did.
    m = f["cost"]["multiplier"]
    assert f["cost"]["tokens"] == 4400
    assert m["tokens"] == pytest.approx(1.0) and m["cost"] == pytest.approx(1.0), m
    assert f["runs"][0]["baseline_agent"] == "a"
