"""``llm:<model>`` reviewers: a structured verdict from a model, with the diff fenced as untrusted data.

- The model sees the task, the candidate's anonymous label, its test outcomes
  and its diff — never which agent or model wrote it.
- Structured output: a JSON-schema response format where the provider
  supports it (litellm says so, or ``response_format`` in the model's
  settings), else the prompt alone; then a strict parse, and one repair
  request if the reply does not parse. A reply that still does not parse is
  an abstention (never an approval), and so is a call that keeps failing.
- Injection hardening: before the call, the diff's added lines and file
  names, and the names and messages of the candidate's tests (its code wrote
  them), are scanned for text addressed to a reviewer (crossreview.llm.injection);
  every hit becomes a concern naming the line, whatever the model says, and
  (``on_injection = "reject"``, the default) an approval of such a candidate is
  turned into a rejection, so a human sees it if the tests pass.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..agents import ReviewRequest, load_json_object, validation_problems
from ..budget import BudgetExceeded
from ..hookspecs import hookimpl
from ..llm.client import ModelCallError, ModelClient, Reply, load_litellm, prewarm
from ..llm.injection import concerns as injection_concerns
from ..llm.injection import scan_diff, scan_test_outcomes, scan_text
from ..llm.prompts import MAX_REVIEW_DIFF_CHARS, json_schema_format, new_nonce, repair_message, review_messages
from ..llm.secrets import Redactor
from ..llm.settings import LLMSettings, ResolvedModel
from ..llm.transcript import Transcript
from ..models import AgentSpec, ReviewVerdictOutput, Usage
from ..sandbox import Stopping
from .llm_agent import model_of

_FENCED = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)


class ReviewAbstained(Exception):
    """The reviewer could not give a verdict; recorded as an abstention with what it spent."""

    def __init__(self, message: str, usage: Usage, calls: list[dict] | None = None):
        super().__init__(message)
        self.usage = usage
        self.calls = calls or []


class VerdictParseError(ValueError):
    """A model reply that is not the verdict JSON."""


class ModelVerdict(BaseModel):
    """Exactly what a model may answer (it may not, for one, report its own usage)."""

    model_config = ConfigDict(extra="forbid")

    verdict: Literal["approve", "reject"]
    confidence: float = Field(default=0.5, ge=0, le=1)
    concerns: list[str] = Field(default_factory=list)
    prefers: str | None = None


def parse_model_verdict(text: str | None) -> ModelVerdict:
    """Strictly parse a reply: one JSON object (optionally in a ``` fence) matching the schema."""
    if text is None or not text.strip():
        raise VerdictParseError("the reply was empty")
    body = text.strip()
    m = _FENCED.match(body)
    if m:
        body = m.group(1).strip()
    try:
        data = load_json_object(body)
    except ValueError as exc:
        raise VerdictParseError(str(exc)) from None
    try:
        return ModelVerdict.model_validate(data)
    except ValidationError as exc:
        raise VerdictParseError(f"the JSON does not match the verdict schema: {validation_problems(exc)}") from None


def _response_format(cfg: ResolvedModel) -> dict | None:
    mode = cfg.response_format
    if mode == "auto":
        lm = load_litellm()
        try:
            mode = "json_schema" if lm.supports_response_schema(model=cfg.name) else "none"
        except Exception:  # noqa: BLE001 - unknown model: fall back to the prompt alone
            mode = "none"
    if mode == "json_schema":
        return json_schema_format()
    if mode == "json_object":
        return {"type": "json_object"}
    return None


def _task_rules(request: ReviewRequest) -> list[str]:
    rules = request.task.metadata.get("review_rules") if isinstance(request.task.metadata, dict) else None
    if isinstance(rules, str):
        return [rules]
    if isinstance(rules, list):
        return [r for r in rules if isinstance(r, str)]
    return []


class LLMReviewer:
    """Reviews one anonymous candidate with one litellm model."""

    charges_budget = True

    def __init__(self, spec: AgentSpec):
        self.spec = spec
        self.model = model_of(spec, "reviewer for")
        prewarm()  # litellm takes seconds to import: start now, while the run sets up

    def warm_up(self) -> None:
        """Finish importing litellm before the review's clock starts: the import is not the reviewer's time."""
        load_litellm()

    def _ask(self, client: ModelClient, messages: list[dict], rf: dict | None, transcript: Transcript) -> tuple[Reply, dict | None]:
        try:
            return client.complete(messages, response_format=rf), rf
        except ModelCallError as exc:
            if rf is None or exc.status_code not in (400, 422):
                raise
            # The provider refused the response format: ask again with the prompt alone.
            transcript.add("response_format_refused", error=str(exc))
            return client.complete(messages), None

    def review(self, request: ReviewRequest) -> ReviewVerdictOutput:
        """Ask the model for a verdict; merge in the injection check's findings."""
        settings = LLMSettings.from_any(getattr(request, "llm", None))
        cfg = settings.resolve(self.model)
        redact = Redactor(settings.key_env_names() | ({cfg.api_key_env} if cfg.api_key_env else set()))
        label = request.candidate_label
        artifacts = getattr(request, "artifacts_dir", None)
        path = Path(artifacts) / f"review-{request.reviewer.name}-{label}.jsonl" if artifacts else None
        transcript = Transcript(path, redact)

        trusted = request.task.instruction_trusted
        found = {
            "the pull request's description": [] if trusted else scan_text(
                request.instruction, "(the pull request's description)"),
            "the diff": scan_diff(request.diff),
            "the test output": scan_test_outcomes((o.name, o.message) for o in request.tests.outcomes)
            if request.tests is not None else [],
        }
        findings = [f for fs in found.values() for f in fs]
        flagged = injection_concerns(findings)
        nonce = new_nonce()
        messages = review_messages(
            label=label,
            instruction=request.instruction,
            diff=request.diff,
            files_changed=request.files_changed,
            tests=request.tests,
            rules=[*settings.review_rules, *_task_rules(request)],
            flagged=[f"{f.path}:{f.line if f.line is not None else '(file name)'} ({f.pattern})" for f in findings[:20]],
            nonce=nonce,
            instruction_trusted=trusted,
        )
        # Test output can echo the environment: no key goes to the provider or the transcript.
        messages = redact.deep(messages)
        transcript.add("start", model=self.model, candidate=label, injection_findings=len(findings), messages=messages)
        client = ModelClient(cfg, budget=getattr(request, "budget", None), deadline=time.monotonic() + request.timeout,
                             redact=redact, on_event=transcript.on_call)
        try:
            rf = _response_format(cfg)
            reply, rf = self._ask(client, messages, rf, transcript)
            transcript.add("reply", content=reply.content)
            try:
                out = parse_model_verdict(reply.content)
            except VerdictParseError as exc:
                transcript.add("unparsable", error=str(exc))
                messages = [*messages, reply.as_message(), repair_message(str(exc), label)]
                reply, rf = self._ask(client, messages, rf, transcript)
                transcript.add("reply", content=reply.content, repair=True)
                try:
                    out = parse_model_verdict(reply.content)
                except VerdictParseError as exc2:
                    raise VerdictParseError(f"no usable verdict after one repair request: {exc2}") from None
        except Stopping:
            raise  # shutting down: resume re-runs this review
        except Exception as exc:  # noqa: BLE001 - ModelCallError, BudgetExceeded, VerdictParseError, or one nobody foresaw
            msg = redact(str(exc) if isinstance(exc, (ModelCallError, BudgetExceeded, VerdictParseError))
                         else f"the reviewer failed: {type(exc).__name__}: {exc}")
            transcript.add("abstain", error=msg, usage=client.usage.model_dump())
            raise ReviewAbstained(f"{msg} ({client.usage.calls} calls)", client.usage, client.calls) from None

        verdict, confidence = out.verdict, out.confidence
        concerns = [*flagged, *out.concerns]
        if findings and verdict == "approve" and settings.on_injection == "reject":
            verdict = "reject"
            places = [place for place, fs in found.items() if fs]
            verb = "contains" if len(places) == 1 else "contain"
            concerns.insert(0, f"approval withheld: {' and '.join(places)} {verb} text addressed to the reviewer; "
                               "a human should look")
        if len(request.diff) > MAX_REVIEW_DIFF_CHARS and verdict == "approve":
            # The model saw the diff's start only: whatever it approved, the rest (where a change meant
            # to slip through would sit) nobody has read.
            verdict = "reject"
            concerns.insert(0, f"approval withheld: the diff is {len(request.diff):,} characters and the reviewer was "
                               f"shown only the first {MAX_REVIEW_DIFF_CHARS:,}; a human should look")
        prefers = label if (verdict == "approve" and out.prefers == label) else None
        result = ReviewVerdictOutput(
            verdict=verdict,
            confidence=confidence,
            concerns=[redact(c) for c in concerns],
            prefers=prefers,
            usage=client.usage,
            calls=client.calls,
        )
        transcript.add("verdict", **result.model_dump(mode="json"))
        return result


@hookimpl
def crossreview_register_reviewers(register):
    register("llm", LLMReviewer, help="llm:<litellm model> a structured verdict from a model; the diff is fenced as untrusted")
