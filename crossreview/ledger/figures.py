"""The ledger's figures: how often a human stepped in, for how long, and at what cost.

``compute(ledger, since=..., suite=...)`` returns one JSON-able dict; ``crossreview
stats`` prints it, ``stats --json`` dumps it, ``crossreview report`` plots it. The
same code serves SQLite and PostgreSQL: rows are read with plain SELECTs and
every figure is computed here, in Python, so both backends give identical
numbers. Every definition is written beside its code and in the README's section on the ledger.

Conventions
- A *task run* counts once it reached a decision or parks waiting for a human
  (status done or parked). Task runs that failed (error) or are still running
  (or were killed before resuming) are counted apart and enter no rate.
- A task run is *escalated* when it has at least one escalation, whatever the
  human decided afterwards; its *final decision* is the human's if the human
  picked or rejected in the last round, else the consensus policy's.
- Unknown money (cost NULL: an agent that reports no price) is never summed as
  0: a sum with unknown parts has ``total: null``, its known part and how many
  items are unknown.
- Rates are fractions in [0, 1] (the table prints percentages); a figure that
  cannot be computed is ``null`` with a ``note`` saying why.
- Percentiles interpolate linearly between the closest ranks (numpy's default).
- A parked task run is written as far as it got when it parks (candidates,
  verdicts, spending, holdout results), and its cost counts from then on. In
  ledgers written before that, it has no candidate rows: its open escalation's
  packet stands in for them in the reviewer figures (approval, kappa), and its
  cost is not known until it is decided.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from itertools import combinations
from typing import Any, Iterable

from ..budget import stopped_by_cap
from ..words import count_phrase
from . import score

# --- small helpers ------------------------------------------------------------


def parse_ts(text: str | None) -> datetime | None:
    if not text:
        return None
    dt = datetime.fromisoformat(text)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def percentile(xs: Iterable[float], p: float) -> float | None:
    """The p-th percentile (0..100), linear interpolation between closest ranks."""
    v = sorted(xs)
    if not v:
        return None
    k = (len(v) - 1) * p / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def mean(xs: Iterable[float]) -> float | None:
    v = list(xs)
    return sum(v) / len(v) if v else None


def iso_week(dt: datetime) -> str:
    y, w, _ = dt.isocalendar()
    return f"{y}-W{w:02d}"


@dataclass
class Money:
    """A sum of costs some of which may be unknown (None)."""

    known: float = 0.0
    unknown: int = 0
    items: int = 0

    def add(self, cost: float | None, at_least: float | None = None) -> None:
        """Add one item; ``at_least`` is the known part of an unknown cost (it raises ``known``, not the total)."""
        self.items += 1
        if cost is None:
            self.unknown += 1
            self.known += float(at_least or 0.0)
        else:
            self.known += float(cost)

    def __iadd__(self, other: "Money") -> "Money":
        self.known += other.known
        self.unknown += other.unknown
        self.items += other.items
        return self

    @property
    def total(self) -> float | None:
        return None if self.unknown else self.known

    def json(self) -> dict[str, Any]:
        return {"total": self.total, "known": self.known, "unknown": self.unknown, "items": self.items}


def holdout_known(c: dict) -> bool:
    return c.get("holdout_total") is not None and c["holdout_total"] > 0


def holdout_passes(c: dict) -> bool:
    return holdout_known(c) and c["holdout_passed"] == c["holdout_total"]


def tests_pass(c: dict) -> bool:
    return c.get("status") == "ok" and bool(c.get("tests_total")) and c.get("tests_passed") == c.get("tests_total")


# --- loading ------------------------------------------------------------------


@dataclass
class TR:
    """A task run with everything the figures look at."""

    row: dict
    run: dict
    started: datetime
    candidates: list[dict] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)
    decisions: list[dict] = field(default_factory=list)
    escalations: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    pending: bool = False
    """Parked: candidates and verdicts come from the open escalation's packet."""
    journal: dict | None = None
    """The spend journal's sums for this task run (tokens, cost, priced, n), if it has any."""

    @property
    def id(self) -> str:
        return self.row["id"]

    @property
    def status(self) -> str:
        return self.row["status"]

    @property
    def counted(self) -> bool:
        return self.status in ("done", "parked")

    @property
    def recorded(self) -> bool:
        return self.status == "done"

    @property
    def costed(self) -> bool:
        """Its spending is in the ledger: recorded, or parked and written as far as it got."""
        return self.recorded or (self.status == "parked" and not self.pending)

    @property
    def escalated(self) -> bool:
        return bool(self.escalations)

    @property
    def tags(self) -> list[str]:
        try:
            return list(json.loads(self.row.get("tags") or "[]"))
        except ValueError:
            return []

    @property
    def last_round(self) -> int:
        return max(0, (self.row.get("rounds") or 1) - 1)

    @property
    def decided_by(self) -> str | None:
        """'human' or 'consensus' for a recorded task run; None otherwise."""
        if not self.recorded:
            return None
        for e in self.escalations:
            if e["round"] == self.last_round and e["action"] in ("pick", "reject"):
                return "human"
        return "consensus"

    @property
    def outcome(self) -> str:
        """accepted / rejected (recorded), escalated (waiting), error, running."""
        if self.status == "done":
            return self.row["decision"] or "error"
        if self.status == "parked":
            return "escalated"
        return "error" if self.status == "error" else "running"

    @property
    def stopped(self) -> str | None:
        """The budget cap that cut this task run short, or left it unstarted (None: no cap stopped anything)."""
        return stopped_by_cap([self.row.get("error")] + [c.get("error") for c in self.candidates]
                              + [v.get("error") for v in self.verdicts])

    def round_candidates(self, rnd: int) -> list[dict]:
        return [c for c in self.candidates if c["round"] == rnd]

    def round_verdicts(self, rnd: int) -> list[dict]:
        return [v for v in self.verdicts if v["round"] == rnd]


