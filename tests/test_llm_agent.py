"""`llm:<model>` agents end to end: crossreview in a subprocess, litellm (unpatched) talking to a
real OpenAI-compatible server on 127.0.0.1 that replies from a script."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import EXAMPLE_TASKS, GOOD_SOLUTION, ledger_rows, make_task, write
from fake_openai import SECRET, error, fake_openai, llm_env, tools  # noqa: F401 - fixture

pytestmark = pytest.mark.slow

PRICE_IN, PRICE_OUT = 0.000002, 0.000008
FIZZ = (EXAMPLE_TASKS / "fizzbuzz" / "solution" / "fizzbuzz.py").read_text()
BUGGY = FIZZ.replace("return str(n)", "return str(n + 1)")


def priced_config(suite: Path, model: str = "openai/coder", extra: str = "") -> None:
    write(suite / "crossreview.toml", f'temperature = 0.25\n{extra}\n'
          f'[prices."{model}"]\ninput_cost_per_token = {PRICE_IN}\noutput_cost_per_token = {PRICE_OUT}\n')


def transcript(state: Path, run: str, task: str, agent: str) -> list[dict]:
    path = state / "transcripts" / run / task / f"{agent}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_scripted_session_solves_the_fizzbuzz_example(cli, suite, tmp_path, fake_openai):
    shutil.copytree(EXAMPLE_TASKS / "fizzbuzz", suite / "fizzbuzz")
    priced_config(suite)
    fake_openai.on("coder", [
        tools(("list_files", {})),
        tools(("read_file", {"path": "fizzbuzz.py"})),
        tools(("write_file", {"path": "fizzbuzz.py", "content": BUGGY})),
        tools(("edit_file", {"path": "fizzbuzz.py", "old_text": "return str(n + 1)", "new_text": "return str(n)"})),
        tools(("finish", {"summary": "implemented fizzbuzz"})),
    ])
    res = cli("run", str(suite), "--agent", "a=llm:openai/coder", "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    doc = res.json()
    [t] = doc["tasks"]
    [c] = t["candidates"]
    assert (t["decision"], t["winner"]) == ("accepted", "a")
    assert c["status"] == "ok" and c["tests_passed"] == c["tests_total"] == 16

    # The server saw five calls, each carrying the previous tool results.
    reqs = fake_openai.requests_for("coder")
    assert len(reqs) == 5
    assert [r.turn for r in reqs] == [0, 1, 2, 3, 4]
    assert "fizzbuzz.py" in reqs[1].messages[-1]["content"]  # list_files' answer
    assert "NotImplementedError" in reqs[2].messages[-1]["content"]  # read_file's answer
    assert reqs[4].messages[-1]["content"] == "edited fizzbuzz.py"
    assert {t["function"]["name"] for t in reqs[0].body["tools"]} == {
        "list_files", "read_file", "write_file", "edit_file", "finish"}  # no run_tests: tests are hidden
    assert reqs[0].headers["authorization"] == f"Bearer {SECRET}"
    assert all(r.body["temperature"] == 0.25 for r in reqs)  # from the config

    # The ledger holds the tokens the server reported and their cost at the configured price,
    # per call and in total.
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")
    calls = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM calls ORDER BY seq")
    assert [(c["phase"], c["agent"], c["model"]) for c in calls] == [("solve", "a", "openai/coder")] * 5
    assert [(c["tokens_in"], c["tokens_out"]) for c in calls] == [r.usage for r in reqs]
    for call in calls:
        assert call["cost"] == pytest.approx(call["tokens_in"] * PRICE_IN + call["tokens_out"] * PRICE_OUT)
    assert sum(call["tokens_in"] for call in calls) == row["tokens_in"]
    assert row["calls"] == 5
    assert row["tokens_in"] > 0 and row["tokens_out"] > 0
    assert row["cost"] == pytest.approx(row["tokens_in"] * PRICE_IN + row["tokens_out"] * PRICE_OUT)
    assert c["tokens"] == row["tokens_in"] + row["tokens_out"] and c["cost"] == pytest.approx(row["cost"])

    # The transcript is kept beside the run, with every call's tokens and cost.
    events = transcript(tmp_path / ".crossreview", doc["run"], "fizzbuzz", "a")
    calls = [e for e in events if e["kind"] == "call"]
    assert len(calls) == 5 and all(e["status"] == "ok" for e in calls)
    assert sum(e["tokens_in"] for e in calls) == row["tokens_in"]
    assert sum(e["cost"] for e in calls) == pytest.approx(row["cost"])
    assert [e["name"] for e in events if e["kind"] == "tool"] == [
        "list_files", "read_file", "write_file", "edit_file", "finish"]
    assert events[-1]["kind"] == "end" and events[-1]["status"] == "ok"


def test_agent_is_confined_to_its_worktree_and_runs_visible_tests(cli, suite, tmp_path, fake_openai):
    make_task(suite, toml='[verifier]\ntests_visible = true\n')
    outside = write(tmp_path / "outside.txt", "secret plans\n")
    priced_config(suite)
    attempts = [
        ("read_file", {"path": str(outside)}),
        ("read_file", {"path": "../../../../outside.txt"}),
        ("write_file", {"path": "../escape.py", "content": "x = 1\n"}),
        ("write_file", {"path": ".git/hooks/pre-commit", "content": "#!/bin/sh\n"}),
        ("read_file", {"path": "link/outside.txt"}),
        ("write_file", {"path": ".crossreview-tests/test_add.py", "content": "def test_ok(): pass\n"}),
        # A repository nested in the worktree: `git add -A` refuses one with no commit, and with it
        # the whole task run, every other agent's candidate included.
        ("write_file", {"path": "sub/.git/HEAD", "content": "ref: refs/heads/main\n"}),
    ]
    fake_openai.on("coder", [
        tools(*attempts),
        tools(("run_tests", {})),
        tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION})),
        tools(("run_tests", {})),
        tools(("finish", {"summary": "done"})),
    ])
    # A symlink in the repository pointing outside it must not be a way out either.
    (suite / "add" / "repo" / "link").symlink_to(tmp_path)
    res = cli("run", str(suite), "--agent", "a=llm:openai/coder", "--json", env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    [t] = res.json()["tasks"]
    assert t["decision"] == "accepted" and t["candidates"][0]["tests_passed"] == 2

    reqs = fake_openai.requests_for("coder")
    answers = [m["content"] for m in reqs[1].messages if m["role"] == "tool"]
    assert len(answers) == len(attempts)
    assert all(a.startswith("error:") for a in answers), answers
    assert "absolute paths are not allowed" in answers[0]
    assert "outside the repository" in answers[1] and "outside the repository" in answers[2]
    assert ".git is off limits" in answers[3]
    assert "outside the repository" in answers[4]
    assert "read-only" in answers[5]
    assert ".git is off limits" in answers[6]
    assert "secret plans" not in json.dumps([r.body for r in reqs])
    assert not (tmp_path / "escape.py").exists() and not (suite / "add" / "escape.py").exists()
    # run_tests ran the task's visible tests: failing before the fix, passing after.
    assert reqs[2].messages[-1]["content"].startswith("0/2 tests passed")
    assert reqs[4].messages[-1]["content"].startswith("2/2 tests passed")
    assert "run_tests" in {t["function"]["name"] for t in reqs[0].body["tools"]}


def test_failing_calls_and_the_turn_limit_stop_candidates_cleanly_and_the_run_goes_on(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    write(suite / "crossreview.toml", '[models."*"]\nmax_attempts = 3\nretry_backoff = 0.01\n'
                                      '[models."openai/looper"]\nmax_turns = 3\n')
    fake_openai.on("down", [error(503, "overloaded")])
    fake_openai.on("looper", [tools(("list_files", {}))])  # never finishes
    fake_openai.on("coder", [
        tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION})),
        tools(("finish", {"summary": "done"})),
    ])
    res = cli("run", str(suite), "--agent", "a=llm:openai/down", "--agent", "b=llm:openai/coder",
              "--agent", "c=llm:openai/looper", "--reviewer", "tests", "--json", env=llm_env(fake_openai))
    [t] = res.json()["tasks"]
    by = {c["agent"]: c for c in t["candidates"]}
    assert (by["a"]["status"], by["b"]["status"], by["c"]["status"]) == ("error", "ok", "error")
    assert t["decision"] == "accepted" and t["winner"] == "b", t
    rows = {r["agent"]: r for r in ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")}
    assert "gave up after 3 attempts" in rows["a"]["error"] and "HTTP 503" in rows["a"]["error"]
    assert rows["a"]["calls"] == 3 == len(fake_openai.requests_for("down"))  # every attempt counted
    assert rows["a"]["tokens_in"] == 0 and rows["a"]["cost"] == 0  # no reply, nothing billed
    assert rows["b"]["calls"] == 2 == len(fake_openai.requests_for("coder"))
    assert "stopped after 3 turns without calling finish" in rows["c"]["error"]
    assert rows["c"]["calls"] == 3 == len(fake_openai.requests_for("looper"))
    # An unpriced model's cost is unknown, not 0.
    assert rows["b"]["tokens_in"] > 0 and rows["b"]["cost"] is None and by["b"]["cost"] is None


def test_llm_spec_needs_a_model(cli, suite):
    make_task(suite)
    res = cli("run", str(suite), "--agent", "llm:")
    assert res.returncode == 2 and "'llm:' needs a model" in res.stderr


def test_odd_tool_arguments_are_tool_errors_not_the_end_of_the_session(cli, suite, tmp_path, fake_openai):
    # A model's arguments are untrusted: a line number in words, JSON's "\ud800" (a lone surrogate,
    # which no file, transcript or ledger row can hold), an unknown keyword. Each is answered as an
    # error the model can correct; the session goes on and its tokens are kept.
    make_task(suite)
    fake_openai.on("coder", [
        tools(("read_file", {"path": "calc.py", "start_line": "ten"}),
              ("read_file", {"path": "calc.py", "start_line": 1.5}),
              ("read_file", {"path": "calc.py", "start_line": "99999999999999999999999" * 300}),
              ("read_file", {"path": "calc.py", "\ud800": 1})),
        tools(("write_file", {"path": "notes\ud800.txt", "content": "x = '\udfff'\n"}),
              ("write_file", {"path": "calc.py", "content": GOOD_SOLUTION})),
        tools(("finish", {"summary": "done \ud800"})),
    ])
    res = cli("run", str(suite), "--agent", "a=llm:openai/coder", "--reviewer", "tests", "--json",
              env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    [t] = res.json()["tasks"]
    [c] = t["candidates"]
    assert (t["decision"], c["status"]) == ("accepted", "ok"), t
    reqs = fake_openai.requests_for("coder")
    assert len(reqs) == 3
    answers = [m["content"] for m in reqs[1].messages if m["role"] == "tool"]
    assert answers[0].startswith("error:") and "start_line" in answers[0] and "whole number" in answers[0]
    assert answers[1].startswith("error:") and "whole number" in answers[1]
    assert answers[2].startswith("error:")
    assert answers[3].startswith("error: bad arguments for read_file")
    written = [m["content"] for m in reqs[2].messages if m["role"] == "tool"][-2:]
    assert written[0].startswith("created notes\ufffd.txt"), written
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")
    assert row["calls"] == 3 and row["tokens_in"] == sum(r.usage[0] for r in reqs)
    events = transcript(tmp_path / ".crossreview", res.json()["run"], "add", "a")
    assert events[-1]["kind"] == "end" and events[-1]["summary"] == "done \ufffd"


def test_a_reply_without_a_message_is_a_clear_error_and_its_tokens_are_kept(cli, suite, tmp_path, fake_openai):
    # An OpenAI-compatible server that answers (and bills) but sends no choices: the candidate is an
    # error that says so, and the call it paid for is in the ledger, not lost with an IndexError.
    make_task(suite)
    priced_config(suite, "openai/hollow")
    fake_openai.on("hollow", [tools(("list_files", {})),
                              tools(("list_files", {}), prompt_tokens=300, completion_tokens=20,
                                    edit=lambda body: body.update(choices=[]))])
    res = cli("run", str(suite), "--agent", "a=llm:openai/hollow", "--reviewer", "tests", "--json",
              env=llm_env(fake_openai))
    assert res.returncode == 1, res.stderr
    [t] = res.json()["tasks"]
    [c] = t["candidates"]
    reqs = fake_openai.requests_for("hollow")
    assert len(reqs) == 2
    [row] = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM candidates")
    assert row["status"] == "error" and "reply held no message" in row["error"], row["error"]
    assert "IndexError" not in row["error"]
    assert row["calls"] == 2 and row["tokens_in"] == reqs[0].usage[0] + 300 and row["tokens_out"] == reqs[0].usage[1] + 20
    assert row["cost"] == pytest.approx(row["tokens_in"] * PRICE_IN + row["tokens_out"] * PRICE_OUT)
    assert c["tokens"] == row["tokens_in"] + row["tokens_out"] and c["cost"] == pytest.approx(row["cost"])
    calls = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM calls ORDER BY seq")
    assert [(k["tokens_in"], k["tokens_out"]) for k in calls] == [r.usage for r in reqs]


def test_an_answer_litellm_cannot_read_is_of_unknown_cost_not_free(cli, suite, tmp_path, fake_openai):
    # HTTP 200 with a body litellm cannot read (here: no `choices` key at all) reaches us as a
    # synthesized "HTTP 500". The provider answered, and billed, each attempt: unknown, never $0.
    # A real 500 answer bills nothing, and stays $0.
    make_task(suite)
    priced_config(suite, "openai/unreadable", extra='[models."*"]\nmax_attempts = 2\nretry_backoff = 0.01\n')
    with open(suite / "crossreview.toml", "a") as fh:
        fh.write(f'[prices."openai/down"]\ninput_cost_per_token = {PRICE_IN}\noutput_cost_per_token = {PRICE_OUT}\n')
    fake_openai.on("unreadable", [tools(("list_files", {}), prompt_tokens=1000, completion_tokens=100,
                                        edit=lambda body: body.pop("choices"))])
    fake_openai.on("down", [error(500, "boom")])
    res = cli("run", str(suite), "--agent", "a=llm:openai/unreadable", "--agent", "b=llm:openai/down",
              "--reviewer", "tests", "--json", env=llm_env(fake_openai))
    assert res.returncode == 1, res.stderr
    by = {c["agent"]: c for c in res.json()["tasks"][0]["candidates"]}
    assert len(fake_openai.requests_for("unreadable")) == 2 == len(fake_openai.requests_for("down"))
    calls = ledger_rows(tmp_path / ".crossreview", "SELECT agent, cost FROM calls")
    assert [c["cost"] for c in calls if c["agent"] == "a"] == [None, None]
    assert [c["cost"] for c in calls if c["agent"] == "b"] == [0.0, 0.0]
    assert by["a"]["status"] == "error" and by["a"]["cost"] is None
    assert by["b"]["status"] == "error" and by["b"]["cost"] == 0.0
    assert res.json()["tasks"][0]["cost"] is None


def test_reading_or_editing_a_huge_file_reads_a_bounded_part_of_it(tmp_path):
    # With visible tests the agent's own code runs (run_tests), and may leave a file of many gigabytes
    # in the worktree (a sparse one costs nothing): read_file and edit_file must not load it whole, or
    # crossreview itself runs out of memory. Run under an address-space limit, in a child process.
    (tmp_path / "wt").mkdir()
    with open(tmp_path / "wt" / "huge.txt", "wb") as fh:
        fh.write(b"line one\n" + b"".join(b"line %d\n" % i for i in range(2, 3000)))
        fh.truncate(8 * 1024**3)  # 8 GiB, sparse
    script = write(tmp_path / "probe.py", f"""
import resource, sys
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
from crossreview.default_plugins.llm_agent import Toolbox
from crossreview.llm.secrets import Redactor
tools = Toolbox(Path({str(tmp_path / "wt")!r}), None, 0.0, Redactor())
print(tools.read_file("huge.txt"))
print(tools.read_file("huge.txt", start_line=2, end_line=2), end="")
tools.edit_file("huge.txt", "line one", "line 1")
""")
    import subprocess
    import sys
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert "MemoryError" not in proc.stderr, proc.stderr[-2000:]
    first, ranged = proc.stdout.split("can be read)\n", 1)
    assert first.startswith("line one\nline 2\n"), proc.stdout[:300]  # its start is text
    assert first.endswith("(the file is 8589934592 bytes; only its first 16000000 ")
    assert ranged.startswith("line 2\n\n... (the file is 8589934592 bytes")
    assert "ToolError: huge.txt: too large to edit" in proc.stderr, proc.stderr[-2000:]
