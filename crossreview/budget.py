"""Money and token budgets for a suite run and for each task run in it.

Pure bookkeeping (no I/O, no models): a ``Budget`` counts what was spent and
says when a limit is reached. A task run's budget has the suite run's as its
parent, so one charge counts against both and either limit stops work.

Limits are checked *before* work starts (a model call, a solve, a review), so
a run stops at its cap: the total can pass the cap by at most the one call
already under way in each branch running at that moment.

Model agents and reviewers charge each call as it returns (and say so with a
``charges_budget = True`` attribute), having told the budget as it was sent
(``call_started``), so the journal keeps a call a kill cut short; for any other agent crossreview charges
what its ``SolveResult.usage`` reports once it is done. Unknown cost (None)
is counted apart, never as 0: a cost cap cannot be kept for work whose price
nobody knows, and the run refuses to start when it would have to.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

EXHAUSTED = "budget exhausted"
"""Every message about a spent budget starts with this, so decisions can say why."""


def stopped_by_cap(errors: "Iterable[str | None]") -> str | None:
    """The cap that cut a task run short, from its candidates' and reviews' errors (and a task run's
    own "not started: ..." error): the first ``budget exhausted: ...`` message, None when no cap stopped
    anything. Read from the errors themselves, so a task run recorded before this was asked reads the same."""
    for error in errors:
        at = (error or "").find(EXHAUSTED)
        if at >= 0:
            return error[at:]
    return None


NO_CAP = "none"
"""What a cap option is given to lift the cap (``resume RUN --max-cost none``): unlike leaving the option
out (which keeps the recorded or configured cap), it removes it."""


class BudgetExceeded(Exception):
    """A limit was reached before some work could start; the message says which and how much was spent."""


@dataclass
class Limits:
    """The caps of one run: per suite run and per task run (None: no cap)."""

    max_cost: float | None = None
    max_tokens: int | None = None
    max_task_cost: float | None = None
    max_task_tokens: int | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "Limits":
        data = data or {}
        return cls(**{k: data.get(k) for k in ("max_cost", "max_tokens", "max_task_cost", "max_task_tokens")})

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_cost": self.max_cost,
            "max_tokens": self.max_tokens,
            "max_task_cost": self.max_task_cost,
            "max_task_tokens": self.max_task_tokens,
        }

    @property
    def caps_cost(self) -> bool:
        return self.max_cost is not None or self.max_task_cost is not None


@dataclass
class Budget:
    """What one scope (a suite run, or a task run) may spend, and has spent."""

    scope: str
    max_cost: float | None = None
    max_tokens: int | None = None
    parent: "Budget | None" = None
    key: str | None = None
    """The task run a task run's budget belongs to (None for a suite run's)."""
    on_charge: "Callable[..., None] | None" = field(default=None, repr=False)
    """Told of every charge of real work here (see Budgets), as it happens."""
    on_call: "Callable[[str, str, str | None], None] | None" = field(default=None, repr=False)
    """Told of every model call about to be sent here (see Budgets)."""
    cost: float = 0.0
    tokens: int = 0
    unpriced_charges: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _chain(self) -> list["Budget"]:
        out, b = [], self
        while b is not None:
            out.append(b)
            b = b.parent
        return out

    @property
    def caps_cost(self) -> bool:
        """True when this scope or an enclosing one has a money cap."""
        return any(b.max_cost is not None for b in self._chain())

    def exceeded(self) -> str | None:
        """Why no new work may start here, or None while every limit holds."""
        for b in self._chain():
            with b._lock:
                if b.max_cost is not None and b.cost >= b.max_cost:
                    flag = "--max-cost" if b.parent is None else "--max-task-cost"
                    return f"{EXHAUSTED}: {flag} ${b.max_cost:g} for the {b.scope} reached (${b.cost:.4f} spent)"
                if b.max_tokens is not None and b.tokens >= b.max_tokens:
                    flag = "--max-tokens" if b.parent is None else "--max-task-tokens"
                    return f"{EXHAUSTED}: {flag} {b.max_tokens} for the {b.scope} reached ({b.tokens} tokens spent)"
        return None

    def check(self) -> None:
        """Raise BudgetExceeded when a limit is reached."""
        reason = self.exceeded()
        if reason:
            raise BudgetExceeded(reason)

    def call_started(self, model: str | None = None) -> str | None:
        """Say a model call is about to be sent; returns the id to pass to ``charge(..., call=...)`` when
        it ends (None when nobody journals this budget's calls).

        A call that never ends (its process killed while it waited) stays journaled as in flight:
        the provider may have billed it, so it is work cut short of unknown cost, never nothing.
        """
        if self.on_call is None or self.key is None:
            return None
        call = uuid.uuid4().hex
        self.on_call(self.key, call, model)
        return call

    def charge(self, tokens: int, cost: float | None, journal: bool = True, call: str | None = None) -> None:
        """Count work already done, here and in every enclosing scope.

        ``journal=False``: spend counted again from the ledger (a resumed run
        seeding its budget), not new work, so ``on_charge`` is not told.
        ``call``: the id ``call_started`` gave; this charge is what that call cost
        (0 for an error the provider bills nothing for, None when unknown).
        """
        for b in self._chain():
            with b._lock:
                b.tokens += int(tokens or 0)
                if cost is None:
                    b.unpriced_charges += 1
                else:
                    b.cost += float(cost)
        # Only charges that carry tokens or money: free work (offline agents, the tests
        # reviewer) and a command's "spent something, unknown" tell the journal nothing
        # it counts, and at 8 agents their 56 reviews would queue 56 ledger writes at once.
        if journal and self.on_charge is not None and self.key is not None:
            if call is not None:  # always: it resolves the call's row, free or not
                self.on_charge(self.key, int(tokens or 0), cost, call=call)
            elif tokens or cost:
                self.on_charge(self.key, int(tokens or 0), cost)


class Budgets:
    """The budgets of every run this process works on, created on first use (thread-safe)."""

    def __init__(self, on_charge: Callable[..., None] | None = None,
                 on_call: Callable[[str, str, str | None], None] | None = None) -> None:
        """``on_charge(task_run, tokens, cost)`` hears of every charge to a task run's budget as it happens
        (the runner writes it to the ledger's spend journal, so work a crash cuts short stays counted);
        a charge that ends a model call comes with ``call=`` its id. ``on_call(task_run, call, model)``
        hears of every model call before it is sent."""
        self._lock = threading.Lock()
        self._suites: dict[str, Budget] = {}
        self._tasks: dict[str, Budget] = {}
        self.on_charge = on_charge
        self.on_call = on_call

    def suite(self, run: str, limits: Limits | dict | None) -> Budget:
        """The budget of suite run ``run``."""
        lim = limits if isinstance(limits, Limits) else Limits.from_dict(limits)
        with self._lock:
            if run not in self._suites:
                self._suites[run] = Budget("suite run", lim.max_cost, lim.max_tokens)
            return self._suites[run]

    def task(self, run: str, task_run: str, limits: Limits | dict | None) -> Budget:
        """The budget of task run ``task_run`` (its parent is the suite run's)."""
        lim = limits if isinstance(limits, Limits) else Limits.from_dict(limits)
        parent = self.suite(run, lim)
        with self._lock:
            if task_run not in self._tasks:
                self._tasks[task_run] = Budget("task run", lim.max_task_cost, lim.max_task_tokens, parent=parent,
                                               key=task_run, on_charge=self.on_charge, on_call=self.on_call)
            return self._tasks[task_run]