@dataclass
class Data:
    ledger: str
    runs: dict[str, dict]
    task_runs: list[TR]

    @property
    def counted(self) -> list[TR]:
        return [t for t in self.task_runs if t.counted]

    @property
    def recorded(self) -> list[TR]:
        return [t for t in self.task_runs if t.recorded]


def _suite_matches(run: dict, suite: str) -> bool:
    """``suite`` is the suite folder's name or its path, as typed for `run` (`tasks/`, `./tasks`, absolute)."""
    want = suite.rstrip("/") or suite
    if run.get("suite") == want:
        return True
    cfg = run.get("config") or {}
    suite_dir = str(cfg.get("suite_dir", "")).rstrip("/")
    if not suite_dir:
        return False
    if suite_dir == want:
        return True
    # A relative path is taken from the current folder, as `crossreview run` takes it.
    return os.path.realpath(os.path.abspath(os.path.expanduser(want))) == os.path.realpath(suite_dir)


def load(ledger, since: datetime | None = None, suite: str | None = None) -> Data:
    """Read what the figures need (not diffs, test outcomes or packets of decided escalations)."""
    with ledger.connect(write=False) as db:
        runs = {r["id"]: r for r in db.execute("SELECT id, started, finished, status, suite, config FROM runs")}
        trs = db.execute(
            "SELECT id, run, task, status, decision, winner, rounds, started, finished, seconds, error, tags,"
            " agreement, agreement_pick, agents_used, agents_configured FROM task_runs"
        ).fetchall()
        cands = db.execute(
            "SELECT task_run, round, agent, spec, status, tests_passed, tests_total, holdout_passed, holdout_total,"
            " tokens_in, tokens_out, cost, cost_known, calls, started, finished, seconds, agreement, test_files, error, tampering"
            " FROM candidates"
            " ORDER BY task_run, round, agent"
        ).fetchall()
        verdicts = db.execute(
            "SELECT task_run, round, reviewer, candidate, verdict, confidence, prefers, tokens_in, tokens_out, cost,"
            " calls, seconds, error FROM verdicts ORDER BY task_run, round, reviewer, candidate"
        ).fetchall()
        decisions = db.execute("SELECT task_run, round, kind, winner, policy FROM decisions").fetchall()
        escs = db.execute(
            "SELECT id, task_run, run, task, round, reason, created, first_shown, decided, decided_by, action, pick,"
            " guide FROM escalations ORDER BY created, id"
        ).fetchall()
        events = db.execute("SELECT task_run, node, agent, round, started, finished FROM events").fetchall()
        journal = {r["task_run"]: r for r in db.execute(
            "SELECT task_run, SUM(tokens) AS tokens, SUM(cost) AS cost, COUNT(cost) AS priced, COUNT(*) AS n,"
            " SUM(in_flight) AS in_flight FROM spend GROUP BY task_run")} if "spend" in db.tables() else {}
        with_cands = {c["task_run"] for c in cands}
        parked = [t["id"] for t in trs if t["status"] == "parked" and t["id"] not in with_cands]
        packets: dict[str, tuple[int, dict]] = {}
        for tr_id in parked:
            row = db.execute(
                "SELECT round, packet FROM escalations WHERE task_run=? AND decided IS NULL ORDER BY round DESC",
                (tr_id,),
            ).fetchone()
            if row:
                try:
                    packets[tr_id] = (row["round"], json.loads(row["packet"]))
                except ValueError:
                    pass
    for r in runs.values():
        try:
            r["config"] = json.loads(r["config"] or "{}")
        except ValueError:
            r["config"] = {}
    by_id: dict[str, TR] = {}
    for t in trs:
        run = runs.get(t["run"]) or {"id": t["run"], "suite": None, "config": {}, "started": t["started"]}
        if suite is not None and not _suite_matches(run, suite):
            continue
        started = parse_ts(t["started"])
        if since is not None and started < since:
            continue
        by_id[t["id"]] = TR(row=t, run=run, started=started)
    for rows, attr in ((cands, "candidates"), (verdicts, "verdicts"), (decisions, "decisions"),
                       (escs, "escalations"), (events, "events")):
        for r in rows:
            tr = by_id.get(r["task_run"])
            if tr is not None:
                getattr(tr, attr).append(r)
    for tr_id, sums in journal.items():
        tr = by_id.get(tr_id)
        if tr is not None:
            tr.journal = sums
    for tr_id, (rnd, packet) in packets.items():
        tr = by_id.get(tr_id)
        if tr is not None:
            tr.candidates, tr.verdicts = score.packet_rows(packet, rnd)
            tr.pending = True
    ordered = sorted(by_id.values(), key=lambda t: (t.started, t.id))
    used_runs = {t.row["run"]: t.run for t in ordered}
    return Data(ledger=str(ledger.backend.describe()), runs=used_runs, task_runs=ordered)


# --- figures ------------------------------------------------------------------


def counts(d: Data) -> dict[str, Any]:
    out = Counter(t.outcome for t in d.task_runs)
    by = Counter((t.decided_by, t.outcome) for t in d.recorded)
    escs = [e for t in d.task_runs for e in t.escalations]
    return {
        "runs": len(d.runs),
        "task_runs": len(d.counted),
        "accepted": out["accepted"],
        "rejected": out["rejected"],
        "waiting": out["escalated"],
        "errors": out["error"],
        "unfinished": out["running"],
        "by_consensus": {"accepted": by[("consensus", "accepted")], "rejected": by[("consensus", "rejected")]},
        "by_human": {"accepted": by[("human", "accepted")], "rejected": by[("human", "rejected")]},
        "escalations": len(escs),
        "escalations_decided": sum(1 for e in escs if e["decided"]),
        "guided": sum(1 for e in escs if e["action"] == "guide"),
        "stopped_by_cap": stopped_by_cap_counts(d),
    }


