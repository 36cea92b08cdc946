"""Model agents killed mid-call and resumed: what the ledger says they cost and how long they worked.

crossreview runs in a subprocess and talks, through litellm, to the scripted server of
tests/fake_openai.py; the test holds a reply, SIGKILLs crossreview while the call waits
for it, and resumes the run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from conftest import GOOD_SOLUTION, approve_all_reviewer, cli_env, ledger_rows, make_task, wait_for, write
from fake_openai import fake_openai, llm_env, tools  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

HELD = 120.0
"""How long the server holds the reply crossreview is killed waiting for (the kill comes long before)."""


def _solver(fake_openai, model: str, hold_first: bool) -> None:
    """An agent that writes the solution, then finishes; with ``hold_first``, the server's first
    answer (of the whole test) is held for HELD seconds."""
    held = {"done": not hold_first}

    def script(req):
        if not held["done"]:
            held["done"] = True
            return tools(("list_files", {}), delay=HELD)
        if req.turn == 0:
            return tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION}))
        return tools(("finish", {"summary": "done"}))

    fake_openai.on(model, script)


def _run_killed_in_flight(suite: Path, cwd: Path, fake_openai, model: str, agents: list[str]) -> str:
    """Start `crossreview run`, SIGKILL it once the server holds a request for ``model``, and return the run id."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crossreview", "run", str(suite), "--json", *agents],
        cwd=cwd, env=cli_env(llm_env(fake_openai)), stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: fake_openai.requests_for(model) or proc.poll() is not None, what="the first model call")
        assert proc.poll() is None, "crossreview ended before its model call was answered"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    [run] = ledger_rows(cwd / ".crossreview", "SELECT id FROM runs")
    return run["id"]


def _first_request_after(fake_openai, model: str, started: str) -> float:
    """Seconds from ``started`` (a candidate's start) to the first request the server got after it."""
    t0 = datetime.fromisoformat(started).timestamp()
    return min(r.at for r in fake_openai.requests_for(model) if r.at >= t0) - t0


