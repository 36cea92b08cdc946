"""Transcripts: one JSON object per line, secrets redacted, kept outside the worktree.

``.crossreview/transcripts/<run>/<task>/<agent>.jsonl`` holds an agent's
session (every message, tool call, tool result and model call with its tokens
and cost); reviews are kept beside it as ``review-<reviewer>-<candidate>.jsonl``.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from .secrets import Redactor


class Transcript:
    """Appends events to a JSONL file (or keeps them in memory when there is no file)."""

    def __init__(self, path: Path | None, redact: Redactor):
        self.path = path
        self.redact = redact
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._t0 = time.monotonic()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("")

    def add(self, kind: str, **data: Any) -> None:
        event = self.redact.deep({"t": round(time.monotonic() - self._t0, 3), "kind": kind, **data})
        line = self.redact(json.dumps(event, ensure_ascii=False, default=str))
        with self._lock:
            self.events.append(event)
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as fh:
                    fh.write(line + "\n")

    def on_call(self, data: dict[str, Any]) -> None:
        """The ModelClient's per-attempt hook."""
        self.add(**{"kind": "call", **{k: v for k, v in data.items() if k != "kind"}})