def stopped_by_cap_counts(d: Data) -> dict[str, int]:
    """Task runs a budget cap stopped: cut short (decided, or waiting, without the work it stopped) by
    final outcome, and not started at all (counted among the errors). They stay in the other counts,
    as decided; this says which of those decisions were made on part of the work."""
    stopped = [t for t in d.task_runs if t.stopped]
    out = Counter(t.outcome for t in stopped)
    cut = [t for t in stopped if t.counted]
    return {
        "task_runs": len(stopped),
        "cut_short": len(cut),
        "accepted": out["accepted"],
        "rejected": out["rejected"],
        "waiting": out["escalated"],
        "not_started": out["error"],
    }


def _rate_rows(groups: dict[str, list[TR]]) -> list[dict[str, Any]]:
    rows = []
    for key in sorted(groups):
        ts = groups[key]
        k = sum(1 for t in ts if t.escalated)
        rows.append({"key": key, "task_runs": len(ts), "escalated": k, "rate": ratio(k, len(ts))})
    return rows


def interventions(d: Data) -> dict[str, Any]:
    """Intervention rate: escalated task runs / task runs; overall, per suite, per tag, per ISO week."""
    ts = d.counted
    k = sum(1 for t in ts if t.escalated)
    by_suite: dict[str, list[TR]] = defaultdict(list)
    by_tag: dict[str, list[TR]] = defaultdict(list)
    by_week: dict[str, list[TR]] = defaultdict(list)
    for t in ts:
        by_suite[t.run.get("suite") or "(unknown)"].append(t)
        for tag in t.tags or ["(no tag)"]:
            by_tag[tag].append(t)
        by_week[iso_week(t.started)].append(t)
    return {
        "task_runs": len(ts),
        "escalated": k,
        "rate": ratio(k, len(ts)),
        "by_suite": _rate_rows(by_suite),
        "by_tag": _rate_rows(by_tag),
        "by_week": _rate_rows(by_week),
    }


def _minutes(a: str | None, b: str | None) -> float | None:
    ta, tb = parse_ts(a), parse_ts(b)
    if ta is None or tb is None:
        return None
    return max(0.0, (tb - ta).total_seconds() / 60.0)


def human_time(d: Data) -> dict[str, Any]:
    """Minutes a human spent per escalation: first shown -> decided (decided ones only).

    An escalation decided without ever being shown (``decide`` without
    ``show``) has no such minutes: it is counted in ``unseen``, not as 0.
    """
    n = len(d.counted)
    escs = [e for t in d.counted for e in t.escalations]
    spent = [m for e in escs if e["decided"] and (m := _minutes(e["first_shown"], e["decided"])) is not None]
    turnaround = [m for e in escs if e["decided"] and (m := _minutes(e["created"], e["decided"])) is not None]
    unseen = sum(1 for e in escs if e["decided"] and not e["first_shown"])
    # Humans decided, but none of it was timed: the minutes are unknown, not 0.
    total = None if unseen and not spent else sum(spent)
    return {
        "decided": len(spent),
        "unseen": unseen,
        "waiting": sum(1 for e in escs if not e["decided"]),
        "median_minutes": percentile(spent, 50),
        "p90_minutes": percentile(spent, 90),
        "mean_minutes": mean(spent),
        "total_minutes": total,
        "minutes_per_100_task_runs": total / n * 100 if n and total is not None else None,
        "escalations_per_100_task_runs": len(escs) / n * 100 if n else None,
        "turnaround_median_minutes": percentile(turnaround, 50),
    }


def autonomy(d: Data) -> dict[str, Any]:
    """Task runs and wall-clock minutes between two consecutive interventions.

    An intervention is an escalated task run, placed in time at its first
    escalation; task runs are ordered by start. "Between" counts the task
    runs strictly between the two escalated ones; the minutes are between
    interventions consecutive in time (with --jobs a task run started later
    may escalate first).
    """
    ts = d.counted
    idx = [i for i, t in enumerate(ts) if t.escalated]
    gaps = [b - a - 1 for a, b in zip(idx, idx[1:])]
    # Minutes between consecutive interventions in time: with --jobs, task runs overlap, and
    # one started later may escalate first (ordered by start, the gap would come out negative).
    times = sorted(min(parse_ts(e["created"]) for e in ts[i].escalations) for i in idx)
    minutes = [(b - a).total_seconds() / 60.0 for a, b in zip(times, times[1:])]
    out = {
        "interventions": len(idx),
        "task_runs": len(ts),
        "task_runs_per_intervention": ratio(len(ts), len(idx)),
        "mean_task_runs_between": mean(gaps),
        "median_task_runs_between": percentile(gaps, 50),
        "mean_minutes_between": mean(minutes),
        "median_minutes_between": percentile(minutes, 50),
    }
    if len(idx) < 2:
        out["note"] = ("no intervention at all" if not idx else "one intervention only") + ": nothing to measure between"
    return out


def _rating_items(d: Data) -> dict[tuple[str, int, str], dict[str, str]]:
    """(task run, round, candidate) -> {reviewer: approve|reject}; abstentions are no rating."""
    items: dict[tuple[str, int, str], dict[str, str]] = defaultdict(dict)
    for t in d.counted:
        for v in t.verdicts:
            if v["verdict"] in ("approve", "reject"):
                items[(t.id, v["round"], v["candidate"])][v["reviewer"]] = v["verdict"]
    return items


