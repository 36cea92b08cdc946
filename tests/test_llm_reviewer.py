"""`llm:<model>` reviewers end to end against a scripted OpenAI-compatible server on 127.0.0.1:
approve, reject, malformed JSON (repaired / abstains), timeouts, 429 then success, a server that
refuses the JSON-schema response format — and the
ledger's attempt counts equal the requests the server saw."""

from __future__ import annotations

import json
import time
import re
import threading

import pytest

from conftest import ledger_rows, make_task, write
from crossreview.default_plugins.llm_reviewer import VerdictParseError, parse_model_verdict
from crossreview.graph import candidate_label
from fake_openai import Reply, error, fake_openai, llm_env, text, verdict  # noqa: F401 - fixture

AGENTS = {  # agent -> the model its reviewer uses, and how that model behaves
    "alice": "approver",
    "bob": "rejecter",
    "carol": "repairable",
    "dave": "garbled",
    "erin": "slow",
    "frank": "flaky",
    "grace": "picky",
}
N = len(AGENTS) - 1  # reviews each reviewer makes


def _label_of(req) -> str:
    return re.search(r"labelled (candidate-[0-9a-f]{6})", req.messages[0]["content"]).group(1)


@pytest.mark.slow
def test_reviewer_behaviours_and_attempt_counts(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    write(suite / "crossreview.toml", "\n".join([
        '[models."*"]', "max_attempts = 2", "retry_backoff = 0.05",
        '[models."openai/slow"]', "timeout = 1",
        '[models."openai/approver"]', 'response_format = "json_schema"',
        '[models."openai/picky"]', 'response_format = "json_schema"',
        '[prices."openai/approver"]', "input_cost_per_token = 0.000001", "output_cost_per_token = 0.000002",
    ]) + "\n")
    fake_openai.on("approver", [verdict("approve", 0.9)])
    fake_openai.on("rejecter", [verdict("reject", 0.8, ("add() ignores floats",))])
    fake_openai.on("repairable", lambda req: (
        verdict("approve", 0.7) if "could not be used" in req.messages[-1]["content"]
        else text("Sure! I approve of this change, it looks great.")))
    fake_openai.on("garbled", [text('{"verdict": "approve", "confidence": 2}')])  # out of range, twice
    fake_openai.on("slow", [Reply(content="{}", delay=8)])
    seen: set[str] = set()
    lock = threading.Lock()

    def flaky(req):
        with lock:
            first = _label_of(req) not in seen
            seen.add(_label_of(req))
        return error(429, "rate limited", headers={"retry-after": "0"}) if first else verdict("approve", 0.6)

    fake_openai.on("flaky", flaky)
    fake_openai.on("picky", lambda req: error(400, "response_format is not supported by this server")
                   if "response_format" in req.body else verdict("approve", 0.5))
    # majority: bob's candidate has 4 approvals of 6 (alice, carol, frank, grace) and wins, so the run is
    # recorded in full (an escalated run waits for a human before it is).
    args = ["run", str(suite), "--json", "--policy", "majority"]
    for agent, model in AGENTS.items():
        args += ["--agent", f"{agent}=oracle", "--reviewer", f"{agent}=llm:openai/{model}"]
    res = cli(*args, env=llm_env(fake_openai))
    assert res.returncode == 0, res.stderr
    doc = res.json()
    [t] = doc["tasks"]
    assert (t["decision"], t["winner"]) == ("accepted", "bob")
    task_run = t["task_run"]

    rows = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM verdicts")
    by = {name: [r for r in rows if r["reviewer"] == name] for name in AGENTS}
    assert all(len(v) == N for v in by.values())  # everyone reviews every other candidate
    assert {r["verdict"] for r in by["alice"]} == {"approve"}
    assert {r["verdict"] for r in by["bob"]} == {"reject"}
    assert all("add() ignores floats" in json.loads(r["concerns"]) for r in by["bob"])
    assert {r["verdict"] for r in by["carol"]} == {"approve"} and {r["calls"] for r in by["carol"]} == {2}
    assert {r["verdict"] for r in by["dave"]} == {"abstain"} and {r["calls"] for r in by["dave"]} == {2}
    assert all("no usable verdict after one repair request" in r["error"] for r in by["dave"])
    assert {r["verdict"] for r in by["erin"]} == {"abstain"} and {r["calls"] for r in by["erin"]} == {2}
    assert all("gave up after 2 attempts" in r["error"] and "Timeout" in r["error"] for r in by["erin"])
    assert {r["verdict"] for r in by["frank"]} == {"approve"} and {r["calls"] for r in by["frank"]} == {2}
    assert {r["calls"] for r in by["alice"]} == {1} and {r["calls"] for r in by["bob"]} == {1}
    assert {r["verdict"] for r in by["grace"]} == {"approve"} and {r["calls"] for r in by["grace"]} == {2}

    # Every attempt the server saw is in the ledger, reviewer by reviewer, and nothing else is.
    # A request whose client already timed out may still sit in the server's accept queue
    # when the run ends (a loaded machine): let the server catch up, boundedly.
    deadline = time.monotonic() + 15
    while len(fake_openai.requests) < sum(r["calls"] for r in rows) and time.monotonic() < deadline:
        time.sleep(0.1)
    for agent, model in AGENTS.items():
        assert sum(r["calls"] for r in by[agent]) == len(fake_openai.requests_for(model)), agent
    assert sum(r["calls"] for r in rows) == len(fake_openai.requests)
    # ... and itemized, one row per request, failed attempts with their error.
    calls = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM calls")
    assert len(calls) == len(fake_openai.requests) and {c["phase"] for c in calls} == {"review"}
    assert sum(1 for c in calls if c["error"]) == N * 2 + N + N  # erin's timeouts, frank's 429s, grace's 400s
    # A timed-out call may have been billed: unknown. An error answer was not: 0.
    assert {c["cost"] for c in calls if c["error"] and "Timeout" in c["error"]} == {None}
    assert {c["cost"] for c in calls if c["error"] and "Timeout" not in c["error"]} == {0.0}
    assert {r["cost"] for r in by["erin"]} == {None}
    answered = [r for r in fake_openai.requests if r.usage and r.model != "slow"]  # slow answers after the timeout
    assert sorted(c["tokens_in"] for c in calls if not c["error"]) == sorted(r.usage[0] for r in answered)
    assert all(r.is_review for r in fake_openai.requests)  # oracle agents call no model

    # Tokens and cost: known price -> a cost; unknown price -> unknown, not 0.
    assert all(r["tokens_in"] > 0 and r["cost"] > 0 for r in by["alice"])
    assert all(r["tokens_in"] > 0 and r["cost"] is None for r in by["bob"])

    # Structured output where configured; the prompt alone (then a strict parse) elsewhere.
    assert all(r.body["response_format"]["type"] == "json_schema" for r in fake_openai.requests_for("approver"))
    assert all("response_format" not in r.body for r in fake_openai.requests_for("rejecter"))
    picky = fake_openai.requests_for("picky")  # refused once per review, then asked by prompt alone
    assert ["response_format" in r.body for r in sorted(picky, key=lambda r: (_label_of(r), r.at))] == [True, False] * N

    # Anonymized: no request names an agent or another model, and nobody reviews their own candidate.
    for agent, model in AGENTS.items():
        own = candidate_label(task_run, agent)
        for req in fake_openai.requests_for(model):
            blob = json.dumps(req.messages)
            assert own not in blob
            assert not any(re.search(rf"\b{name}\b", blob) for name in AGENTS), blob[:500]
            assert "oracle" not in blob and "openai/" not in blob
            nonce = re.search(r"<<<BEGIN UNTRUSTED ([0-9a-f]{16}) DIFF", req.messages[1]["content"]).group(1)
            body = req.messages[1]["content"]
            inside = body.split(f"<<<BEGIN UNTRUSTED {nonce} DIFF", 1)[1].split(f"<<<END UNTRUSTED {nonce}>>>", 1)[0]
            assert "+    return a + b" in inside and "+    return a + b" not in body.replace(inside, "")
    labels = {_label_of(r) for r in fake_openai.requests}
    assert labels == {candidate_label(task_run, a) for a in AGENTS}


def test_verdict_parse_is_strict():
    assert parse_model_verdict('{"verdict": "approve", "confidence": 0.8, "concerns": [], "prefers": null}').verdict == "approve"
    assert parse_model_verdict('```json\n{"verdict": "reject"}\n```').verdict == "reject"
    for bad, why in [
        ("", "empty"),
        ("I approve", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"verdict": "approve", "confidence": 1.5}', "confidence"),
        ('{"verdict": "maybe"}', "verdict"),
        ('{"verdict": "approve", "usage": {"cost": 0}}', "usage"),  # a model cannot report its own cost
        ('{"verdict": "approve"} and more', "not JSON"),
    ]:
        with pytest.raises(VerdictParseError, match=why):
            parse_model_verdict(bad)


@pytest.mark.slow
def test_a_lone_surrogate_in_a_reply_is_kept_as_text_not_an_abstention_that_loses_the_call(cli, suite, tmp_path, fake_openai):
    # JSON's "\ud800" decodes to a lone surrogate, which UTF-8 (transcripts, the ledger) refuses.
    make_task(suite)
    fake_openai.on("odd", [text('{"verdict": "reject", "confidence": 0.8, "concerns": ["off by one \\ud800 here"], '
                                '"prefers": null}')])
    # ... and here the reply's text itself holds one (then, asked again, a verdict).
    fake_openai.on("prose", [text("Looks \ud800 fine to me."), verdict("reject", 0.7, ("no \udfff tests",))])
    res = cli("run", str(suite), "--json", "--agent", "a=oracle", "--agent", "b=noop",
              "--reviewer", "a=llm:openai/odd", "--reviewer", "b=llm:openai/prose", env=llm_env(fake_openai))
    assert res.returncode == 3, res.stderr  # a passes its tests, b's reviewer rejects it: a human decides
    rows = {r["reviewer"]: r for r in ledger_rows(tmp_path / ".crossreview", "SELECT * FROM verdicts")}
    assert {r["verdict"] for r in rows.values()} == {"reject"}, [dict(r) for r in rows.values()]
    assert json.loads(rows["a"]["concerns"]) == ["off by one \ufffd here"]
    assert json.loads(rows["b"]["concerns"]) == ["no \ufffd tests"]
    assert (rows["a"]["calls"], rows["b"]["calls"]) == (1, 2) and len(fake_openai.requests) == 3
    assert all(r["tokens_in"] > 0 for r in rows.values())
    [log] = (tmp_path / ".crossreview" / "transcripts").rglob("review-b-*.jsonl")
    assert "Looks \ufffd fine to me." in log.read_text(encoding="utf-8")


@pytest.mark.slow
def test_a_reply_without_a_message_is_an_abstention_that_keeps_its_call(cli, suite, tmp_path, fake_openai):
    make_task(suite)
    fake_openai.on("hollow", [verdict("approve", prompt_tokens=400, completion_tokens=9,
                                      edit=lambda body: body.update(choices=[]))])
    res = cli("run", str(suite), "--json", "--agent", "a=oracle", "--agent", "b=noop",
              "--reviewer", "llm:openai/hollow", env=llm_env(fake_openai))
    assert res.returncode == 3, res.stderr
    rows = ledger_rows(tmp_path / ".crossreview", "SELECT * FROM verdicts")
    assert {r["verdict"] for r in rows} == {"abstain"}
    assert all("reply held no message" in r["error"] for r in rows), [r["error"] for r in rows]
    assert sum(r["calls"] for r in rows) == len(fake_openai.requests) == 2
    assert all((r["tokens_in"], r["tokens_out"]) == (400, 9) for r in rows)
