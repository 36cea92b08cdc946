"""Keep API keys out of everything crossreview writes: transcripts, logs, errors, the ledger.

Keys are read from the environment only. Before any text that may hold one
(a provider's error message quotes the key it rejected, a test run may print
its environment) is stored, every value of a key-like variable is replaced by
``(redacted $NAME)`` (parentheses: safe in rich markup, HTML and Markdown).
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

_SECRET_NAME = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL)", re.IGNORECASE)
_MIN_LEN = 8  # shorter values ("true", "1") are not secrets and would mangle text


class Redactor:
    """Replaces the values of secret-looking environment variables (and named ones) in text."""

    def __init__(self, extra_names: Iterable[str] = (), environ: dict[str, str] | None = None):
        env = os.environ if environ is None else environ
        names = {n for n in env if _SECRET_NAME.search(n)} | {n for n in extra_names if n}
        pairs = [(env[n], n) for n in names if len(env.get(n, "")) >= _MIN_LEN]
        # Longest first, so a key that contains another is replaced whole.
        self._pairs = sorted(pairs, key=lambda p: -len(p[0]))

    def __call__(self, text: Any) -> Any:
        if not isinstance(text, str) or not self._pairs:
            return text
        for value, name in self._pairs:
            if value in text:
                text = text.replace(value, f"(redacted ${name})")
        return text

    def deep(self, obj: Any) -> Any:
        """Redact every string inside dicts and lists."""
        if isinstance(obj, str):
            return self(obj)
        if isinstance(obj, dict):
            return {self(k) if isinstance(k, str) else k: self.deep(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.deep(v) for v in obj]
        return obj