def fleiss_kappa(subjects: list[list[str]], categories: tuple[str, ...] = ("approve", "reject")) -> dict[str, Any]:
    """Fleiss' kappa over subjects rated by two or more raters each (the number may vary:
    P_i = sum_j n_ij (n_ij - 1) / (n_i (n_i - 1)), P = mean P_i, p_j over all ratings)."""
    subjects = [s for s in subjects if len(s) >= 2]
    if not subjects:
        return {"kappa": None, "subjects": 0, "ratings": 0, "observed": None, "expected": None,
                "note": "no candidate was reviewed by two or more reviewers (with two agents each candidate has "
                        "one reviewer: agreement between reviewers needs three or more agents)"}
    p_i = []
    totals: Counter = Counter()
    for s in subjects:
        c = Counter(s)
        n = len(s)
        p_i.append(sum(c[k] * (c[k] - 1) for k in categories) / (n * (n - 1)))
        totals.update(c)
    ratings = sum(totals.values())
    observed = sum(p_i) / len(p_i)
    expected = sum((totals[k] / ratings) ** 2 for k in categories)
    out = {"subjects": len(subjects), "ratings": ratings, "observed": observed, "expected": expected}
    if expected >= 1.0:
        return {**out, "kappa": None, "note": "every verdict was the same: agreement beyond chance is undefined"}
    return {**out, "kappa": (observed - expected) / (1.0 - expected)}


def cohen_kappa(pairs: list[tuple[str, str]], categories: tuple[str, ...] = ("approve", "reject")) -> dict[str, Any]:
    """Cohen's kappa of two raters over the items both rated."""
    n = len(pairs)
    if not n:
        return {"items": 0, "agreement": None, "kappa": None, "note": "never reviewed the same candidate"}
    observed = sum(1 for a, b in pairs if a == b) / n
    ca, cb = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    expected = sum((ca[k] / n) * (cb[k] / n) for k in categories)
    if expected >= 1.0:
        return {"items": n, "agreement": observed, "kappa": None,
                "note": "both always gave the same verdict: kappa is undefined"}
    return {"items": n, "agreement": observed, "kappa": (observed - expected) / (1.0 - expected)}


def reviewer_agreement(d: Data) -> dict[str, Any]:
    """Fleiss' kappa over all verdicts; Cohen's kappa per pair of reviewers."""
    items = _rating_items(d)
    reviewers = sorted({r for ratings in items.values() for r in ratings})
    fleiss = fleiss_kappa([list(r.values()) for r in items.values()])
    pairs = []
    for a, b in combinations(reviewers, 2):
        shared = [(r[a], r[b]) for r in items.values() if a in r and b in r]
        pairs.append({"a": a, "b": b, **cohen_kappa(shared)})
    who: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for (_, _, author), ratings in items.items():
        for reviewer, verdict in ratings.items():
            who[(reviewer, author)][0] += verdict == "approve"
            who[(reviewer, author)][1] += 1
    approvals = [{"reviewer": r, "author": a, "approvals": n[0], "verdicts": n[1], "rate": ratio(n[0], n[1])}
                 for (r, a), n in sorted(who.items())]
    return {"fleiss": fleiss, "reviewers": reviewers, "pairs": pairs, "approvals": approvals}


def _matches_final(t: TR, v: dict) -> bool | None:
    """Did this verdict agree with the task run's final decision? None: not scored.

    Accepted: verdicts on the winner match when they approve (the decision says
    nothing about the other candidates). Rejected: every verdict matches when
    it rejects. Only the final round is scored; an abstention never matches.
    """
    if not t.recorded or v["round"] != t.last_round:
        return None
    if t.outcome == "accepted":
        if v["candidate"] != t.row["winner"]:
            return None
        return v["verdict"] == "approve"
    if t.outcome == "rejected":
        return v["verdict"] == "reject"
    return None


def _specs_by_name(d: Data) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """What each agent name stood for in the runs of the counted task runs: its agent specs and
    its reviewer specs. Names are a, b, c... unless given, so without this the per-agent figures
    could not be read as per-model ones; a name that meant different models in different runs
    shows them all."""
    specs: dict[str, set[str]] = defaultdict(set)
    reviewers: dict[str, set[str]] = defaultdict(set)
    for run_id in {t.row["run"] for t in d.counted}:
        cfg = (d.runs.get(run_id) or {}).get("config") or {}
        for a in cfg.get("agents") or []:
            if isinstance(a, dict) and a.get("name") and a.get("spec"):
                specs[a["name"]].add(str(a["spec"]))
        for name, spec in (cfg.get("reviewers") or {}).items():
            if spec:
                reviewers[name].add(str(spec))
    return specs, reviewers


def agents(d: Data) -> list[dict[str, Any]]:
    """Per agent: as reviewer (approval rate, agreement with the final decision and with
    the tests), as author (how often its candidates were approved, passed, won)."""
    names: list[str] = []
    for t in d.counted:
        for c in t.candidates:
            if c["agent"] not in names:
                names.append(c["agent"])
        for v in t.verdicts:
            if v["reviewer"] not in names:
                names.append(v["reviewer"])
    specs, reviewer_specs = _specs_by_name(d)
    out = []
    for name in sorted(names):
        given = Counter()
        received = Counter()
        matched = scored = 0
        with_tests = agree_tests = 0
        cands = passing = wins = 0
        for t in d.counted:
            by_key = {(c["round"], c["agent"]): c for c in t.candidates}
            for v in t.verdicts:
                if v["reviewer"] == name:
                    given[v["verdict"]] += 1
                    m = _matches_final(t, v)
                    if m is not None:
                        scored += 1
                        matched += m
                    c = by_key.get((v["round"], v["candidate"]))
                    if c is not None and v["verdict"] != "abstain":
                        with_tests += 1
                        agree_tests += (v["verdict"] == "approve") == tests_pass(c)
                if v["candidate"] == name:
                    received[v["verdict"]] += 1
            for c in t.candidates:
                if c["agent"] == name:
                    cands += 1
                    passing += tests_pass(c)
            if t.outcome == "accepted" and t.row["winner"] == name:
                wins += 1
        out.append({
            "agent": name,
            "specs": sorted(specs.get(name, ())),
            "reviewer_specs": sorted(reviewer_specs.get(name, ())),
            "reviews": sum(given.values()),
            "approvals": given["approve"],
            "rejections": given["reject"],
            "abstentions": given["abstain"],
            "approval_rate": ratio(given["approve"], given["approve"] + given["reject"]),
            "reviews_received": received["approve"] + received["reject"],
            "approvals_received": received["approve"],
            "approved_rate": ratio(received["approve"], received["approve"] + received["reject"]),
            "matched_final": matched,
            "scored": scored,
            "accuracy": ratio(matched, scored),
            "agrees_with_tests": ratio(agree_tests, with_tests),
            "candidates": cands,
            "candidates_passing": passing,
            "wins": wins,
        })
    return out


