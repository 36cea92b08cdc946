"""Presets for the agent CLIs people already use: ``claude-code``, ``codex``, ``aider``, ``gemini``.

Each is an agent kind, optionally with a model: ``--agent claude-code``,
``--agent fast=codex:o4-mini``, ``--agent aider:openai/gpt-4o``. It runs the
CLI non-interactively in the candidate's worktree, the task's instruction as
its prompt, exactly as a ``command:`` agent would (same sandbox, same
timeout), and reads what the CLI reports it spent from its output:

    claude-code  claude -p --output-format json --permission-mode acceptEdits [--model M]   < instruction
    codex        codex exec --json --full-auto --skip-git-repo-check [--model M] -           < instruction
    aider        aider --yes-always --no-auto-commits --no-dirty-commits --no-gitignore
                       --no-check-update --no-show-model-warnings --no-pretty --no-stream
                       [--model M] --message-file <instruction>
    gemini       gemini --output-format json --yolo [--model M] --prompt "<instruction>"

Cost comes from the CLI where it prints one (Claude Code, aider); otherwise
it is recorded as unknown, never as 0. The command lines live in
preset_runner.py. Other flags? Write the command yourself, e.g.
``--agent 'command:claude -p --model opus < "$CROSSREVIEW_INSTRUCTION_FILE"'``.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from ..agents import SpecError
from ..hookspecs import hookimpl
from ..models import AgentSpec
from .command import CommandAgent
from .preset_runner import RUNNERS

RUNNER = Path(__file__).with_name("preset_runner.py")

INSTALL = {
    "claude-code": "npm install -g @anthropic-ai/claude-code",
    "codex": "npm install -g @openai/codex",
    "aider": "python -m pip install aider-install && aider-install",
    "gemini": "npm install -g @google/gemini-cli",
}
HELP = {
    "claude-code": "claude-code[:MODEL] runs Claude Code headless (claude -p) in the worktree",
    "codex": "codex[:MODEL] runs Codex CLI (codex exec --full-auto) in the worktree",
    "aider": "aider[:MODEL] runs aider with the instruction as its one message",
    "gemini": "gemini[:MODEL] runs Gemini CLI headless (--yolo) in the worktree",
}


class PresetAgent(CommandAgent):
    """A ``command:`` agent whose command is a preset; its CLI must be on PATH."""

    def __init__(self, spec: AgentSpec):
        executable = RUNNERS[spec.kind][0]
        model = (spec.arg or "").strip()
        if shutil.which(executable) is None:
            raise SpecError(
                f"agent {spec.name}: {spec.kind} needs `{executable}` on PATH; install it ({INSTALL[spec.kind]}) "
                f"or write the command yourself with command:<cmd>"
            )
        template = f"{{python}} {shlex.quote(str(RUNNER))} {spec.kind}" + (f" {shlex.quote(model)}" if model else "")
        super().__init__(AgentSpec(name=spec.name, spec=f"command:{template}"))
        self.spec = spec


def _factory(spec: AgentSpec) -> PresetAgent:
    return PresetAgent(spec)


@hookimpl
def crossreview_register_agents(register):
    for name in RUNNERS:
        register(name, _factory, help=HELP[name])
