"""Hostile input, fuzzed with hypothesis: task.toml, task folders, crossreview.toml, reviewer output.

At least 1,000 cases each (CROSSREVIEW_FUZZ_EXAMPLES changes it). Whatever
the input, only crossreview's own error types come out, never a traceback,
and every error names the file and, where the problem is a key, the key.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_task, write

from crossreview.default_plugins.command import ReviewerOutputError, parse_verdict
from crossreview.models import ReviewVerdictOutput, Task, TaskError
from crossreview.tasks import ConfigError, load_suite, load_suite_config, load_task

EXAMPLES = int(os.environ.get("CROSSREVIEW_FUZZ_EXAMPLES", "1000"))
settings.register_profile(
    "crossreview-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    database=None,  # nothing written to the repository
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)
FUZZ = settings.get_profile("crossreview-fuzz")
TASK_KEYS = {
    "": ["version", "task", "metadata", "agent", "verifier", "repo"],
    "task": ["id", "tags"],
    "agent": ["timeout_sec"],
    "verifier": ["command", "timeout_sec", "tests_visible"],
    "repo": ["path", "ref"],
}
SUITE_KEYS = ["agents", "reviewers", "policy", "jobs", "ledger", "sandbox", "sandbox_env", "sandbox_readable",
              "sandbox_writable", "network", "max_cost", "temperature", "models", "prices"]


# --- a TOML writer for generated documents ------------------------------------------------

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "../../..", "/", "/etc/passwd", "~", "\x00", "a\x00b", "{tests}", "HEAD~999",
                     "--upload-pack=touch /tmp/x", "-rf", "💥", "repo", "tests", "x" * 300, "ünï", "\\", "\n"]),
)
scalar = st.one_of(
    nasty_text, st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
)
value = st.recursive(scalar, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(nasty_text, inner, max_size=4)), max_leaves=8)


def toml_str(s: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's; lone surrogates stay raw and make bad UTF-8)."""
    return json.dumps(s, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return toml_str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{toml_str(k)} = {toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def task_toml(draw) -> str:
    """Mostly well-formed TOML over the real keys (and some wrong ones), values of any type."""
    lines = []
    for section, keys in TASK_KEYS.items():
        if section and draw(st.booleans()):
            lines.append(f"[{section}]")
        elif section:
            continue
        for key in draw(st.lists(st.sampled_from(keys + ["typo", "timeout"]), max_size=4, unique=True)):
            v = draw(st.one_of(value, st.sampled_from(["../outside", 0, -1, 1e308, "python -m pytest {tests}"])))
            lines.append(f"{toml_str(key) if draw(st.booleans()) else key} = {toml_value(v)}")
    text = "\n".join(lines) + "\n"
    # now and then, damage it
    return draw(st.one_of(st.just(text), st.just(text), st.just(text), st.text(max_size=200),
                          st.builds(lambda t, cut: t[:cut], st.just(text), st.integers(0, max(0, len(text))))))


def _check_errors(errors: list[TaskError], task_dir: Path, toml_text_given: bool = True) -> None:
    assert errors, "an empty error list"
    for e in errors:
        assert isinstance(e, TaskError)
        text = str(e)
        assert "Traceback" not in text and e.message.strip()
        assert str(e.file) in text
        # the file named is in the task folder (or is the folder itself)
        assert e.file == task_dir or task_dir in e.file.parents, (e.file, task_dir)
        if e.file.name == "task.toml" and not e.message.startswith(("not valid TOML", "cannot be read")):
            assert e.field, f"an error about task.toml names no field: {text}"
            assert e.field in text


@pytest.fixture(scope="module")
def scratch():
    d = Path(tempfile.mkdtemp(prefix="crossreview-fuzz-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _base_task(root: Path) -> Path:
    if root.exists():
        shutil.rmtree(root)
    return make_task(root.parent, root.name)


def test_fuzz_task_toml(scratch):
    task_dir = _base_task(scratch / "toml" / "t")
    seen = {"n": 0, "errors": 0}

    @FUZZ
    @given(task_toml())
    def check(text: str):
        seen["n"] += 1
        (task_dir / "task.toml").write_bytes(text.encode("utf-8", "surrogatepass"))
        loaded = load_task(task_dir)
        if isinstance(loaded, Task):
            assert loaded.agent_timeout > 0 and math.isfinite(loaded.agent_timeout)
            assert math.isfinite(loaded.verifier_timeout) and "{tests}" in loaded.verifier_command
        else:
            seen["errors"] += 1
            _check_errors(loaded, task_dir.resolve())

    check()
    assert seen["n"] >= EXAMPLES and seen["errors"] > 0, seen


@st.composite
def layout(draw) -> dict:
    """A task folder's shape: each part present, missing, empty, a file instead of a folder, binary..."""
    return {
        "toml": draw(st.sampled_from(["ok", "ok", "bad", "binary", "empty", "deep"])),
        "instruction": draw(st.sampled_from(["ok", "missing", "empty", "blank", "binary", "dir", "dangling"])),
        "tests": draw(st.sampled_from(["ok", "missing", "empty", "file", "no_test_files", "nested", "loop",
                                       "dangling"])),
        "repo": draw(st.sampled_from(["ok", "missing", "file", "empty", "git_file"])),
        "solution": draw(st.sampled_from(["ok", "missing", "file"])),
        "holdout": draw(st.sampled_from(["none", "ok", "file"])),
        "extra": draw(st.lists(st.sampled_from(["task.toml/", "tests/task.toml", "repo/task.toml", ".hidden/task.toml",
                                                "sub/task.toml"]), max_size=2, unique=True)),
    }


def _build(root: Path, shape: dict) -> Path:
    d = root / "t"
    d.mkdir(parents=True)
    toml = {"ok": 'version = "1.0"\n', "bad": "[task\nid = ", "binary": b"\xff\xfe\x00[", "empty": "",
            "deep": "a = " + "[" * 3000 + "]" * 3000 + "\n"}[shape["toml"]]
    (d / "task.toml").write_bytes(toml if isinstance(toml, bytes) else toml.encode())
    ins = d / "instruction.md"
    {"ok": lambda: ins.write_text("Do it.\n"), "missing": lambda: None, "empty": lambda: ins.write_text(""),
     "blank": lambda: ins.write_text("  \n\t\n"), "binary": lambda: ins.write_bytes(b"\xff\xfe\xfa"),
     "dir": lambda: ins.mkdir(), "dangling": lambda: ins.symlink_to(d / "nowhere")}[shape["instruction"]]()
    t = d / "tests"
    kind = shape["tests"]
    if kind == "ok":
        write(t / "test_x.py", "def test_x():\n    pass\n")
    elif kind == "empty":
        t.mkdir()
    elif kind == "file":
        t.write_text("not a folder")
    elif kind == "no_test_files":
        write(t / "helper.py", "")
    elif kind == "nested":
        write(t / "a" / "b" / "test_deep.py", "")
    elif kind == "loop":
        t.mkdir()
        (t / "loop").symlink_to(t)
        write(t / "test_x.py", "")
    elif kind == "dangling":
        t.symlink_to(d / "nowhere")
    r = d / "repo"
    {"ok": lambda: write(r / "calc.py", ""), "missing": lambda: None, "file": lambda: r.write_text("x"),
     "empty": lambda: r.mkdir(), "git_file": lambda: write(r / ".git", "gitdir: /nonexistent\n")}[shape["repo"]]()
    s = d / "solution"
    {"ok": lambda: write(s / "calc.py", ""), "missing": lambda: None, "file": lambda: s.write_text("x")}[shape["solution"]]()
    h = d / "holdout"
    {"none": lambda: None, "ok": lambda: write(h / "test_h.py", ""), "file": lambda: h.write_text("x")}[shape["holdout"]]()
    for extra in shape["extra"]:
        p = d / extra.rstrip("/")
        if extra.endswith("/"):
            if p.exists():
                p.unlink()
            p.mkdir(parents=True, exist_ok=True)
        elif not (p.parent.is_file() or p.parent.is_symlink() or p.parent.exists() and not p.parent.is_dir()):
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text('version = "1.0"\n')
    return d


def test_fuzz_task_folders(scratch):
    base = scratch / "folders"
    seen = {"n": 0, "ok": 0}

    @FUZZ
    @given(layout())
    def check(shape: dict):
        seen["n"] += 1
        if base.exists():
            shutil.rmtree(base)
        d = _build(base, shape).resolve()
        suite = load_suite([base])
        for task in suite.tasks:
            assert isinstance(task, Task)
            seen["ok"] += 1
        by_task: dict[Path, list[TaskError]] = {}
        for e in suite.errors:
            by_task.setdefault(e.path, []).append(e)
        for path, errors in by_task.items():
            _check_errors(errors, path)
            assert path == d or d in path.parents

    check()
    assert seen["n"] >= EXAMPLES and seen["ok"] > 0, seen


@st.composite
def suite_config(draw) -> str:
    lines = []
    for key in draw(st.lists(st.sampled_from(SUITE_KEYS + ["agent", "sandbox_mode"]), max_size=5, unique=True)):
        v = draw(st.one_of(value, st.sampled_from(["auto", "required", "off", "sometimes", ["OPENAI_API_KEY"],
                                                    ["not a name!"], {"a": ["KEY"]}, {"a": "KEY"}, 0, -3])))
        lines.append(f"{key} = {toml_value(v)}")
    text = "\n".join(lines) + "\n"
    return draw(st.one_of(st.just(text), st.just(text), st.text(max_size=120),
                          st.just("x = " + "[" * 2000 + "]" * 2000), st.just("\udcff")))


def test_fuzz_crossreview_toml(scratch):
    d = scratch / "suitecfg"
    d.mkdir()
    cfg = d / "crossreview.toml"
    seen = {"n": 0, "errors": 0}

    @FUZZ
    @given(suite_config())
    def check(text: str):
        seen["n"] += 1
        cfg.write_bytes(text.encode("utf-8", "surrogateescape"))
        try:
            load_suite_config([d])
        except ConfigError as exc:
            seen["errors"] += 1
            msg = str(exc)
            assert str(cfg) in msg and "Traceback" not in msg
            for line in msg.splitlines():
                assert line.startswith(str(cfg)), line  # every line names the file
                if "not valid TOML" not in line and "cannot be read" not in line:
                    assert any(f"{k}" in line for k in SUITE_KEYS + ["agent", "sandbox_mode"]) or "'" in line, line

    check()
    assert seen["n"] >= EXAMPLES and seen["errors"] > 0, seen


# --- command-reviewer output -----------------------------------------------------------

VERDICT_KEYS = ["verdict", "confidence", "concerns", "prefers", "usage"]
json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6,
)


@st.composite
def reviewer_output(draw) -> tuple[str, str | None]:
    """(stdout, the key whose value was made wrong, if any)."""
    obj = {"verdict": draw(st.sampled_from(["approve", "reject"]))}
    if draw(st.booleans()):
        obj["confidence"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        obj["concerns"] = draw(st.lists(st.text(max_size=20), max_size=3))
    broken = None
    if draw(st.booleans()):
        broken = draw(st.sampled_from(VERDICT_KEYS + ["extra_key"]))
        obj[broken] = draw(st.one_of(json_value, st.sampled_from(["maybe", 7, -1, 2.5, [1], {"x": 1}])))
    body = json.dumps(obj, indent=draw(st.sampled_from([None, 2])))
    noise = draw(st.lists(st.text(max_size=30), max_size=3))
    shape = draw(st.sampled_from(["whole", "last_line", "noise_after", "garbage", "nested", "huge_int", "list"]))
    if shape == "last_line":
        return "\n".join(noise + [json.dumps(obj)]), broken
    if shape == "noise_after":
        return "\n".join([json.dumps(obj)] + noise), broken
    if shape == "garbage":
        return draw(st.text(max_size=200)), "?"
    if shape == "nested":
        return "[" * draw(st.integers(1, 50000)) + "{", "?"
    if shape == "huge_int":
        return '{"verdict": "approve", "confidence": ' + "9" * 5000 + "}", "confidence"
    if shape == "list":
        return json.dumps([obj]), "?"
    return body, broken


def test_fuzz_reviewer_output():
    seen = {"n": 0, "errors": 0}

    @FUZZ
    @given(reviewer_output())
    def check(case):
        stdout, broken = case
        seen["n"] += 1
        try:
            out = parse_verdict(stdout)
        except ReviewerOutputError as exc:
            seen["errors"] += 1
            msg = str(exc)
            assert "Traceback" not in msg and "Expected" in msg
            if broken and broken != "?" and msg.startswith("verdict JSON is not valid"):
                assert broken in msg, (broken, msg)  # the field that is wrong is named
            return
        assert isinstance(out, ReviewVerdictOutput)
        assert out.verdict in ("approve", "reject") and 0 <= out.confidence <= 1

    check()
    assert seen["n"] >= EXAMPLES and seen["errors"] > 0, seen


# --- and at the command line: no traceback --------------------------------------------


BROKEN_TOML = [
    b'version = "1.0"\n[repo]\npath = "a\\u0000b"\n',
    b'version = "1.0"\n[agent]\ntimeout_sec = inf\n',
    b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n",
    b"\xff\xfe not utf-8",
    b'[verifier]\ncommand = 7\n',
    b'[repo]\nref = "--output=/tmp/x"\n',
]


def test_broken_task_toml_at_the_command_line_is_an_error_message_not_a_traceback(cli, suite):
    broken = []
    for i, toml in enumerate(BROKEN_TOML):
        d = make_task(suite, f"broken{i}")
        (d / "task.toml").write_bytes(toml)
        broken.append(str(d / "task.toml"))
    make_task(suite, "fine")
    res = cli("validate", str(suite))
    assert "Traceback" not in res.stderr + res.stdout
    assert all(f in res.stdout + res.stderr for f in broken)
    res = cli("run", str(suite), "--agent", "oracle", "--json")
    assert "Traceback" not in res.stderr
    doc = res.json()
    assert [t["task"] for t in doc["tasks"]] == ["fine"]
    assert sorted({e["file"] for e in doc["errors"]}) == sorted(broken)
    assert all(e["field"] for e in doc["errors"] if "TOML" not in e["message"])


@pytest.mark.parametrize("cfg", [b"sandbox = 'sometimes'\n", b"\xff\xfe", b"x = " + b"[" * 4000 + b"]" * 4000,
                                 b"network = {a = 'KEY'}\n", b"sandbox_env = ['not a name']\n"])
def test_broken_crossreview_toml_is_a_usage_error(cfg, cli, suite):
    make_task(suite)
    (suite / "crossreview.toml").write_bytes(cfg)
    res = cli("run", str(suite), "--agent", "oracle")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "crossreview.toml" in res.stderr or "sandbox_env" in res.stderr
