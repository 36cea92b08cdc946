"""API keys come from the environment only and never land in anything crossreview writes —
not even when the provider quotes the key back in an error message, as OpenAI's does."""

from __future__ import annotations

import pytest

from conftest import GOOD_SOLUTION, make_task
from fake_openai import SECRET, error, fake_openai, llm_env, tools, verdict  # noqa: F401 - fixture

pytestmark = pytest.mark.slow


def test_a_secret_key_never_reaches_a_file(cli, suite, tmp_path, fake_openai):
    make_task(suite, toml="[verifier]\ntests_visible = true\n")

    def leaky(req):  # the provider rejects the key and quotes it, like api.openai.com does
        key = req.headers["authorization"].removeprefix("Bearer ")
        return error(401, f"Incorrect API key provided: {key}. You can find your API key at ...")

    fake_openai.on("leaky", leaky)
    fake_openai.on("coder", lambda req: verdict("approve") if req.is_review else [
        tools(("write_file", {"path": "calc.py", "content": GOOD_SOLUTION})),
        tools(("run_tests", {})),
        tools(("finish", {"summary": "done"})),
    ][min(req.turn, 2)])
    env = llm_env(fake_openai, OTHER_SERVICE_TOKEN="tok-" + SECRET[::-1])
    res = cli("run", str(suite), "--agent", "a=llm:openai/leaky", "--agent", "b=llm:openai/coder", "--json", env=env)
    assert res.returncode in (1, 3), res.stderr
    # The key was really used ...
    assert {r.headers["authorization"] for r in fake_openai.requests} == {f"Bearer {SECRET}"}
    [t] = res.json()["tasks"]
    by = {c["agent"]: c for c in t["candidates"]}
    assert by["a"]["status"] == "error" and by["b"]["status"] == "ok"
    # ... and the error that quoted it was kept, redacted: in the transcript and in the ledger.
    [a_log] = (tmp_path / ".crossreview" / "transcripts").rglob("a.jsonl")
    assert "Incorrect API key provided: (redacted $OPENAI_API_KEY)" in a_log.read_text()
    assert "(redacted $OPENAI_API_KEY)" in res.stderr  # a's error, as the progress line shows it
    shown = cli("inbox", "--json", env=env)
    outputs = [res.stdout, res.stderr, shown.stdout, shown.stderr]
    if t["escalation"]:
        packet = cli("show", t["escalation"], "--json", env=env)
        outputs += [packet.stdout, packet.stderr]
        assert "(redacted $OPENAI_API_KEY)" in packet.stdout  # the abstention's error, redacted
        human = cli("show", t["escalation"], env=env)
        assert human.returncode == 0 and "(redacted $OPENAI_API_KEY)" in human.stdout
        outputs += [human.stdout, human.stderr]

    secrets = [SECRET.encode(), env["OTHER_SERVICE_TOKEN"].encode()]
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p.parent != tmp_path / "suite"]
    assert any(p.suffix == ".jsonl" for p in written)  # transcripts were written
    assert any(p.name == "ledger.db" for p in written)
    for path in written:
        data = path.read_bytes()
        for s in secrets:
            assert s not in data, f"{s[:12]!r}... leaked into {path}"
    for out in outputs:
        assert SECRET not in out and env["OTHER_SERVICE_TOKEN"] not in out