@dataclass
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    money: Money = field(default_factory=Money)
    calls: int = 0
    seconds: float = 0.0

    def add(self, row: dict) -> None:
        self.tokens_in += row.get("tokens_in") or 0
        self.tokens_out += row.get("tokens_out") or 0
        self.money.add(row.get("cost"), row.get("cost_known"))
        self.calls += row.get("calls") or 0
        self.seconds += row.get("seconds") or 0.0

    def __iadd__(self, other: "Usage") -> "Usage":
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.money += other.money
        self.calls += other.calls
        self.seconds += other.seconds
        return self

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out

    def json(self) -> dict[str, Any]:
        return {
            "tokens": self.tokens, "tokens_in": self.tokens_in, "tokens_out": self.tokens_out,
            "cost": self.money.json(), "calls": self.calls, "agent_seconds": self.seconds,
            "tokens_per_call": ratio(self.tokens, self.calls),
            "cost_per_call": ratio(self.money.total, self.calls) if self.money.total is not None else None,
        }


def _usage(trs: list[TR]) -> tuple[Usage, Usage, dict[str, Usage], dict[str, Usage]]:
    """(solve, review, solve per agent, review per agent) over task runs whose spending is known."""
    solve, review = Usage(), Usage()
    solve_by: dict[str, Usage] = defaultdict(Usage)
    review_by: dict[str, Usage] = defaultdict(Usage)
    for t in trs:
        if not t.costed:
            continue
        for c in t.candidates:
            solve.add(c)
            solve_by[c["agent"]].add(c)
        for v in t.verdicts:
            review.add(v)
            review_by[v["reviewer"]].add(v)
    return solve, review, solve_by, review_by


def _solved(agent: str, t: TR) -> bool:
    """Whether ``agent`` solved task run ``t``: it produced a candidate (status ok) every time it was asked.

    A candidate that errored or timed out (every model call got a 5xx, the budget ran out, the
    agent crashed) is no solve: it cost next to nothing because it did next to nothing, and
    counting it would make that agent the cheap baseline and inflate the multiplier. Whether
    the candidate's tests pass does not matter: its solve is what one agent alone would have cost.
    """
    mine = [c for c in t.candidates if c["agent"] == agent]
    return bool(mine) and all(c.get("status") == "ok" for c in mine)


def _baseline(solve_by: dict[str, Usage], trs: list[TR] | None = None) -> dict[str, Any]:
    """The cheapest single agent's solve on the costed task runs of ``trs`` (one suite run).

    One agent gives the tokens, the money and the agent-seconds of the baseline, so the three
    multipliers compare the run with the same alternative: running that agent alone. It is the
    cheapest by money when the money of every candidate agent is known, else by tokens (ties:
    fewer tokens, then fewer agent-seconds, then the name).

    Only agents that solved (``_solved``) every costed task run qualify: under ``--policy
    cascade`` a later agent solves only the task runs the first two did not settle, and an agent
    that errored spent next to nothing where it failed; neither is what one agent alone would
    have cost on all of them. When no agent solved them all, those that solved the most do
    (``partial``: their solve covers fewer task runs than the run, so the multiplier reads
    high); when none solved any, there is no baseline.
    """
    partial = False
    if trs is not None:
        costed = [t for t in trs if t.costed]
        solved = {a: sum(_solved(a, t) for t in costed) for a in solve_by}
        most = max(solved.values(), default=0)
        if not most:
            return {"tokens": None, "cost": None, "agent_seconds": None, "agent": None, "partial": False}
        partial = most < len(costed)
        solve_by = {a: u for a, u in solve_by.items() if solved[a] == most}
    if not solve_by:
        return {"tokens": None, "cost": None, "agent_seconds": None, "agent": None, "partial": False}
    by_money = all(u.money.total is not None for u in solve_by.values())
    cheapest = min(sorted(solve_by), key=lambda a: ((solve_by[a].money.total,) if by_money else ())
                   + (solve_by[a].tokens, solve_by[a].seconds))
    u = solve_by[cheapest]
    return {"agent": cheapest, "tokens": u.tokens, "cost": u.money.total, "agent_seconds": u.seconds,
            "partial": partial}


def cut_short(d: Data) -> dict[str, Any]:
    """Spend of work a kill or crash cut short: the spend journal beyond what candidates and verdicts record,
    and the model calls it holds as sent but never answered.

    Such work never became a candidate or a verdict (``resume`` ran it again,
    and its second spend is in them), so only the journal, written as each
    charge happened, still knows it. Parked task runs' charges are left out:
    their candidates are not written yet. A call still in flight was sent and
    may have been billed, but no answer said for how much: it makes the money
    unknown (``cost`` None, what is known in ``cost_known``), never $0.
    """
    tokens, known, runs, in_flight = 0, 0.0, 0, 0
    for t in d.task_runs:
        j = t.journal
        if j is None:
            continue
        waiting = int(j.get("in_flight") or 0)
        extra_tokens, extra_cost = 0, 0.0
        if not t.pending:
            rows = t.candidates + t.verdicts
            recorded_tokens = sum((r.get("tokens_in") or 0) + (r.get("tokens_out") or 0) for r in rows)
            # A candidate of unknown cost still recorded its known part (what a failed solve reported).
            recorded_cost = sum((r.get("cost") if r.get("cost") is not None else r.get("cost_known")) or 0.0
                                for r in rows)
            extra_tokens = max(0, int(j["tokens"] or 0) - recorded_tokens)
            extra_cost = max(0.0, float(j["cost"] or 0.0) - recorded_cost)
        if extra_tokens or extra_cost > 1e-12 or waiting:
            runs += 1
            tokens += extra_tokens
            known += extra_cost
            in_flight += waiting
    return {"task_runs": runs, "tokens": tokens, "cost": None if in_flight else known, "cost_known": known,
            "calls_in_flight": in_flight}