def test_a_resumed_solve_counts_the_agents_time_not_loading_its_model_library(cli, suite, tmp_path, fake_openai):
    """`run` starts importing litellm (seconds) while it sets up; `resume` built its agents only in the
    solve, so the resumed solve waited for the import on its first model call and counted it as the
    agent's time: about 3 s more than a fresh solve, in agent-seconds and parallel efficiency."""
    make_task(suite)
    _solver(fake_openai, "fresh", hold_first=False)
    fresh_dir = tmp_path / "fresh"
    fresh_dir.mkdir()
    fresh = cli("run", str(suite), "--agent", "a=llm:openai/fresh", "--json", cwd=fresh_dir,
                env=llm_env(fake_openai))
    assert fresh.returncode == 0, fresh.stderr
    [fresh_cand] = ledger_rows(fresh_dir / ".crossreview", "SELECT started, seconds FROM candidates")
    fresh_gap = _first_request_after(fake_openai, "fresh", fresh_cand["started"])

    _solver(fake_openai, "coder", hold_first=True)
    run = _run_killed_in_flight(suite, tmp_path, fake_openai, "coder", ["--agent", "a=llm:openai/coder"])
    res = cli("resume", run, "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    [cand] = ledger_rows(tmp_path / ".crossreview", "SELECT started, finished, seconds FROM candidates")
    # From the solve's start to its first request the agent only lists the files and builds its
    # prompt. Against the same span of a fresh run on this machine (so a slow machine slows both),
    # the bug added the whole litellm import (about 3 s); 1.5 s of slack is far below that.
    gap = _first_request_after(fake_openai, "coder", cand["started"])
    assert gap < fresh_gap + 1.5, (gap, fresh_gap)
    assert cand["seconds"] < fresh_cand["seconds"] + 1.5, (cand["seconds"], fresh_cand["seconds"])
    # The solve node's interval (busy-seconds, parallel efficiency) is the same span.
    [event] = ledger_rows(tmp_path / ".crossreview", "SELECT started, finished FROM events WHERE node='solve'")
    assert (event["started"], event["finished"]) == (cand["started"], cand["finished"])
    # Nor does a model call's own time hold the import.
    first_call = ledger_rows(tmp_path / ".crossreview", "SELECT seconds FROM calls ORDER BY started LIMIT 1")[0]
    fresh_call = ledger_rows(fresh_dir / ".crossreview", "SELECT seconds FROM calls ORDER BY started LIMIT 1")[0]
    assert first_call["seconds"] < fresh_call["seconds"] + 1.5, (first_call["seconds"], fresh_call["seconds"])


# --- resume and decide --guide start loading litellm while they set up, as run does ---------------

REPO = Path(__file__).resolve().parent.parent

_PROBE = """
import os, sys, threading
from crossreview.hookspecs import hookimpl

@hookimpl
def crossreview_task_started(task, task_run):
    # Whether litellm's import had begun when the task run started, before any solve: the
    # module is in sys.modules from the import's first line, and until then the thread that
    # will import it is alive (so a slow machine cannot make this flaky).
    begun = "litellm" in sys.modules or any(t.name == "crossreview-litellm-import" for t in threading.enumerate())
    with open(os.environ["PROBE_OUT"], "a") as out:
        out.write(f"{task_run} {int(begun)}\\n")
"""


def _probe_env(root: Path, out: Path, fake_openai) -> dict[str, str]:
    """The environment of a crossreview child with an installed plugin noting, as each task run starts,
    whether litellm's import had begun (one ``TASK_RUN 0|1`` line per task run in ``out``)."""
    site = root / "site-probe"
    info = site / "crossreview_probe-0.1.dist-info"
    info.mkdir(parents=True)
    (site / "crossreview_probe.py").write_text(_PROBE)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: crossreview-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[crossreview]\nprobe = crossreview_probe\n")
    return llm_env(fake_openai, PROBE_OUT=str(out), PYTHONPATH=os.pathsep.join([str(site), str(REPO)]))


def _import_begun(out: Path) -> list[bool]:
    return [line.split()[1] == "1" for line in out.read_text().splitlines()]


def test_resume_starts_importing_litellm_while_it_sets_up_before_the_first_solve(cli, suite, tmp_path, fake_openai):
    """`run` builds its agents while it sets up, which starts litellm's import (seconds) in the
    background; `resume` built them only in the solve, whose first model call then waited for all of it."""
    make_task(suite)
    _solver(fake_openai, "coder", hold_first=True)
    run = _run_killed_in_flight(suite, tmp_path, fake_openai, "coder", ["--agent", "a=llm:openai/coder"])
    out = tmp_path / "probe.txt"
    res = cli("resume", run, "--json", env=_probe_env(tmp_path, out, fake_openai))
    assert res.returncode == 0, res.stderr
    assert res.json()["tasks"][0]["decision"] == "accepted"
    assert _import_begun(out) == [True]


def test_decide_guide_starts_importing_litellm_before_the_guided_round(cli, suite, tmp_path, fake_openai):
    """A guided round solves again in the deciding process: the same set-up as resume."""
    make_task(suite)
    for model in ("x", "y"):
        fake_openai.on(model, lambda req: tools(("finish", {"summary": "nothing to do"})))
    approve = approve_all_reviewer(tmp_path / "approve.py")
    parked = cli("run", str(suite), "--agent", "x=llm:openai/x", "--agent", "y=llm:openai/y",
                 "--reviewer", f"x={approve}", "--reviewer", "y=tests", "--json", env=llm_env(fake_openai))
    assert parked.returncode == 3, parked.stderr
    esc = parked.json()["tasks"][0]["escalation"]
    out = tmp_path / "probe.txt"
    res = cli("decide", esc, "--guide", "write calc.add", "--json", env=_probe_env(tmp_path, out, fake_openai))
    assert res.returncode == 3, res.stderr  # the guided round changes nothing either: parked again
    assert _import_begun(out) == [True]


# --- a model call killed in flight is spend of unknown cost, never nothing -----------------------

PRICE_IN, PRICE_OUT = 0.000002, 0.000008


def _priced(suite: Path, *models: str) -> None:
    from conftest import write

    write(suite / "crossreview.toml", '[models."*"]\nmax_attempts = 3\nretry_backoff = 0.01\n' + "".join(
        f'[prices."openai/{m}"]\ninput_cost_per_token = {PRICE_IN}\noutput_cost_per_token = {PRICE_OUT}\n'
        for m in models))


def _spend(state: Path) -> list:
    return ledger_rows(state, "SELECT task_run, tokens, cost, call_id, model, in_flight FROM spend ORDER BY at")


def test_a_model_call_killed_in_flight_counts_as_work_cut_short_of_unknown_cost(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    _priced(suite, "coder")
    _solver(fake_openai, "coder", hold_first=True)
    state = tmp_path / ".crossreview"
    run = _run_killed_in_flight(suite, tmp_path, fake_openai, "coder", ["--agent", "a=llm:openai/coder"])
    # The server holds the request: the journal has it as sent, its cost unknown.
    [row] = _spend(state)
    assert (row["in_flight"], row["tokens"], row["cost"], row["model"]) == (1, 0, None, "openai/coder")
    before = cli("stats", "--json").json()["cost"]["cut_short"]
    assert (before["calls_in_flight"], before["cost"]) == (1, None)

    res = cli("resume", run, "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    doc = res.json()
    assert doc["tasks"][0]["decision"] == "accepted"
    assert any("1 model call was in flight" in w for w in doc["warnings"]), doc["warnings"]
    rows = _spend(state)
    # The killed call stays in flight; the resumed session's calls were each journaled and resolved.
    assert [r["in_flight"] for r in rows] == [1, 0, 0]
    assert all(r["tokens"] > 0 and r["cost"] > 0 for r in rows[1:])
    assert len({r["call_id"] for r in rows}) == 3
    figures = cli("stats", "--json").json()["cost"]
    assert figures["cut_short"] == {"task_runs": 1, "tokens": 0, "cost": None, "cost_known": 0.0,
                                    "calls_in_flight": 1}
    text = cli("stats").stdout
    assert "spent on work cut short" in text and "1 model call killed in flight" in text
    assert "money $0.0000 in" not in text  # unknown is never shown as $0

    # A resumed run starts its budget with the call as spend of unknown cost.
    from crossreview.runner import _seed_budget, open_session

    with open_session(state, state / "ledger.db") as session:
        assert _seed_budget(session, run, {"limits": {"max_cost": 1.0}}) == 1
        assert session.context.budgets.suite(run, {"max_cost": 1.0}).unpriced_charges == 1


def test_a_run_whose_calls_all_ended_has_nothing_in_flight(cli, suite, tmp_path, fake_openai):
    """Every attempt is journaled, retries and reviews included, and every one is resolved: a 429
    (the provider billed nothing) as $0, a reply with what it cost."""
    from fake_openai import error, verdict

    make_task(suite)
    _priced(suite, "x", "y")
    for model in ("x", "y"):
        first = {"sent": False}

        def script(req, first=first):
            if req.is_review:
                return verdict("approve")
            if not first["sent"]:
                first["sent"] = True
                return error(429, "slow down")
            if req.turn == 0:
                return tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION}))
            return tools(("finish", {"summary": "done"}))

        fake_openai.on(model, script)
    res = cli("run", str(suite), "--agent", "a=llm:openai/x", "--agent", "b=llm:openai/y", "--json",
              env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    state = tmp_path / ".crossreview"
    rows = _spend(state)
    assert len(rows) == len(fake_openai.requests) == 8  # per agent: a 429, two solve calls, one review
    assert [r["in_flight"] for r in rows] == [0] * 8
    assert sorted(r["cost"] for r in rows)[:2] == [0.0, 0.0]  # the two 429s
    calls = ledger_rows(state, "SELECT SUM(cost) AS cost, COUNT(*) AS n FROM calls")[0]
    assert calls["n"] == 8 and sum(r["cost"] for r in rows) == pytest.approx(calls["cost"])
    figures = cli("stats", "--json").json()["cost"]
    assert figures["cut_short"] == {"task_runs": 0, "tokens": 0, "cost": 0.0, "cost_known": 0.0,
                                    "calls_in_flight": 0}
    assert "spent on work cut short" not in cli("stats").stdout


# --- a call is journaled as in flight when it is about to be sent, not seconds before ------------

_FIRST_CALL = """
import json, os, sys
from crossreview.llm.client import ModelClient, load_litellm
from crossreview.llm.settings import LLMSettings

load_litellm()  # what the background import (prewarm) does before any call is journaled
before = set(sys.modules)
client = ModelClient(LLMSettings().resolve("openai/coder"))
client.complete([{"role": "user", "content": "hello"}],
                tools=[{"type": "function", "function": {"name": "finish", "parameters": {"type": "object",
                                                                                        "properties": {}}}}])
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_first_model_call_imports_nothing_heavy_between_journal_and_send(tmp_path, fake_openai):
    """A call is journaled as in flight (spend of unknown cost if the process dies) just before it is
    sent. litellm's first completion imported some 500 modules (the OpenAI SDK's resources, litellm's
    proxy types: 1.5 s here, far more with a dozen agents starting at once) after that row was
    written: a run killed in those seconds was left with calls "in flight" the provider never saw,
    and its cost unknown for good. The import done in the background (load_litellm) takes them."""
    fake_openai.on("coder", [tools(("finish", {"summary": "done"}))])
    script = write(tmp_path / "first_call.py", _FIRST_CALL)
    res = subprocess.run([sys.executable, str(script)], env=cli_env(llm_env(fake_openai)), cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(fake_openai.requests) == 1
    imported = json.loads(res.stdout.strip().splitlines()[-1])
    heavy = [m for m in imported if m.startswith(("openai.resources", "litellm.proxy", "httpcore", "h2."))]
    assert not heavy, heavy[:20]
    assert len(imported) < 60, imported
