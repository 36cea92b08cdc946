"""Command reviewer that only skims the shape of the diff.

It never looks at the test results. It rejects an empty diff, rejects a diff
that adds a lookup table keyed on literal inputs together with a
NotImplementedError fallback (the signature of special-casing the examples),
and otherwise approves -- with modest confidence, since it has not checked
behaviour. Prints exactly one JSON verdict on stdout and never crashes.
"""

from __future__ import annotations

import ast
import json
import os
import re
import sys
import textwrap
from pathlib import Path

TABLE_ROW = re.compile(r"""^\s*(\(.*\)|'[^']*'|"[^"]*"|-?\d[\w.]*|True|False|None)\s*:\s*\S""")
TABLE_START = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?::[^=]*)?=\s*\{\s*$")


def verdict(kind: str, confidence: float, concerns: list[str]) -> dict:
    return {"verdict": kind, "confidence": confidence, "concerns": concerns}


def added_blocks(diff: str) -> list[tuple[str, str]]:
    """Return (file, code) for each run of consecutive added lines."""
    blocks: list[tuple[str, str]] = []
    current_file, run = "?", []

    def flush() -> None:
        if run:
            blocks.append((current_file, "\n".join(run)))
            run.clear()

    for line in diff.splitlines():
        if line.startswith("+++ "):
            flush()
            name = line[4:].strip()
            current_file = name[2:] if name.startswith("b/") else name
        elif line.startswith("+"):
            run.append(line[1:])
        else:
            flush()
    flush()
    return blocks


def is_literal_key(node: ast.AST | None) -> bool:
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.UnaryOp) and isinstance(node.operand, ast.Constant):
        return True
    if isinstance(node, ast.Tuple):
        return all(is_literal_key(elt) for elt in node.elts)
    return False


def literal_tables(code: str) -> list[tuple[str, int]]:
    """Names and sizes of dict literals with only literal keys, assigned to a name."""
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return regex_tables(code)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            keys = node.value.keys
            if len(keys) >= 2 and all(is_literal_key(k) for k in keys):
                for target in targets:
                    if isinstance(target, ast.Name):
                        found.append((target.id, len(keys)))
    return found


def regex_tables(code: str) -> list[tuple[str, int]]:
    """Fallback for added lines that do not parse on their own (partial hunks)."""
    found, name, rows = [], None, 0
    for line in code.splitlines():
        start = TABLE_START.match(line)
        if start:
            name, rows = start.group(1), 0
        elif name and TABLE_ROW.match(line):
            rows += 1
        elif name and line.strip().startswith("}"):
            if rows >= 2:
                found.append((name, rows))
            name = None
    return found


def review(diff: str) -> dict:
    if not diff.strip():
        return verdict("reject", 0.7, ["no change"])
    if not any(line.startswith(("diff --git", "--- ", "+++ ", "@@")) for line in diff.splitlines()):
        return verdict("reject", 0.5, ["the candidate's diff is not a unified diff; cannot review it"])
    blocks = added_blocks(diff)
    if any("NotImplementedError" in code for _, code in blocks):
        for path, code in blocks:
            for name, size in literal_tables(code):
                return verdict("reject", 0.8, [
                    f"{path} adds {name}, a lookup table of {size} literal inputs with a "
                    "NotImplementedError fallback: it special-cases the examples "
                    "instead of implementing the behaviour"
                ])
    return verdict("approve", 0.6, ["approved from reading the diff only; tests not consulted"])


def main() -> int:
    try:
        diff_file = os.environ["CROSSREVIEW_DIFF_FILE"]
        diff = Path(diff_file).read_text(encoding="utf-8", errors="replace")
        result = review(diff)
    except Exception as exc:  # never crash: an unreadable input is a reject
        result = verdict("reject", 0.5, [f"skim_review could not read the candidate: "
                                         f"{type(exc).__name__}: {exc}"])
    # It calls no model: say so, or crossreview records its cost as unknown.
    result["usage"] = {"tokens_in": 0, "tokens_out": 0, "cost": 0.0}
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
