"""Model settings from crossreview.toml / [tool.crossreview]: endpoints, key variables, prices, limits.

    temperature = 0.2

    [models."openai/fake"]          # settings for one litellm model name
    api_base = "http://127.0.0.1:8000/v1"
    api_key_env = "OPENAI_API_KEY"  # the NAME of the variable; keys never go in files
    input_cost_per_token = 0.000001
    output_cost_per_token = 0.000002
    timeout = 60                    # seconds per request
    max_attempts = 4                # tries per call on 429 / 5xx / timeouts

    [models."*"]                    # defaults for every model
    max_turns = 30

    [prices."ollama/qwen2.5-coder"] # a price for a model litellm does not know
    input_cost_per_token = 0.0
    output_cost_per_token = 0.0

A price applies to exactly the model it is written for; nothing is registered
with litellm, so it never leaks into another model's cost. The environment
variable CROSSREVIEW_API_BASE, when set, sends every model to that endpoint
(tests, CI, a local proxy).

Pure data: pydantic only, no litellm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

API_BASE_ENV = "CROSSREVIEW_API_BASE"

DEFAULT_TIMEOUT = 120.0
DEFAULT_MAX_ATTEMPTS = 4
DEFAULT_RETRY_BACKOFF = 1.0
DEFAULT_MAX_TURNS = 30
DEFAULT_MAX_SOLVE_TOKENS = 500_000

ResponseFormat = Literal["auto", "json_schema", "json_object", "none"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Price(_Strict):
    """USD per token, in and out."""

    input_cost_per_token: float = Field(ge=0, allow_inf_nan=False)
    output_cost_per_token: float = Field(ge=0, allow_inf_nan=False)

    def cost(self, tokens_in: int, tokens_out: int) -> float:
        return tokens_in * self.input_cost_per_token + tokens_out * self.output_cost_per_token


class ModelSettings(_Strict):
    """Settings for one model (or, under the name "*", defaults for all)."""

    api_base: str | None = Field(default=None, description="endpoint, e.g. http://127.0.0.1:8000/v1")
    api_key_env: str | None = Field(default=None, description="name of the environment variable holding the key")
    temperature: float | None = Field(default=None, ge=0, le=2)
    input_cost_per_token: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    output_cost_per_token: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    timeout: float | None = Field(default=None, gt=0, description="seconds per request")
    max_attempts: int | None = Field(default=None, ge=1, le=20, description="tries per call (429, 5xx, timeouts)")
    retry_backoff: float | None = Field(default=None, ge=0, description="first retry delay in seconds; doubles")
    max_turns: int | None = Field(default=None, ge=1, description="agent: model calls per solve")
    max_output_tokens: int | None = Field(default=None, ge=1, description="max_tokens of each reply")
    max_solve_tokens: int | None = Field(default=None, ge=1, description="agent: tokens per solve")
    response_format: ResponseFormat | None = Field(
        default=None, description="reviewer: json_schema | json_object | none | auto (ask litellm)"
    )

    @model_validator(mode="after")
    def _both_prices(self) -> "ModelSettings":
        if (self.input_cost_per_token is None) != (self.output_cost_per_token is None):
            raise ValueError("give both input_cost_per_token and output_cost_per_token, or neither")
        return self


@dataclass(frozen=True)
class ResolvedModel:
    """Everything a call to one model needs, after defaults, config and environment are merged."""

    name: str
    api_base: str | None
    api_key_env: str | None
    temperature: float | None
    price: Price | None
    timeout: float
    max_attempts: int
    retry_backoff: float
    max_turns: int
    max_output_tokens: int | None
    max_solve_tokens: int
    response_format: ResponseFormat


class LLMSettings(_Strict):
    """The model part of a suite's config, as it travels with a run (JSON-able, no secrets)."""

    models: dict[str, ModelSettings] = Field(default_factory=dict)
    prices: dict[str, Price] = Field(default_factory=dict)
    temperature: float | None = Field(default=None, ge=0, le=2)
    review_rules: list[str] = Field(default_factory=list)
    on_injection: Literal["reject", "concern"] = "reject"

    @model_validator(mode="after")
    def _no_default_price(self) -> "LLMSettings":
        star = self.models.get("*")
        if star is not None and star.input_cost_per_token is not None:
            raise ValueError('models."*" cannot set a price: a price belongs to one model (write it under its name)')
        return self

    @classmethod
    def from_any(cls, data: "LLMSettings | dict | None") -> "LLMSettings":
        if isinstance(data, LLMSettings):
            return data
        return cls.model_validate(data or {})

    def price(self, model: str) -> Price | None:
        """The configured price of exactly ``model``, if any."""
        m = self.models.get(model)
        if m is not None and m.input_cost_per_token is not None and m.output_cost_per_token is not None:
            return Price(input_cost_per_token=m.input_cost_per_token, output_cost_per_token=m.output_cost_per_token)
        return self.prices.get(model)

    def resolve(self, model: str) -> ResolvedModel:
        """The settings of ``model``: its own entry over the "*" entry over built-in defaults."""
        merged: dict = {}
        for entry in (self.models.get("*"), self.models.get(model)):
            if entry is not None:
                merged.update({k: v for k, v in entry.model_dump().items() if v is not None})
        api_base = os.environ.get(API_BASE_ENV) or merged.get("api_base")
        temperature = merged.get("temperature", self.temperature)
        return ResolvedModel(
            name=model,
            api_base=api_base,
            api_key_env=merged.get("api_key_env"),
            temperature=temperature,
            price=self.price(model),  # never the "*" entry's: a price is per model
            timeout=merged.get("timeout", DEFAULT_TIMEOUT),
            max_attempts=merged.get("max_attempts", DEFAULT_MAX_ATTEMPTS),
            retry_backoff=merged.get("retry_backoff", DEFAULT_RETRY_BACKOFF),
            max_turns=merged.get("max_turns", DEFAULT_MAX_TURNS),
            max_output_tokens=merged.get("max_output_tokens"),
            max_solve_tokens=merged.get("max_solve_tokens", DEFAULT_MAX_SOLVE_TOKENS),
            response_format=merged.get("response_format", "auto"),
        )

    def key_env_names(self) -> set[str]:
        """Every variable named as holding a key (their values are redacted wherever we write)."""
        return {m.api_key_env for m in self.models.values() if m.api_key_env}