def cost(d: Data) -> dict[str, Any]:
    """Tokens and money per call, per agent, per phase; the cost multiplier; review share."""
    solve, review, solve_by, review_by = _usage(d.task_runs)
    total = Usage()
    total += solve
    total += review
    # Multiplier: whole run / the cheapest single agent's solve on the same task runs, per
    # suite run (the agents are fixed within one), summed over runs.
    whole_tok = base_tok = 0
    whole_sec = base_sec = 0.0
    whole_money, base_money = Money(), 0.0
    base_money_known = True
    partial = no_baseline = 0
    runs = defaultdict(list)
    for t in d.task_runs:
        if t.costed:
            runs[t.row["run"]].append(t)
    for trs in runs.values():
        s, r, sb, _ = _usage(trs)
        b = _baseline(sb, trs)
        if b["agent"] is None:
            # No agent solved any of its task runs: no single-agent cost to set the run against,
            # and its spend alone over another run's baseline would read as extra cost.
            no_baseline += 1
            continue
        partial += b["partial"]
        whole_tok += s.tokens + r.tokens
        base_tok += b["tokens"] or 0
        whole_sec += s.seconds + r.seconds
        base_sec += b["agent_seconds"] or 0.0
        whole_money += s.money
        whole_money += r.money
        if b["cost"] is None:
            base_money_known = False
        else:
            base_money += b["cost"]
    multiplier: dict[str, Any] = {
        "tokens": ratio(whole_tok, base_tok),
        "cost": ratio(whole_money.total, base_money) if whole_money.total is not None and base_money_known else None,
        "agent_seconds": ratio(whole_sec, base_sec),
    }
    notes = []
    based = len(runs) - no_baseline
    if based and not base_tok:
        notes.append("the cheapest single agent used no tokens (offline agents): the token multiplier is undefined")
    if whole_money.unknown or not base_money_known:
        notes.append("some costs are unknown: the money multiplier is undefined")
    elif based and not base_money:
        notes.append("the cheapest single agent cost nothing: the money multiplier is undefined")
    if no_baseline:
        notes.append(f"{count_phrase(no_baseline, 'suite run')} left out: no agent solved any of its task runs")
    if partial:
        notes.append(f"in {count_phrase(partial, 'suite run')} no single agent solved every task run (an error or "
                     "timeout instead of a candidate): the baseline is the agent that solved the most, so the "
                     "multiplier reads high")
    if notes:
        multiplier["note"] = "; ".join(notes)
    agents_out = []
    for name in sorted(set(solve_by) | set(review_by)):
        both = Usage()
        both += solve_by.get(name, Usage())
        both += review_by.get(name, Usage())
        agents_out.append({"agent": name, "solve": solve_by.get(name, Usage()).json(),
                           "review": review_by.get(name, Usage()).json(), "total": both.json()})
    return {
        "task_runs": len(d.counted),
        "task_runs_costed": sum(1 for t in d.task_runs if t.costed),
        **total.json(),
        "by_phase": {"solve": solve.json(), "review": review.json()},
        "by_agent": agents_out,
        "multiplier": multiplier,
        "cut_short": cut_short(d),
        "review_share": {
            "tokens": ratio(review.tokens, total.tokens),
            "cost": ratio(review.money.total, total.money.total)
            if review.money.total is not None and total.money.total is not None else None,
            "agent_seconds": ratio(review.seconds, total.seconds),
        },
    }


def _union(intervals: list[tuple[float, float]]) -> float:
    length, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        length += b - max(a, end)
        end = b
    return length


def _peak(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(a, 1) for a, b in intervals if b > a] + [(b, -1) for a, b in intervals if b > a],
                    key=lambda p: (p[0], p[1]))
    now = peak = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


AGENT_NODES = ("solve", "review")


def _spans(events: list[dict], nodes: tuple[str, ...] | None = None) -> list[tuple[float, float]]:
    out = []
    for e in events:
        if nodes is None or e["node"] in nodes:
            a, b = parse_ts(e["started"]), parse_ts(e["finished"])
            out.append((a.timestamp(), max(a, b).timestamp()))
    return out


def parallel(d: Data) -> dict[str, Any]:
    """Parallel efficiency = agent busy-seconds / (wall-clock x agents), per task run, summed.

    Busy-seconds: the solve and review nodes' durations. Wall-clock: the time
    some node of the task run was running (the union of its node intervals, so
    a wait for a human or a crash's downtime is not counted). Agents: how many
    agents solved. Mean agents running at once: busy-seconds / the time at
    least one agent was running, per suite run (task runs of a run with --jobs
    overlap), summed.
    """
    busy = wall = agent_wall = 0.0
    covered = 0
    by_run: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for t in d.recorded:
        if not t.events:
            continue
        covered += 1
        agent_spans = _spans(t.events, AGENT_NODES)
        b = sum(y - x for x, y in agent_spans)
        w = _union(_spans(t.events))
        n = len({e["agent"] for e in t.events if e["node"] == "solve" and e["agent"]}) or 1
        busy += b
        wall += w
        agent_wall += w * n
        by_run[t.row["run"]].extend(agent_spans)
    running = sum(_union(s) for s in by_run.values())
    return {
        "task_runs": covered,
        "busy_seconds": busy,
        "wall_seconds": wall,
        "agent_wall_seconds": agent_wall,
        "efficiency": ratio(busy, agent_wall),
        "mean_agents_running": ratio(busy, running),
        "peak_agents_running": max((_peak(s) for s in by_run.values()), default=0),
    }


