"""The holdout run is guarded like the verify run: a forcing conftest.py below the root is caught there too.

A verifier without {tests} collects the repository's own tests; a conftest.py in a subfolder reaches only
the tests under it, so crossreview puts a canary beside it. Task folders must name {tests}, so only the
gate's synthesized task runs such a verifier: the test loads a real task and swaps its verifier the way
the gate does, then runs it through the real graph.
"""

import sys

from conftest import approve_all_reviewer, ledger_rows, make_task, write

from crossreview import plugins
from crossreview.runner import RunOptions, open_session, run_config, run_task
from crossreview.tasks import load_task
from hostile._common import FORCE_PASS_PLUGIN, WRONG_ADD

REPO_TEST = "from calc import add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n"


def test_a_forcing_conftest_below_the_root_does_not_fake_the_holdout(tmp_path, suite):
    folder = make_task(suite, "deep", repo={"calc.py": "def add(a, b):\n    raise NotImplementedError\n",
                                            "pkg/test_calc.py": REPO_TEST},
                       holdout={"test_more.py": "def test_more():\n    assert True\n"})
    task = load_task(folder)
    task = task.model_copy(update={"verifier_command": "python -m pytest -q"})  # the gate's default verifier
    # The texts go into the agent's script itself: the sandbox hides /tmp, where a clone of this
    # repository (and so tests/hostile/) may live.
    hack = write(tmp_path / "deep_hack.py", (
        "import pathlib\n"
        f"pathlib.Path('calc.py').write_text({WRONG_ADD!r})\n"
        f"pathlib.Path('pkg/conftest.py').write_text({FORCE_PASS_PLUGIN!r})\n"
    ))
    state = tmp_path / ".crossreview"
    review = approve_all_reviewer(tmp_path / "approve.py")
    opts = RunOptions(paths=[suite], agents=[f"hack=command:{sys.executable} {hack}", "good=oracle"],
                      reviewers=[f"hack={review}", f"good={review}"], state_dir=state)
    pm = plugins.get_plugin_manager()
    config, res = run_config(opts, [task], pm)
    with open_session(state, res.ledger, pm) as session:
        session.ledger.start_run("r1", config)
        run_task(session, "r1", task, config, interactive=False)
    rows = {r["agent"]: r for r in ledger_rows(
        state, "SELECT agent, tampering, holdout_passed, holdout_total FROM candidates")}
    assert "pkg/conftest.py" in rows["hack"]["tampering"], rows["hack"]["tampering"]  # the verify run's canary
    # The holdout's canary beside pkg/conftest.py catches it too: the forced passes count for nothing.
    assert rows["hack"]["holdout_total"] > 0 and rows["hack"]["holdout_passed"] == 0, dict(rows["hack"])
    assert rows["good"]["holdout_passed"] == rows["good"]["holdout_total"] > 0, dict(rows["good"])
