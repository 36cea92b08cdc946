"""The offline agents: ``oracle`` and ``noop`` (what `validate` checks tasks with), and
``ref:<revision>`` (an existing change, such as the pull request `gate` judges, as a candidate)."""

from __future__ import annotations

from ..agents import SpecError, Workspace
from ..hookspecs import hookimpl
from ..models import AgentSpec, SolveResult
from ..sandbox import agent_policy, run_confined


class OracleAgent:
    """Lays the task's solution/ over the worktree, or runs solution/solve.sh there."""

    spends_nothing = True  # runs even when a budget is exhausted: it calls no model

    def __init__(self, spec: AgentSpec):
        if spec.arg:
            raise SpecError(f"agent {spec.name}: 'oracle' takes no argument (got {spec.spec!r})")

    def solve(self, workspace: Workspace) -> SolveResult:
        """Apply the reference solution."""
        solution = workspace.task.solution_dir
        if not solution.is_dir():
            return SolveResult(status="error", error=f"{solution} does not exist: the oracle needs solution/")
        script = solution / "solve.sh"
        if script.is_file():
            proc = run_confined(
                ["bash", str(script)], cwd=workspace.path, timeout=workspace.timeout, env=workspace.env,
                policy=agent_policy(workspace, reveal_solution=True),
            )
            if proc.timed_out:
                return SolveResult(status="timeout", error=f"solve.sh killed after {workspace.timeout:g}s")
            if proc.returncode != 0:
                # The error names what it said last: "exited 3" alone sends the author to guess.
                said = [line for line in (proc.stderr or proc.stdout).strip().splitlines() if line.strip()]
                tail = f": {said[-1].strip()[:300]}" if said else ""
                return SolveResult(
                    status="error", error=f"solve.sh exited {proc.returncode}{tail}",
                    log=(proc.stdout + proc.stderr)[-4000:],
                )
            return SolveResult(log=(proc.stdout + proc.stderr)[-4000:])
        from ..worktrees import lay_over  # GitPython: not at plugin load

        try:
            # Links in solution/ leading out of the task folder are copied as links, and a
            # link in the worktree is replaced, not written through: nothing outside is touched.
            lay_over(solution, workspace.path, workspace.task.path)
        except OSError as exc:
            return SolveResult(status="error", error=f"cannot lay solution/ over the worktree: {exc}")
        return SolveResult()


class NoopAgent:
    """Changes nothing: a task whose tests pass under noop cannot tell good from bad."""

    spends_nothing = True

    def __init__(self, spec: AgentSpec):
        if spec.arg:
            raise SpecError(f"agent {spec.name}: 'noop' takes no argument (got {spec.spec!r})")

    def solve(self, workspace: Workspace) -> SolveResult:
        """Do nothing."""
        return SolveResult()


class RevisionAgent:
    """Makes the worktree hold the tree of a git revision: a change someone already made, as a candidate.

    Nothing of the revision runs here: git writes its files, the way a
    checkout would. The worktree shares the repository's objects, so any
    revision of the task's repository can be named.
    """

    def __init__(self, spec: AgentSpec):
        rev = (spec.arg or "").strip()
        if not rev or rev.startswith("-") or any(ch.isspace() for ch in rev):
            raise SpecError(f"agent {spec.name}: 'ref' needs a git revision, e.g. ref:HEAD or ref:origin/feature "
                            f"(got {spec.spec!r})")
        self.rev = rev

    def solve(self, workspace: Workspace) -> SolveResult:
        """Replace the worktree's tracked files with the revision's tree (deletions included)."""
        import git

        try:
            git.Repo(workspace.path).git.read_tree("-u", "--reset", self.rev)
        except git.GitCommandError as exc:
            why = (exc.stderr or str(exc)).strip().splitlines()[-1:] or [str(exc)]
            return SolveResult(status="error", error=f"cannot check out {self.rev}: {why[0]}")
        return SolveResult(log=f"the tree of {self.rev}")


@hookimpl
def crossreview_register_agents(register):
    register("oracle", OracleAgent, help="applies the task's solution/ (checks a task is solvable)")
    register("noop", NoopAgent, help="changes nothing (checks the tests can fail)")
    register("ref", RevisionAgent, help="ref:<revision> — the tree of a git revision as the candidate (`gate` judges a pull request this way)")