def majority_pick(cands: list[dict], verdicts: list[dict]) -> dict | None:
    """The candidate a majority of its reviewers approved (most approvals, then the highest
    agreement score, then the first agent), or None when no candidate has one.

    A reviewer that abstained is still one of its reviewers, as in the majority
    policy's quorum: one approval and one abstention is no majority.
    """
    best, best_key = None, None
    for i, c in enumerate(cands):
        on = [v["verdict"] for v in verdicts if v["candidate"] == c["agent"]]
        yes = on.count("approve")
        if yes * 2 <= len(on):
            continue
        key = (yes, c.get("agreement") or 0.0, -i)
        if best_key is None or key > best_key:
            best, best_key = c, key
    return best


def _quality_entry(hits: list[str], scored: list[str], key: str = "task_runs") -> dict[str, Any]:
    return {"count": len(hits), "of": len(scored), "rate": ratio(len(hits), len(scored)), key: hits}


def quality_sets(d: Data) -> dict[str, tuple[list[str], list[str]]]:
    """Decision quality against holdout tests, where a task has holdout/ (and only there):
    name -> (ids that hit, ids scored).

    escaped defects: accepted by consensus, the winner fails holdout.
    wrong rejections: rejected by consensus, some candidate passes holdout.
    needless escalations: escalated, and the majority's pick in the first escalated round
      passes holdout (a majority of its reviewers approved it; no majority: not needless).
    human errors (escalation ids): a human picked a candidate that fails holdout, or
      rejected all while one passes.
    """
    escaped, accepted = [], []
    wrong_rej, rejected = [], []
    needless, escalated = [], []
    human_err, human = [], []
    # An escalation still waiting counts too: its candidates were written with
    # their holdout results as it parked, and the morning's report should say
    # whether the night's escalations were needed before anyone decides them.
    for t in d.task_runs:
        if not t.escalations or not (t.recorded or t.status == "parked"):
            continue
        first = min(t.escalations, key=lambda e: e["round"])
        cands = t.round_candidates(first["round"])
        if any(holdout_known(c) for c in cands):
            escalated.append(t.id)
            pick = majority_pick(cands, t.round_verdicts(first["round"]))
            if pick is not None and holdout_passes(pick):
                needless.append(t.id)
    for t in d.recorded:
        final = t.round_candidates(t.last_round)
        if t.decided_by == "consensus" and any(holdout_known(c) for c in final):
            if t.outcome == "accepted":
                win = next((c for c in final if c["agent"] == t.row["winner"]), None)
                if win is not None and holdout_known(win):
                    accepted.append(t.id)
                    if not holdout_passes(win):
                        escaped.append(t.id)
            elif t.outcome == "rejected":
                rejected.append(t.id)
                if any(holdout_passes(c) for c in final):
                    wrong_rej.append(t.id)
        for e in t.escalations:
            if e["action"] not in ("pick", "reject"):
                continue
            cands = t.round_candidates(e["round"])
            if not any(holdout_known(c) for c in cands):
                continue
            human.append(e["id"])
            if e["action"] == "pick":
                picked = next((c for c in cands if c["agent"] == e["pick"]), None)
                wrong = picked is None or not holdout_passes(picked)
            else:
                wrong = any(holdout_passes(c) for c in cands)
            if wrong:
                human_err.append(e["id"])
    return {
        "escaped_defects": (escaped, accepted),
        "wrong_rejections": (wrong_rej, rejected),
        "needless_escalations": (needless, escalated),
        "human_errors": (human_err, human),
    }


def quality(d: Data) -> dict[str, Any]:
    """Decision quality (see quality_sets): count, of how many scored, rate, which."""
    sets = quality_sets(d)
    out: dict[str, Any] = {
        "task_runs_with_holdout": sum(1 for t in d.task_runs if (t.recorded or t.status == "parked")
                                      and any(holdout_known(c) for c in t.candidates)),
    }
    for name, (hits, scored) in sets.items():
        out[name] = _quality_entry(hits, scored, key="escalations" if name == "human_errors" else "task_runs")
    return out


THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def agreement_scores(d: Data) -> dict[str, Any]:
    """The agreement score (score.py) per outcome, and what accepting by threshold would have done."""
    scored = [t for t in d.counted if t.row.get("agreement") is not None]
    groups: dict[str, list[float]] = defaultdict(list)
    for t in scored:
        if t.escalated:
            key = "escalated"
        else:
            key = f"{t.outcome} by consensus"
        groups[key].append(t.row["agreement"])
    thresholds = []
    for th in THRESHOLDS:
        over = [t for t in scored if t.row["agreement"] >= th]
        known = fails = 0
        for t in over:
            pick = next((c for c in t.round_candidates(t.last_round) if c["agent"] == t.row["agreement_pick"]), None)
            if pick is not None and holdout_known(pick):
                known += 1
                fails += not holdout_passes(pick)
        thresholds.append({"threshold": th, "would_accept": len(over),
                           "escalations_avoided": sum(1 for t in over if t.escalated),
                           "holdout_known": known, "holdout_fails": fails})
    return {
        "task_runs": len(scored),
        "mean": mean(t.row["agreement"] for t in scored),
        "by_outcome": {k: {"task_runs": len(v), "mean": mean(v)} for k, v in sorted(groups.items())},
        "thresholds": thresholds,
    }


