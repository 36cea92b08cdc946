"""The figures as people read them: number formats (shared with the HTML report) and
the rich tables of ``crossreview stats``."""

from __future__ import annotations

from typing import Any

from ..words import count_phrase, when

NA = "n/a"


def pct(rate: float | None) -> str:
    return NA if rate is None else f"{rate * 100:.1f}%"


def frac(k: int, n: int, rate: float | None = None) -> str:
    """'50.0% (3/6)'."""
    if not n:
        return f"{NA} (0)"
    return f"{pct(rate if rate is not None else k / n)} ({k}/{n})"


def num(x: float | None, digits: int = 1) -> str:
    return NA if x is None else f"{x:,.{digits}f}"


def kappa(x: float | None) -> str:
    return NA if x is None else f"{x:.3f}"


def minutes(x: float | None) -> str:
    if x is None:
        return NA
    if x >= 120:
        return f"{x:,.1f} min ({x / 60:,.1f} h)"
    return f"{x:.1f} min"


def tokens(n: int | None) -> str:
    return NA if n is None else f"{n:,}"


def money(m: dict[str, Any] | None, digits: int = 4) -> str:
    """A Money sum: '$0.1530', 'unknown', or '≥ $0.2520 (1 of 38 unknown)'; never unknown as 0."""
    if m is None:
        return NA
    if m["items"] and m["unknown"] == m["items"] and not m["known"]:
        return "unknown"
    if m["unknown"]:
        return f"≥ ${m['known']:.{digits}f} ({m['unknown']} of {m['items']} unknown)"
    return f"${m['known']:.{digits}f}"


def dollars(x: float | None, digits: int = 4) -> str:
    return NA if x is None else f"${x:.{digits}f}"


def cut_short(c: dict[str, Any]) -> str:
    """The spend of work cut short: unknown money (model calls killed in flight) is never shown as $0."""
    flying = c.get("calls_in_flight") or 0
    cost = dollars(c["cost"], 4) if c["cost"] is not None else (
        f"unknown (≥ ${c['cost_known']:.4f}: {count_phrase(flying, 'model call')} killed in flight, their cost unknown)")
    return f"tokens {tokens(c['tokens'])}, money {cost} in {count_phrase(c['task_runs'], 'task run')}"


def agent_specs(a: dict[str, Any]) -> str:
    """What an agent name stood for: 'llm:openai/x', with its reviewer when that is another spec;
    several when the name meant different agents in different runs (its figures mix them)."""
    specs, reviewers = a.get("specs") or [], a.get("reviewer_specs") or []
    text = " | ".join(specs) if specs else NA
    if reviewers and reviewers != specs:
        text += f" (reviews with {' | '.join(reviewers)})"
    if len(specs) > 1:
        text += " — mixed runs"
    return text


def times(x: float | None) -> str:
    return NA if x is None else f"{x:.2f}×"


def seconds(x: float | None) -> str:
    return NA if x is None else f"{x:,.1f} s"


# --- rich -------------------------------------------------------------------------


def _table(title: str, *columns: str):
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold")
    for i, c in enumerate(columns):
        # The row's name (agent, tag, suite, pair) is folded, not cut to "shortc…": on a narrow
        # terminal it wraps onto a second line with every character still there.
        t.add_column(c, justify="left" if i == 0 else "right", overflow="fold" if i == 0 else "ellipsis")
    return t


def _kv(title: str, rows: list[tuple[str, str]], note: str | None = None):
    from rich.table import Table

    t = Table(title=title, title_justify="left", title_style="bold", show_header=False, box=None, padding=(0, 2))
    t.add_column("figure", style="dim")
    t.add_column("value")
    for k, v in rows:
        t.add_row(k, v)
    if not note:
        return t
    from rich.console import Group
    from rich.text import Text

    return Group(t, Text("  note: " + note, style="dim"))


def _rates(title: str, rows: list[dict]):
    t = _table(title, "", "task runs", "escalated", "rate")
    for r in rows:
        t.add_row(r["key"], str(r["task_runs"]), str(r["escalated"]), pct(r["rate"]))
    return t


