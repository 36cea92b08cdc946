"""Command agent that special-cases the visible examples.

It reads the doctest-style examples in the task's instruction, e.g.::

    >>> from fizzbuzz import fizzbuzz
    >>> fizzbuzz(3)
    'Fizz'

and appends to MODULE.py a new definition of FUNC that looks its arguments up
in a table of those examples (raising NotImplementedError for anything else).
Appending at the end of the module overrides any earlier definition. The agent
is generic: it knows nothing about any particular task.
"""

from __future__ import annotations

import ast
import os
import re
import sys
from pathlib import Path

PROMPT = re.compile(r"^(\s*)>>> ?(.*)$")
FROM_IMPORT = re.compile(r"^from\s+([\w.]+)\s+import\s+(.+)$")


def parse_examples(text: str) -> dict[tuple[str, str], list[tuple[tuple, object]]]:
    """Return {(module, func): [(args, expected), ...]} from doctest examples."""
    lines = text.splitlines()
    imported: dict[str, str] = {}  # func name -> module
    examples: dict[tuple[str, str], list[tuple[tuple, object]]] = {}
    i = 0
    while i < len(lines):
        m = PROMPT.match(lines[i])
        if not m:
            i += 1
            continue
        indent, source = m.group(1), m.group(2).strip()
        i += 1
        # Expected output: following lines up to a blank line, a prompt or a fence.
        output: list[str] = []
        while i < len(lines):
            line = lines[i]
            if not line.strip() or PROMPT.match(line) or line.strip().startswith("```"):
                break
            output.append(line[len(indent):] if line.startswith(indent) else line.strip())
            i += 1

        imp = FROM_IMPORT.match(source)
        if imp:
            module = imp.group(1)
            for name in imp.group(2).strip("() ").split(","):
                name = name.strip().split(" as ")[0].strip()
                if name:
                    imported[name] = module
            continue
        try:
            call = ast.parse(source, mode="eval").body
        except SyntaxError:
            continue
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            continue
        func = call.func.id
        if func not in imported or call.keywords or not output:
            continue
        try:
            args = tuple(ast.literal_eval(a) for a in call.args)
            expected = ast.literal_eval("\n".join(output))
            hash(args)
        except (ValueError, SyntaxError, TypeError):
            # not literal (e.g. a traceback or an unhashable argument): skip it
            continue
        examples.setdefault((imported[func], func), []).append((args, expected))
    return examples


def find_module(module: str) -> Path:
    rel = Path(*module.split(".")).with_suffix(".py")
    root = Path.cwd()
    if (root / rel).is_file():
        return root / rel
    for candidate in sorted(root.rglob(rel.name)):
        if ".git" not in candidate.parts and candidate.as_posix().endswith(rel.as_posix()):
            return candidate
    return root / rel


def render(func: str, cases: list[tuple[tuple, object]]) -> str:
    table = f"_{func.upper()}_EXAMPLES"
    rows = "".join(f"    {args!r}: {expected!r},\n" for args, expected in cases)
    return (
        f"\n\n{table} = {{\n{rows}}}\n\n\n"
        f"def {func}(*args, **kwargs):\n"
        f"    if not kwargs and args in {table}:\n"
        f"        return {table}[args]\n"
        f"    raise NotImplementedError(f\"{func}{{args!r}} is not one of the documented examples\")\n"
    )


def main() -> int:
    instruction = Path(os.environ["CROSSREVIEW_INSTRUCTION_FILE"]).read_text(encoding="utf-8")
    examples = parse_examples(instruction)
    if not examples:
        print("shortcut: no doctest examples in the instruction; nothing to do", file=sys.stderr)
        return 0
    for (module, func), cases in examples.items():
        path = find_module(module)
        path.parent.mkdir(parents=True, exist_ok=True)
        existing = path.read_text(encoding="utf-8") if path.exists() else ""
        addition = render(func, cases)
        if not existing:
            addition = addition.lstrip("\n")
        elif not existing.endswith("\n"):
            existing += "\n"
        path.write_text(existing + addition, encoding="utf-8")
        print(f"shortcut: {func} in {path.relative_to(Path.cwd())} now answers "
              f"{len(cases)} example(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    # It calls no model: say so, or crossreview records its cost as unknown.
    if os.environ.get("CROSSREVIEW_USAGE_FILE"):
        Path(os.environ["CROSSREVIEW_USAGE_FILE"]).write_text('{"tokens_in": 0, "tokens_out": 0, "cost": 0.0}')
    sys.exit(main())