def agents_per_task(d: Data) -> dict[str, Any]:
    """Agents started per task run, and what the cascade saved against starting every configured agent.

    Over task runs whose spending is in the ledger (recorded, or parked and written as far as
    they got) that say both numbers (ledger schema 3 on): a task run parked at an escalation
    under the cascade started every agent, so leaving it out overstates the saving. The
    saving is an estimate: each agent not started would have cost one solve
    (the mean solve of the same task runs) and the reviews it adds — with m
    agents every agent reviews every other, m(m−1) reviews — at the mean
    review's cost. Money is estimated only when every known cost is known.
    """
    trs = [t for t in d.task_runs if t.costed and t.row.get("agents_used") and t.row.get("agents_configured")]
    used = sum(t.row["agents_used"] for t in trs)
    configured = sum(t.row["agents_configured"] for t in trs)
    solves_saved = configured - used
    reviews_saved = sum(t.row["agents_configured"] * (t.row["agents_configured"] - 1)
                        - t.row["agents_used"] * (t.row["agents_used"] - 1) for t in trs)
    solve, review, _, _ = _usage(trs)
    per_solve = {"tokens": ratio(solve.tokens, solve.money.items), "seconds": ratio(solve.seconds, solve.money.items),
                 "cost": ratio(solve.money.total, solve.money.items) if solve.money.total is not None else None}
    per_review = {"tokens": ratio(review.tokens, review.money.items), "seconds": ratio(review.seconds, review.money.items),
                  "cost": ratio(review.money.total, review.money.items) if review.money.total is not None else None}

    def est(key: str, actual: float | None) -> dict[str, Any]:
        a, b = per_solve[key], per_review[key]
        if actual is None or (solves_saved and a is None) or (reviews_saved and b is None):
            return {"actual": actual, "saved": None, "always_all": None, "ratio": None}
        saved = solves_saved * (a or 0.0) + reviews_saved * (b or 0.0)
        return {"actual": actual, "saved": saved, "always_all": actual + saved, "ratio": ratio(actual, actual + saved)}

    return {
        "task_runs": len(trs),
        "agents_used": used,
        "agents_configured": configured,
        "mean_agents_used": ratio(used, len(trs)),
        "mean_agents_configured": ratio(configured, len(trs)),
        "stopped_early": sum(1 for t in trs if t.row["agents_used"] < t.row["agents_configured"]),
        "agent_runs_ratio": ratio(used, configured),
        "solves_saved": solves_saved,
        "reviews_saved": reviews_saved,
        "tokens": est("tokens", solve.tokens + review.tokens),
        "agent_seconds": est("seconds", solve.seconds + review.seconds),
        "cost": est("cost", Money(known=solve.money.known + review.money.known,
                                 unknown=solve.money.unknown + review.money.unknown).total),
    }


def per_run(d: Data) -> list[dict[str, Any]]:
    """One row per suite run (oldest first): what the report plots over time."""
    groups: dict[str, list[TR]] = defaultdict(list)
    for t in d.task_runs:
        groups[t.row["run"]].append(t)
    out = []
    for run_id, trs in groups.items():
        run = d.runs[run_id]
        counted = [t for t in trs if t.counted]
        s, r, sb, _ = _usage(trs)
        b = _baseline(sb, trs)
        money = Money()
        money += s.money
        money += r.money
        human = [m for t in counted for e in t.escalations if e["decided"]
                 and (m := _minutes(e["first_shown"], e["decided"])) is not None]
        k = sum(1 for t in counted if t.escalated)
        out.append({
            "run": run_id,
            "suite": run.get("suite"),
            "started": run.get("started") or min(t.row["started"] for t in trs),
            "task_runs": len(counted),
            "escalated": k,
            "rate": ratio(k, len(counted)),
            "human_minutes": sum(human),
            "tokens": s.tokens + r.tokens,
            "cost": money.json(),
            "agent_seconds": s.seconds + r.seconds,
            "baseline_agent": b["agent"],
            "multiplier_tokens": ratio(s.tokens + r.tokens, b["tokens"] or 0),
            "multiplier_agent_seconds": ratio(s.seconds + r.seconds, b["agent_seconds"] or 0.0),
            # The run's stored status stays "finished" (resume, gc, merge and the pytest plugin read it):
            # this says how many of its task runs a budget cap cut short or left unstarted.
            "stopped_by_cap": sum(1 for t in trs if t.stopped),
        })
    return sorted(out, key=lambda r: (r["started"], r["run"]))


def escalation_list(d: Data) -> list[dict[str, Any]]:
    """Every escalation in scope, oldest first, with the minutes its human spent."""
    out = []
    for t in d.task_runs:
        for e in t.escalations:
            out.append({
                **{k: e[k] for k in ("id", "task", "run", "task_run", "round", "reason", "created", "first_shown",
                                     "decided", "decided_by", "action", "pick", "guide")},
                "minutes": _minutes(e["first_shown"], e["decided"]) if e["decided"] else None,
                "outcome": t.outcome,
            })
    return sorted(out, key=lambda e: (e["created"], e["id"]))


def calibration_figure(ledger, calibration: Any, path: str | None = None) -> dict[str, Any]:
    """The policy file's threshold and certificate, and drift of the ledger's recent task runs from its window."""
    from .calibration import drift_for

    return {
        "file": path,
        "threshold": calibration.threshold,
        "summary": calibration.summary(),
        "certificate": calibration.certificate.model_dump(mode="json"),
        "drift": drift_for(ledger, calibration).model_dump(mode="json"),
    }


def compute(ledger, since: datetime | None = None, suite: str | None = None,
            calibration: Any = None, calibration_path: str | None = None) -> dict[str, Any]:
    """Every figure of the ledger (optionally task runs started since ``since``, of suite ``suite``).

    ``calibration`` (a crossreview.calibrate.Calibration, read from
    ``calibration_path``) adds its certificate and a drift check.
    """
    d = load(ledger, since=since, suite=suite)
    extra = {"calibration": calibration_figure(ledger, calibration, calibration_path) if calibration else None}
    return {
        "ledger": d.ledger,
        "schema": ledger.version,
        "filters": {"since": since.isoformat() if since else None, "suite": suite},
        "counts": counts(d),
        "interventions": interventions(d),
        "human_time": human_time(d),
        "autonomy": autonomy(d),
        "reviewer_agreement": reviewer_agreement(d),
        "agents": agents(d),
        "cost": cost(d),
        "parallel": parallel(d),
        "quality": quality(d),
        "agreement_score": agreement_scores(d),
        "agents_per_task": agents_per_task(d),
        "runs": per_run(d),
        "escalations": escalation_list(d),
        **extra,
    }