def print_stats(console, f: dict[str, Any]) -> None:
    """Print every figure as rich tables."""
    from rich.markup import escape

    c, iv, ht, au = f["counts"], f["interventions"], f["human_time"], f["autonomy"]
    scope = []
    if f["filters"]["since"]:
        scope.append(f"since {when(f['filters']['since'])}")
    if f["filters"]["suite"]:
        scope.append(f"suite {f['filters']['suite']}")
    console.print(f"[bold]crossreview stats[/bold] · ledger {f['ledger']}" + (" · " + ", ".join(scope) if scope else ""),
                  highlight=False)
    if not c["task_runs"] and not c["errors"] and not c["unfinished"]:
        console.print("no task runs in the ledger" + (" for " + ", ".join(scope) if scope else "")
                      + ": run `crossreview run` first")
        return
    extra = []
    cap = c.get("stopped_by_cap") or {}
    if c["errors"]:
        unstarted = cap.get("not_started", 0)
        extra.append(f"{c['errors']} failed with an error"
                     + (f" ({unstarted} not started: a budget cap ran out)" if unstarted else ""))
    if c["unfinished"]:
        extra.append(f"{c['unfinished']} unfinished (running, or killed: `crossreview resume`)")
    console.print(_kv("Task runs", [
        ("suite runs", str(c["runs"])),
        ("task runs", f"{c['task_runs']}: {c['accepted']} accepted, {c['rejected']} rejected, {c['waiting']} waiting for a human"),
        ("decided by consensus", f"{c['by_consensus']['accepted']} accepted, {c['by_consensus']['rejected']} rejected"),
        ("decided by a human", f"{c['by_human']['accepted']} accepted, {c['by_human']['rejected']} rejected"
                               + (f" ({count_phrase(c['guided'], 'guided round')})" if c["guided"] else "")),
        # Without this line a task run the cap cut short reads as one that did all its work.
        *([("stopped by a budget cap",
            f"{cap['cut_short']} cut short ({cap['accepted']} accepted, {cap['rejected']} rejected, "
            f"{cap['waiting']} waiting), decided without the agents and reviews the cap stopped")]
          if cap.get("cut_short") else []),
    ], note="; ".join(extra) or None))

    console.print(_kv("Interventions", [
        ("intervention rate", frac(iv["escalated"], iv["task_runs"], iv["rate"])),
        ("escalations per 100 task runs", num(ht["escalations_per_100_task_runs"])),
        ("human minutes per escalation (shown → decided)",
         f"median {minutes(ht['median_minutes'])}, p90 {minutes(ht['p90_minutes'])} ({ht['decided']} decided, "
         + (f"{ht['unseen']} decided unseen: time unknown, " if ht["unseen"] else "")
         + f"{ht['waiting']} waiting)"),
        ("human minutes per 100 task runs", minutes(ht["minutes_per_100_task_runs"])),
        ("human minutes in all", minutes(ht["total_minutes"])),
        ("task runs per intervention", num(au["task_runs_per_intervention"])),
        ("task runs between interventions", f"mean {num(au['mean_task_runs_between'])}, "
                                            f"median {num(au['median_task_runs_between'])}"),
        ("wall-clock between interventions", f"mean {minutes(au['mean_minutes_between'])}, "
                                             f"median {minutes(au['median_minutes_between'])}"),
    ], note=au.get("note")))
    console.print(_rates("Intervention rate per suite", iv["by_suite"]))
    console.print(_rates("per tag", iv["by_tag"]))
    console.print(_rates("per week", iv["by_week"]))

    ra = f["reviewer_agreement"]
    fl = ra["fleiss"]
    console.print(_kv("Reviewer agreement", [
        ("Fleiss' kappa", kappa(fl["kappa"]) + (f" over {count_phrase(fl['subjects'], 'candidate')}, {count_phrase(fl['ratings'], 'verdict')}"
                                                if fl["subjects"] else "")),
    ], note=fl.get("note")))
    if ra["pairs"]:
        t = _table("Cohen's kappa per reviewer pair", "pair", "shared candidates", "same verdict", "kappa")
        for p in ra["pairs"]:
            t.add_row(f"{p['a']} · {p['b']}", str(p["items"]), pct(p["agreement"]), kappa(p["kappa"]))
        console.print(t)

    t = _table("Agents", "agent", "spec", "approves (as reviewer)", "approved (as author)", "matches final decision",
               "agrees with tests", "tests pass", "wins")
    t.columns[1].justify = "left"  # a model's name reads from its start
    t.columns[1].overflow = "fold"  # ... and is only useful whole ("command:{pytho…" says nothing)
    for a in f["agents"]:
        t.add_row(
            a["agent"],
            agent_specs(a),
            frac(a["approvals"], a["approvals"] + a["rejections"], a["approval_rate"])
            + (f" +{a['abstentions']} abstained" if a["abstentions"] else ""),
            frac(a["approvals_received"], a["reviews_received"], a["approved_rate"]),
            frac(a["matched_final"], a["scored"], a["accuracy"]),
            pct(a["agrees_with_tests"]),
            f"{a['candidates_passing']}/{a['candidates']}",
            str(a["wins"]),
        )
    console.print(t)

    co = f["cost"]
    t = _table("Cost" + ("" if co["task_runs_costed"] == co["task_runs"] else
                         f" (of {count_phrase(co['task_runs_costed'], 'task run')} whose spending is in the ledger)"),
               "", "tokens", "money", "calls", "tokens/call", "money/call", "agent-seconds")

    def usage_row(name: str, u: dict) -> None:
        t.add_row(name, tokens(u["tokens"]), money(u["cost"]), str(u["calls"]), num(u["tokens_per_call"]),
                  dollars(u["cost_per_call"], 6), seconds(u["agent_seconds"]))

    usage_row("solve", co["by_phase"]["solve"])
    usage_row("review", co["by_phase"]["review"])
    for a in co["by_agent"]:
        usage_row(f"  {a['agent']} solve", a["solve"])
        usage_row(f"  {a['agent']} review", a["review"])
    usage_row("whole run", co)
    console.print(t)
    m, rs = co["multiplier"], co["review_share"]
    console.print(_kv("Cost of parallelism", [
        ("cost multiplier (whole run / cheapest single agent's solve)",
         f"tokens {times(m['tokens'])}, money {times(m['cost'])}, agent-seconds {times(m['agent_seconds'])}"),
        ("review share of the total", f"tokens {pct(rs['tokens'])}, money {pct(rs['cost'])}, "
                                      f"agent-seconds {pct(rs['agent_seconds'])}"),
        *([("spent on work cut short (killed or crashed, redone by resume; not in the table)",
            cut_short(co["cut_short"]))] if co["cut_short"]["task_runs"] else []),
        ("parallel efficiency (busy / (wall-clock × agents))", pct(f["parallel"]["efficiency"])),
        ("mean agents running at once (while any runs)",
         f"{num(f['parallel']['mean_agents_running'], 2)} (peak {f['parallel']['peak_agents_running']})"),
    ], note=m.get("note")))

    q = f["quality"]
    if q["task_runs_with_holdout"]:
        t = _table(f"Decision quality (holdout tests, {count_phrase(q['task_runs_with_holdout'], 'task run')})", "", "count", "rate")
        # "by consensus": a human's pick is scored under human errors, so "4 accepted" above and
        # "1/3" here would otherwise not add up for the reader (the report says it the same way).
        for key, label in (("escaped_defects", "escaped defects (accepted by consensus, holdout fails)"),
                           ("wrong_rejections", "wrong rejections (rejected by consensus, a candidate passes holdout)"),
                           ("needless_escalations", "needless escalations (majority's pick passes holdout)"),
                           ("human_errors", "human errors (pick fails holdout / reject while one passes)")):
            e = q[key]
            t.add_row(label, f"{e['count']}/{e['of']}", pct(e["rate"]))
        console.print(t)
    else:
        console.print("[bold]Decision quality[/bold]: no task has holdout/ tests, nothing to score against")

    s = f["agreement_score"]
    rows = [("mean agreement score", num(s["mean"], 3) + f" over {count_phrase(s['task_runs'], 'task run')}")]
    for k, v in s["by_outcome"].items():
        rows.append((f"  {k}", f"{num(v['mean'], 3)} ({v['task_runs']})"))
    # A user reading stats wants what the score means, not where its code lives.
    console.print(_kv("Agreement score (README: \"The agreement score\")", rows))

    ap = f.get("agents_per_task")
    if ap and ap["task_runs"]:
        def saved(e: dict, fmt) -> str:
            if e["saved"] is None:
                return f"{fmt(e['actual'])} (saving unknown)"
            return f"{fmt(e['actual'])} against ≈{fmt(e['always_all'])} always running all: saved ≈{fmt(e['saved'])} ({times(e['ratio'])})"

        console.print(_kv("Agents per task run (cascade)", [
            ("agents started per task run", f"mean {num(ap['mean_agents_used'], 2)} of {num(ap['mean_agents_configured'], 2)} "
                                            f"configured ({ap['stopped_early']}/{ap['task_runs']} stopped early)"),
            ("agent runs / always all", f"{ap['agents_used']}/{ap['agents_configured']} = {times(ap['agent_runs_ratio'])}"),
            ("not started", f"{count_phrase(ap['solves_saved'], 'solve')}, {count_phrase(ap['reviews_saved'], 'review')}"),
            ("tokens", saved(ap["tokens"], lambda x: tokens(None if x is None else int(round(x))))),
            ("money", saved(ap["cost"], dollars)),
            ("agent-seconds", saved(ap["agent_seconds"], seconds)),
        ], note="saving estimated at the mean solve and review of the same task runs"))

    cal = f.get("calibration")
    if cal:
        cert, dr, w = cal["certificate"], cal["drift"], cal["certificate"]["window"]
        rows = [
            ("policy file", str(cal["file"])),
            ("threshold", cal["summary"]),
            # when(): the policy file may hold any offset; cutting its ISO text would show that clock as if UTC.
            ("computed on", f"{w['ledger']}: {count_phrase(cert['labeled'], 'labeled task run')}, {when(w['first'])} → "
                            f"{when(w['last'])}" + (f", suite {w['suite']}" if w.get("suite") else "")),
            ("computed at", when(cert["computed"])),
            ("recent task runs (after the window)",
             f"{dr['recent']}" + (f", {pct(dr['share_at_or_above'])} at or above the threshold (window "
                                  f"{pct(w['share_at_or_above'])})" if dr["share_at_or_above"] is not None else "")),
        ]
        console.print(_kv("Calibration (crossreview calibrate)", rows))
        if dr.get("warning"):
            console.print(f"[bold yellow]drift warning:[/bold yellow] {escape(dr['warning'])}", highlight=False)
