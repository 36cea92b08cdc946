"""The pieces behind model agents and reviewers, in-process and without a model: budgets,
secret redaction, model settings and prices, and how litellm is imported."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import cli_env, write
from crossreview.budget import Budget, BudgetExceeded, Budgets
from crossreview.llm.secrets import Redactor
from crossreview.llm.settings import API_BASE_ENV, LLMSettings
from crossreview.tasks import ConfigError, load_suite_config


def test_budget_is_checked_before_work_and_charged_after():
    b = Budget("suite run", max_cost=0.05)
    for _ in range(4):
        b.check()
        b.charge(1100, 0.012)
    b.check()  # $0.048 < $0.05: one more call may start
    b.charge(1100, 0.012)
    with pytest.raises(BudgetExceeded, match=r"--max-cost \$0.05 for the suite run reached \(\$0.0600 spent\)"):
        b.check()
    b.charge(10, None)  # unknown cost is counted apart, never as 0
    assert b.unpriced_charges == 1 and b.cost == pytest.approx(0.06)


def test_task_budgets_count_against_the_suite():
    budgets = Budgets()
    limits = {"max_tokens": 3000, "max_task_tokens": 2000}
    t1 = budgets.task("r-1", "r-1/t1", limits)
    t2 = budgets.task("r-1", "r-1/t2", limits)
    t1.charge(1500, 0.0)
    assert t1.exceeded() is None
    t1.charge(600, 0.0)
    assert "--max-task-tokens 2000 for the task run reached" in t1.exceeded()
    assert t2.exceeded() is None
    t2.charge(1000, 0.0)
    assert "--max-tokens 3000 for the suite run reached (3100 tokens spent)" in t2.exceeded()
    assert budgets.task("r-1", "r-1/t1", limits) is t1 and budgets.suite("r-1", limits).tokens == 3100


def test_redactor_hides_key_like_and_named_variables():
    env = {"OPENAI_API_KEY": "sk-abcdef123456", "MY_LLM_CRED": "hunter2hunter2", "GITHUB_TOKEN": "ghp_0123456789",
           "SHORT_KEY": "abc", "HOME": "/home/someone"}
    r = Redactor(["MY_LLM_CRED"], environ=env)
    text = "key sk-abcdef123456, cred hunter2hunter2, gh ghp_0123456789, abc in /home/someone"
    assert r(text) == ("key (redacted $OPENAI_API_KEY), cred (redacted $MY_LLM_CRED), gh (redacted $GITHUB_TOKEN), "
                       "abc in /home/someone")
    assert r.deep({"a": ["sk-abcdef123456"]}) == {"a": ["(redacted $OPENAI_API_KEY)"]}


def test_model_settings_merge_and_prices_stay_with_their_model(monkeypatch):
    monkeypatch.delenv(API_BASE_ENV, raising=False)
    s = LLMSettings.model_validate({
        "temperature": 0.3,
        "models": {"*": {"max_turns": 12, "timeout": 30},
                   "openai/a": {"api_base": "http://127.0.0.1:1/v1", "timeout": 5,
                                "input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6}},
        "prices": {"ollama/b": {"input_cost_per_token": 0, "output_cost_per_token": 0}},
    })
    a, b, c = s.resolve("openai/a"), s.resolve("ollama/b"), s.resolve("openai/c")
    assert (a.timeout, a.max_turns, a.temperature, a.api_base) == (5, 12, 0.3, "http://127.0.0.1:1/v1")
    assert a.price.cost(1000, 100) == pytest.approx(0.0012)
    assert b.price.cost(10**6, 10**6) == 0  # free is a price; unknown is not
    assert c.price is None and c.api_base is None and c.timeout == 30
    monkeypatch.setenv(API_BASE_ENV, "http://127.0.0.1:2/v1")
    assert s.resolve("openai/c").api_base == "http://127.0.0.1:2/v1"  # the global override, for tests and CI
    with pytest.raises(ValueError, match="a price belongs to one model"):
        LLMSettings.model_validate({"models": {"*": {"input_cost_per_token": 1, "output_cost_per_token": 1}}})


def test_keys_cannot_be_written_in_the_config(tmp_path):
    (tmp_path / ".git").mkdir()
    write(tmp_path / "crossreview.toml", '[models."openai/x"]\napi_key = "sk-oops"\n')
    with pytest.raises(ConfigError, match="unknown key 'models.openai/x.api_key'; expected one of: api_base, api_key_env"):
        load_suite_config([tmp_path])


PROBE = """
import os, sys
from crossreview import plugins
from crossreview.default_plugins.llm_agent import LLMAgent
print("after plugins:", "litellm" in sys.modules)
from crossreview.llm.client import load_litellm
load_litellm()
print("cost map:", os.environ["LITELLM_LOCAL_MODEL_COST_MAP"])
"""


def test_litellm_is_imported_late_and_offline():
    env = cli_env()
    env.pop("LITELLM_LOCAL_MODEL_COST_MAP", None)  # crossreview sets it (a user's own value is kept)
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120).stdout
    assert "after plugins: False" in out and "cost map: True" in out, out


def test_prices_and_models_from_pyproject(tmp_path):
    (tmp_path / ".git").mkdir()
    write(tmp_path / "pyproject.toml", '[project]\nname = "x"\n\n[tool.crossreview]\nmax_cost = 2.5\n'
          '[tool.crossreview.prices."openai/in-house"]\ninput_cost_per_token = 0.000001\noutput_cost_per_token = 0.000003\n'
          '[tool.crossreview.models."openai/in-house"]\napi_base = "http://127.0.0.1:9/v1"\napi_key_env = "IN_HOUSE_KEY"\n')
    cfg = load_suite_config([tmp_path]).config
    s = LLMSettings(models=cfg.models, prices=cfg.prices)
    m = s.resolve("openai/in-house")
    assert cfg.max_cost == 2.5 and m.api_key_env == "IN_HOUSE_KEY" and m.price.cost(10, 10) == pytest.approx(4e-5)
    assert s.resolve("openai/other").price is None


def test_a_model_verdict_that_gives_a_key_twice_is_not_parsed():
    import pytest as _pytest

    from crossreview.default_plugins.llm_reviewer import VerdictParseError, parse_model_verdict

    with _pytest.raises(VerdictParseError, match="appears twice"):
        parse_model_verdict('{"verdict": "reject", "confidence": 0.9, "concerns": [], "verdict": "approve"}')
