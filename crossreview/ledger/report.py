"""`crossreview report`: the figures as one self-contained HTML file.

No server, no CDN, no JavaScript: the plots are SVG written here, the styles
are inline, so the file opens offline in any browser and can be mailed or
attached to a CI run. Every plot is an ``<svg class="plot" data-plot=NAME>``
whose drawn marks carry ``class="mark"`` (the tests count them in Chromium).
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any, Callable, Sequence

from ..models import utcnow
from ..packet import reasons_heading
from ..words import count_phrase, when
from . import render as R

GREEN, RED, AMBER, BLUE, PURPLE, GREY = "#2e9d5b", "#d1495b", "#e8a33d", "#00798c", "#5b4b8a", "#9aa5b1"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif"
_DIFF_CHARS = 8000


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x), quote=True)


def _nice_max(v: float) -> float:
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1.0
    import math

    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * exp >= v:
            return m * exp
    return 10 * exp


def _svg(name: str, w: int, h: int, label: str, body: list[str]) -> str:
    return (f'<svg class="plot" data-plot="{esc(name)}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" '
            f'role="img" aria-label="{esc(label)}" '
            f'style="max-width:100%;height:auto;font-family:{FONT}"><title>{esc(label)}</title>'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, s: str, *, size: int = 11, anchor: str = "middle", fill: str = "#333",
          weight: str = "normal", rotate: float | None = None, cls: str = "") -> str:
    tr = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate else ""
    c = f' class="{cls}"' if cls else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}" '
            f'font-weight="{weight}"{tr}{c}>{esc(s)}</text>')


def _empty(name: str, label: str, why: str, w: int = 460, h: int = 120) -> str:
    body = [f'<rect x="0.5" y="0.5" width="{w - 1}" height="{h - 1}" fill="#fafafa" stroke="#ddd"/>',
            _text(w / 2, h / 2, why, size=12, fill="#777")]
    return _svg(name, w, h, label, body).replace('class="plot"', 'class="plot" data-empty="1"', 1)


def bar_chart(name: str, label: str, cats: Sequence[str], values: Sequence[float | None], *,
              fmt: Callable[[float | None], str], ymax: float | None = None, color: str = BLUE,
              tips: Sequence[str] | None = None, ylabel: str = "", w: int = 460, h: int = 250) -> str:
    """Vertical bars, one per category, value written above each."""
    if not cats:
        return _empty(name, label, "nothing to plot yet")
    left, right, top, bottom = 62, 12, 18, 62
    pw, ph = w - left - right, h - top - bottom
    vmax = ymax if ymax is not None else _nice_max(max((v or 0) for v in values))
    body = []
    for i in range(5):
        y = top + ph - ph * i / 4
        body.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>')
        body.append(_text(left - 6, y + 4, fmt(vmax * i / 4), size=10, anchor="end", fill="#666"))
    if ylabel:
        body.append(_text(11, top + ph / 2, ylabel, size=10, fill="#666", rotate=-90))
    slot = pw / len(cats)
    bw = max(4.0, min(48.0, slot * 0.6))
    for i, (cat, v) in enumerate(zip(cats, values)):
        x = left + slot * i + (slot - bw) / 2
        hv = 0.0 if v is None else ph * min(1.0, v / vmax)
        tip = esc(tips[i]) if tips else esc(f"{cat}: {fmt(v)}")
        if v is None:
            body.append(f'<rect class="mark" x="{x:.1f}" y="{top + ph - 2:.1f}" width="{bw:.1f}" height="2" '
                        f'fill="{GREY}"><title>{tip}</title></rect>')
        else:
            body.append(f'<rect class="mark" x="{x:.1f}" y="{top + ph - hv:.1f}" width="{bw:.1f}" '
                        f'height="{max(hv, 1.0):.1f}" fill="{color}"><title>{tip}</title></rect>')
        body.append(_text(x + bw / 2, top + ph - hv - 4, fmt(v), size=10))
        if len(cats) > 6:
            body.append(_text(x + bw / 2, top + ph + 12, cat, size=9, anchor="end", rotate=-35))
        else:
            body.append(_text(x + bw / 2, top + ph + 14, cat, size=10))
    body.append(f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" stroke="#999"/>')
    return _svg(name, w, h, label, body)


def scatter(name: str, label: str, points: Sequence[tuple[float, float, str, str]], *, xlabel: str, ylabel: str,
            xfmt: Callable[[float], str], yfmt: Callable[[float], str], w: int = 560, h: int = 300) -> str:
    """Points (x, y, tip, name), axes from 0; names are written beside the points when few."""
    if not points:
        return _empty(name, label, "no finished runs yet", w)
    left, right, top, bottom = 56, 34, 16, 44
    pw, ph = w - left - right, h - top - bottom
    xmax = _nice_max(max(p[0] for p in points))
    ymax = _nice_max(max(p[1] for p in points))
    body = []
    for i in range(5):
        y = top + ph - ph * i / 4
        x = left + pw * i / 4
        body.append(f'<line x1="{left}" x2="{w - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + ph}" stroke="#eee"/>')
        body.append(_text(left - 6, y + 4, yfmt(ymax * i / 4), size=10, anchor="end", fill="#666"))
        body.append(_text(x, top + ph + 14, xfmt(xmax * i / 4), size=10, fill="#666"))
    body.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    body.append(_text(left + pw / 2, h - 6, xlabel, size=11, fill="#444"))
    body.append(_text(14, top + ph / 2, ylabel, size=11, fill="#444", rotate=-90))
    for x, y, tip, pname in points:
        cx, cy = left + pw * x / xmax, top + ph - ph * y / ymax
        body.append(f'<circle class="mark" cx="{cx:.1f}" cy="{cy:.1f}" r="6" fill="{PURPLE}" fill-opacity="0.75" '
                    f'stroke="#fff"><title>{esc(tip)}</title></circle>')
        if len(points) <= 12:
            right_side = cx < left + pw * 0.75
            body.append(_text(cx + (9 if right_side else -9), cy + (12 if cy < top + 12 else -6), pname, size=10,
                              anchor="start" if right_side else "end", fill="#555"))
    return _svg(name, w, h, label, body)


def _heat(v: float | None, lo: float, hi: float) -> str:
    if v is None:
        return "#eceff1"
    t = 0.0 if hi == lo else max(0.0, min(1.0, (v - lo) / (hi - lo)))
    # white -> teal
    r, g, b = (int(255 + (c - 255) * t) for c in (0, 121, 140))
    return f"rgb({r},{g},{b})"


def heatmap(name: str, label: str, rows: Sequence[str], cols: Sequence[str],
            cell: Callable[[str, str], tuple[float | None, str, str]], *, lo: float, hi: float,
            row_title: str, col_title: str) -> str:
    """A matrix; cell(row, col) -> (value for the colour, text in the cell, tooltip)."""
    if not rows or not cols:
        return _empty(name, label, "no verdicts yet")
    cw, ch = 86, 40
    left, top = 20 + max(len(r) for r in rows) * 7 + 16, 52
    w, h = left + cw * len(cols) + 10, top + ch * len(rows) + 10
    body = [_text(left + cw * len(cols) / 2, 14, col_title, size=11, fill="#444", weight="bold")]
    for j, c in enumerate(cols):
        body.append(_text(left + cw * j + cw / 2, top - 10, c, size=11))
    body.append(_text(10, top + ch * len(rows) / 2, row_title, size=11, fill="#444", weight="bold", rotate=-90))
    for i, r in enumerate(rows):
        body.append(_text(left - 8, top + ch * i + ch / 2 + 4, r, size=11, anchor="end"))
        for j, c in enumerate(cols):
            v, txt, tip = cell(r, c)
            x, y = left + cw * j, top + ch * i
            fill = _heat(v, lo, hi)
            body.append(f'<rect class="mark" x="{x}" y="{y}" width="{cw - 2}" height="{ch - 2}" fill="{fill}" '
                        f'stroke="#fff"><title>{esc(tip)}</title></rect>')
            dark = v is not None and hi > lo and (v - lo) / (hi - lo) > 0.6
            body.append(_text(x + cw / 2 - 1, y + ch / 2 + 4, txt, size=11, fill="#fff" if dark else "#333"))
    return _svg(name, w, h, label, body)


def grouped_hbars(name: str, label: str, cats: Sequence[str],
                  series: Sequence[tuple[str, str, Sequence[float | None], Sequence[str]]], *, w: int = 560) -> str:
    """Horizontal bars in [0, 1] per category, one bar per series (name, colour, values, texts)."""
    if not cats:
        return _empty(name, label, "no agents yet", w)
    left, right, top = 20 + max(len(c) for c in cats) * 7 + 12, 120, 30
    bh, gap = 14, 12
    group = bh * len(series) + gap
    h = top + group * len(cats) + 10
    pw = w - left - right
    body = []
    for k, (sname, color, _, _) in enumerate(series):
        x = left + k * 150
        body.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{color}"/>')
        body.append(_text(x + 14, 15, sname, size=10, anchor="start"))
    for i in range(5):
        x = left + pw * i / 4
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 4}" y2="{h - 8}" stroke="#eee"/>')
    for i, cat in enumerate(cats):
        y0 = top + group * i
        body.append(_text(left - 8, y0 + bh * len(series) / 2 + 4, cat, size=11, anchor="end"))
        for k, (sname, color, values, texts) in enumerate(series):
            v = values[i]
            y = y0 + bh * k
            bwid = 0.0 if v is None else pw * max(0.0, min(1.0, v))
            body.append(f'<rect class="mark" x="{left}" y="{y}" width="{max(bwid, 1.5):.1f}" height="{bh - 2}" '
                        f'fill="{color if v is not None else GREY}"><title>{esc(cat)} {esc(sname)}: '
                        f'{esc(texts[i])}</title></rect>')
            body.append(_text(left + bwid + 4, y + bh - 4, texts[i], size=10, anchor="start", fill="#444"))
    return _svg(name, w, h, label, body)


# --- the page ---------------------------------------------------------------------


def _short_date(ts: str | None) -> str:
    """"03-02": a suite run's day on an axis, in UTC as every other time (when()), whatever offset it was written in."""
    return when(ts)[5:10] if ts else ""


def _time_series(f: dict[str, Any]) -> tuple[list[str], list[float | None], list[float], list[str], str]:
    """Buckets for the 'over time' plots: one per suite run, or per week when there are many."""
    runs = f["runs"]
    if len(runs) <= 30:
        cats = [f"{_short_date(r['started'])} {r['run'] if len(r['run']) <= 12 else r['run'][:12] + '…'}" for r in runs]
        rates = [r["rate"] for r in runs]
        human = [r["human_minutes"] for r in runs]
        tips = [f"run {r['run']} ({r['suite']}) {when(r['started'])}: {r['escalated']}/{r['task_runs']} escalated, "
                f"{r['human_minutes']:.1f} human minutes" for r in runs]
        return cats, rates, human, tips, "suite run"
    weeks = f["interventions"]["by_week"]
    minutes_by_week: dict[str, float] = {}
    for e in f["escalations"]:
        if e["minutes"] is not None:
            from .figures import iso_week, parse_ts

            wk = iso_week(parse_ts(e["created"]))
            minutes_by_week[wk] = minutes_by_week.get(wk, 0.0) + e["minutes"]
    cats = [w["key"] for w in weeks]
    tips = [f"{w['key']}: {w['escalated']}/{w['task_runs']} escalated" for w in weeks]
    return cats, [w["rate"] for w in weeks], [minutes_by_week.get(c, 0.0) for c in cats], tips, "ISO week"


def _cost_axis(f: dict[str, Any]) -> tuple[str, Callable[[dict], float], Callable[[float], str]]:
    runs = f["runs"]
    if runs and all(r["cost"]["total"] is not None for r in runs) and any(r["cost"]["total"] for r in runs):
        return "money per run ($)", lambda r: r["cost"]["total"], lambda v: f"${v:.3g}"
    if any(r["tokens"] for r in runs):
        return "tokens per run", lambda r: float(r["tokens"]), lambda v: f"{v:,.0f}"
    return ("agent-seconds per run (no tokens: offline agents)", lambda r: r["agent_seconds"],
            lambda v: f"{v:.3g}")


def _cap_note(run: dict[str, Any]) -> str:
    # A run a budget cap cut short is still stored as "finished": its point says so.
    n = run.get("stopped_by_cap") or 0
    return f", {n} task run{'s' if n != 1 else ''} stopped by a budget cap" if n else ""


def plots(f: dict[str, Any]) -> dict[str, str]:
    """Every plot of the report, by name."""
    out: dict[str, str] = {}
    cats, rates, human, tips, unit = _time_series(f)
    out["intervention_rate"] = bar_chart(
        "intervention_rate", f"Intervention rate per {unit}", cats, rates, fmt=R.pct, ymax=1.0, color=AMBER,
        tips=tips, ylabel="escalated / task runs")
    out["human_minutes"] = bar_chart(
        "human_minutes", f"Human minutes per {unit}", cats, human,
        fmt=lambda v: R.NA if v is None else f"{v:.1f}", color=RED, tips=tips, ylabel="minutes (shown → decided)")
    xlabel, xval, xfmt = _cost_axis(f)
    pts = [(xval(r) or 0.0, float(r["escalated"]),
            f"run {r['run']}: {r['escalated']} escalated of {r['task_runs']}, {R.tokens(r['tokens'])} tokens, "
            f"{R.money(r['cost'])}, {r['agent_seconds']:.1f} agent-seconds" + _cap_note(r), r["run"])
           for r in f["runs"] if r["task_runs"]]
    out["cost_vs_interventions"] = scatter(
        "cost_vs_interventions", "Cost vs interventions per run", pts, xlabel=xlabel,
        ylabel="escalated task runs", xfmt=xfmt, yfmt=lambda v: f"{v:g}")

    agents = f["agents"]
    names = [a["agent"] for a in agents]
    approvals: dict[str, dict[str, tuple[int, int]]] = {}
    for cell in f["reviewer_agreement"]["approvals"]:
        approvals.setdefault(cell["reviewer"], {})[cell["author"]] = (cell["approvals"], cell["verdicts"])

    def approve_cell(rev: str, cand: str) -> tuple[float | None, str, str]:
        if rev == cand:
            return None, "—", "agents do not review their own candidate"
        yes, n = approvals.get(rev, {}).get(cand, (0, 0))
        if not n:
            return None, "n/a", f"{rev} never reviewed {cand}"
        return yes / n, f"{yes / n * 100:.0f}% ({yes}/{n})", f"{rev} approved {yes} of {count_phrase(n, 'candidate')} by {cand}"

    out["approval_matrix"] = heatmap("approval_matrix", "Who approves whom", names, names, approve_cell, lo=0, hi=1,
                                     row_title="reviewer", col_title="author of the candidate")
    pairs = {(p["a"], p["b"]): p for p in f["reviewer_agreement"]["pairs"]}

    def kappa_cell(a: str, b: str) -> tuple[float | None, str, str]:
        if a == b:
            return 1.0, "1", "a reviewer agrees with itself"
        p = pairs.get((a, b)) or pairs.get((b, a))
        if not p or p["kappa"] is None:
            n = p["items"] if p else 0
            return None, f"n/a ({n})", (p or {}).get("note") or "no shared candidates"
        return p["kappa"], f"{p['kappa']:.2f} ({p['items']})", (
            f"Cohen's kappa {p['kappa']:.3f} over {count_phrase(p['items'], 'candidate')} both reviewed; same verdict "
            f"{R.pct(p['agreement'])}")

    reviewers = f["reviewer_agreement"]["reviewers"]
    out["agreement_matrix"] = heatmap("agreement_matrix", "Reviewer agreement (Cohen's kappa)", reviewers, reviewers,
                                      kappa_cell, lo=-1, hi=1, row_title="reviewer", col_title="reviewer")
    out["agents"] = grouped_hbars("agents", "Per-agent approval and accuracy", names, [
        ("approves (as reviewer)", BLUE, [a["approval_rate"] for a in agents],
         [R.frac(a["approvals"], a["approvals"] + a["rejections"]) for a in agents]),
        ("approved (as author)", GREEN, [a["approved_rate"] for a in agents],
         [R.frac(a["approvals_received"], a["reviews_received"]) for a in agents]),
        ("matches final decision", PURPLE, [a["accuracy"] for a in agents],
         [R.frac(a["matched_final"], a["scored"]) for a in agents]),
    ])
    q = f["quality"]
    keys = [("escaped_defects", "escaped defects"), ("wrong_rejections", "wrong rejections"),
            ("needless_escalations", "needless escalations"), ("human_errors", "human errors")]
    if q["task_runs_with_holdout"]:
        out["quality"] = bar_chart(
            "quality", "Decision quality against holdout tests", [k[1] for k in keys],
            [q[k]["rate"] for k, _ in keys], fmt=R.pct, ymax=1.0, color=RED, w=560,
            tips=[f"{label}: {q[k]['count']} of {q[k]['of']} scored" for k, label in keys], ylabel="share of scored")
    else:
        out["quality"] = _empty("quality", "Decision quality against holdout tests",
                                "no task has holdout/ tests: nothing to score decisions against")
    return out


CSS = """
body{font-family:%s;margin:0;background:#f6f7f9;color:#222;line-height:1.45}
main{max-width:1180px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:14px;margin:14px 0 6px;color:#444}
.sub{color:#666;font-size:13px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(210px,1fr));gap:12px;margin:16px 0}
.card{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:10px 14px}
.card .k{font-size:12px;color:#666} .card .v{font-size:22px;font-weight:600} .card .c{font-size:12px;color:#555}
.row{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.row .panel{flex:0 1 auto;max-width:600px}
.panel{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:12px;margin:8px 0}
table{border-collapse:collapse;font-size:13px;background:#fff}
th,td{border:1px solid #e3e6ea;padding:4px 8px;text-align:right;vertical-align:top}
th:first-child,td:first-child{text-align:left} th{background:#f0f2f5}
td.l{text-align:left} table.text td,table.text th{text-align:left}
.note{color:#777;font-size:12px;margin:4px 0}
.d-accepted{color:%s;font-weight:600}.d-rejected{color:%s;font-weight:600}.d-escalated{color:#b7791f;font-weight:600}
details{background:#fff;border:1px solid #e3e6ea;border-radius:8px;padding:8px 12px;margin:8px 0}
details summary{cursor:pointer;font-weight:600}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:420px}
.add{color:#22863a}.del{color:#b31d28}
""" % (FONT, GREEN, RED)


def _card(k: str, v: str, c: str = "") -> str:
    return f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{esc(v)}</div><div class="c">{esc(c)}</div></div>'


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], raw: bool = False, cls: str = "") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c if raw else esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _diff_html(diff: str) -> str:
    text = diff if len(diff) <= _DIFF_CHARS else diff[:_DIFF_CHARS] + "\n... (cut; `crossreview show ID` has it whole)\n"
    lines = []
    for line in text.splitlines():
        cls = "add" if line.startswith("+") and not line.startswith("+++") else (
            "del" if line.startswith("-") and not line.startswith("---") else "")
        lines.append(f'<span class="{cls}">{esc(line)}</span>' if cls else esc(line))
    return "<pre>" + "\n".join(lines) + "</pre>" if lines else '<p class="note">(no change)</p>'


def _packet_html(e: dict[str, Any], full: dict[str, Any] | None, open_: bool = True) -> str:
    p = (full or {}).get("packet") or {}
    parts = [f'<details id="packet-{esc(e["id"])}"{" open" if open_ else ""}><summary>{esc(e["id"])} · {esc(e["task"])} · run {esc(e["run"])}'
             f' · {esc(e["reason"])}</summary>']
    decided = (f"{e['action']}{' ' + e['pick'] if e['pick'] else ''}{' “' + e['guide'] + '”' if e['guide'] else ''}"
               f" by {e['decided_by'] or '?'} at {when(e['decided'])}, "
               f"{R.minutes(e['minutes'])} after first shown"
               if e["decided"] else "waiting for a human: `crossreview show " + e["id"] + "`")
    parts.append(f'<p>Decision: {esc(decided)}</p>')
    if p.get("disagreements"):
        parts.append(f"<h3>{esc(reasons_heading(p.get('tampering_alone') or [], p.get('cause') or ''))}</h3><ul>" + "".join(f"<li>{esc(x)}</li>" for x in p["disagreements"])
                     + "</ul>")
    cands = p.get("candidates") or []
    if cands:
        rows = [[c.get("agent"), f"{c.get('tests_passed')}/{c.get('tests_total')}" if c.get("status") == "ok"
                 else c.get("status"), len(c.get("files") or []), f"+{c.get('lines_added', 0)} -{c.get('lines_removed', 0)}",
                 ", ".join(f"{v['reviewer']}: {v['verdict']} ({v.get('confidence', 0):.2f})"
                           for v in p.get("verdicts") or [] if v.get("candidate") == c.get("agent")) or "-"]
                for c in cands]
        parts.append(_table(["agent", "tests", "files", "change", "verdicts on it"], rows))
    for v in p.get("verdicts") or []:
        if v.get("concerns"):
            parts.append(f'<p class="note">{esc(v["reviewer"])} → {esc(v["candidate"])}: '
                         + esc("; ".join(v["concerns"][:6])) + "</p>")
    for c in cands:
        parts.append(f"<h3>diff of {esc(c.get('agent'))}</h3>" + _diff_html(c.get("diff") or ""))
    parts.append("</details>")
    return "".join(parts)


def build_html(ledger, f: dict[str, Any]) -> str:
    """The whole report page."""
    p = plots(f)
    c, iv, ht, co, q, par = f["counts"], f["interventions"], f["human_time"], f["cost"], f["quality"], f["parallel"]
    ra = f["reviewer_agreement"]
    m = co["multiplier"]
    scope = []
    if f["filters"]["since"]:
        scope.append(f"since {when(f['filters']['since'])}")
    if f["filters"]["suite"]:
        scope.append(f"suite {f['filters']['suite']}")
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
           f"<meta name='viewport' content='width=device-width,initial-scale=1'>"
           f"<title>crossreview report</title><style>{CSS}</style></head><body><main>"]
    out.append(f"<h1>crossreview report</h1><div class='sub'>ledger {esc(f['ledger'])} · "
               f"{count_phrase(c['runs'], 'suite run')}, {count_phrase(c['task_runs'], 'task run')}"
               + (f" ({c['stopped_by_cap']['cut_short']} cut short by a budget cap)"
                  if c.get("stopped_by_cap", {}).get("cut_short") else "") + (" · " + esc(", ".join(scope)) if scope else "")
               + f" · generated {esc(utcnow().strftime('%Y-%m-%d %H:%M UTC'))}</div>")
    # Benefit next to its cost, always.
    out.append("<div class='cards'>")
    out.append(_card("intervention rate", R.pct(iv["rate"]), f"{iv['escalated']} of {count_phrase(iv['task_runs'], 'task run')} escalated"))
    out.append(_card("human minutes per escalation", R.num(ht["median_minutes"]),
                     f"median; p90 {R.num(ht['p90_minutes'])}; {R.num(ht['minutes_per_100_task_runs'])} per 100 task runs"
                     + (f"; {ht['unseen']} decided without being shown (time unknown, left out)" if ht["unseen"] else "")))
    if m["tokens"] is not None:
        out.append(_card("cost multiplier (tokens)", R.times(m["tokens"]),
                         f"money {R.times(m['cost'])} · agent-seconds {R.times(m['agent_seconds'])}"))
    else:
        out.append(_card("cost multiplier (agent-seconds)", R.times(m["agent_seconds"]),
                         f"tokens {R.times(m['tokens'])} · money {R.times(m['cost'])}"))
    cut = co["cut_short"]
    out.append(_card("total cost", R.money(co["cost"]), f"{R.tokens(co['tokens'])} tokens, {count_phrase(co['calls'], 'call')}"
                     # What a kill cut short is spend too, but no task run's rows hold it: say so beside the
                     # total, or a killed-and-resumed run reads cheaper than it was.
                     + ("; plus work cut short (see Cost)" if cut["task_runs"] else "")))
    out.append(_card("escaped defects", R.frac(q["escaped_defects"]["count"], q["escaped_defects"]["of"]),
                     "accepted by consensus, holdout fails"))
    out.append(_card("reviewer agreement", R.kappa(ra["fleiss"]["kappa"]), "Fleiss' kappa"))
    out.append(_card("parallel efficiency", R.pct(par["efficiency"]),
                     f"{R.num(par['mean_agents_running'], 2)} agents at once on average"))
    out.append(_card("review share of tokens", R.pct(co["review_share"]["tokens"]),
                     f"of agent-seconds: {R.pct(co['review_share']['agent_seconds'])}"))
    out.append("</div>")
    if m.get("note"):
        out.append(f"<p class='note'>{esc(m['note'])}</p>")

    out.append("<h2 id='interventions'>Interventions over time</h2><div class='row'>")
    out.append(f"<div class='panel'><h3>Intervention rate</h3>{p['intervention_rate']}</div>")
    out.append(f"<div class='panel'><h3>Human minutes (first shown → decided)</h3>{p['human_minutes']}</div></div>")
    out.append("<div class='row'>")
    for title, key in (("per suite", "by_suite"), ("per tag", "by_tag"), ("per week", "by_week")):
        out.append(f"<div><h3>Intervention rate {title}</h3>" + _table(
            ["", "task runs", "escalated", "rate"],
            [[r["key"], r["task_runs"], r["escalated"], R.pct(r["rate"])] for r in iv[key]]) + "</div>")
    au = f["autonomy"]
    out.append("</div>" + _table(["autonomy", "value"], [
        ["task runs per intervention", R.num(au["task_runs_per_intervention"])],
        ["task runs between interventions (mean / median)",
         f"{R.num(au['mean_task_runs_between'])} / {R.num(au['median_task_runs_between'])}"],
        ["wall-clock between interventions (mean / median)",
         f"{R.minutes(au['mean_minutes_between'])} / {R.minutes(au['median_minutes_between'])}"],
    ]))

    out.append("<h2 id='cost'>Cost vs interventions</h2>")
    out.append(f"<div class='panel'>{p['cost_vs_interventions']}<p class='note'>One point per suite run. "
               "Fewer interventions should not be read without what they cost.</p></div>")
    cost_rows = [["solve", co["by_phase"]["solve"]], ["review", co["by_phase"]["review"]]]
    for a in co["by_agent"]:
        cost_rows += [[f"{a['agent']} · solve", a["solve"]], [f"{a['agent']} · review", a["review"]]]
    cost_rows.append(["whole run", co])
    out.append(_table(["", "tokens", "money", "calls", "tokens / call", "money / call", "agent-seconds"], [
        [k, R.tokens(u["tokens"]), R.money(u["cost"]), u["calls"], R.num(u["tokens_per_call"]),
         R.dollars(u["cost_per_call"], 6), R.seconds(u["agent_seconds"])] for k, u in cost_rows]))
    if cut["task_runs"]:
        out.append("<p class='note'><b>spent on work cut short</b> (killed or crashed, redone by resume; not in the "
                   f"table): {esc(R.cut_short(cut))}.</p>")
    if co["task_runs_costed"] != co["task_runs"]:
        out.append(f"<p class='note'>Costs cover {co['task_runs_costed']} of {count_phrase(co['task_runs'], 'task run')}: task "
                   "runs parked in a ledger written before parked runs were recorded are costed when decided.</p>")
    ap = f.get("agents_per_task")
    if ap and ap["task_runs"]:
        out.append("<h3>Agents per task run (cascade)</h3>" + _table(["", "value"], [
            ["agents started per task run", f"mean {R.num(ap['mean_agents_used'], 2)} of "
                                            f"{R.num(ap['mean_agents_configured'], 2)} configured "
                                            f"({ap['stopped_early']}/{ap['task_runs']} stopped early)"],
            ["agent runs / always all", f"{ap['agents_used']}/{ap['agents_configured']} = {R.times(ap['agent_runs_ratio'])}"],
            ["not started", f"{count_phrase(ap['solves_saved'], 'solve')}, {count_phrase(ap['reviews_saved'], 'review')}"],
            ["money saved (estimate)", R.dollars(ap["cost"]["saved"]) if ap["cost"]["saved"] is not None else "unknown"],
        ]) + "<p class='note'>Saving estimated at the mean solve and review of the same task runs.</p>")

    out.append("<h2 id='agreement'>Reviewer agreement</h2><div class='row'>")
    out.append(f"<div class='panel'><h3>Who approves whom</h3>{p['approval_matrix']}</div>")
    out.append(f"<div class='panel'><h3>Cohen's kappa per pair (shared candidates)</h3>{p['agreement_matrix']}"
               f"<p class='note'>Fleiss' kappa over all verdicts: {esc(R.kappa(ra['fleiss']['kappa']))}"
               + (f" ({count_phrase(ra['fleiss']['subjects'], 'candidate')}, {count_phrase(ra['fleiss']['ratings'], 'verdict')})" if ra["fleiss"]["subjects"] else "")
               + (f": {esc(ra['fleiss']['note'])}" if ra["fleiss"].get("note") else "") + "</p></div></div>")

    out.append("<h2 id='agents'>Agents: approval and accuracy</h2>")
    out.append(f"<div class='panel'>{p['agents']}</div>")
    out.append(_table(["agent", "spec", "approves", "approved", "matches final decision", "agrees with tests",
                       "tests pass", "wins"], [
        [a["agent"], R.agent_specs(a), R.frac(a["approvals"], a["approvals"] + a["rejections"]),
         R.frac(a["approvals_received"], a["reviews_received"]), R.frac(a["matched_final"], a["scored"]),
         R.pct(a["agrees_with_tests"]), f"{a['candidates_passing']}/{a['candidates']}", a["wins"]]
        for a in f["agents"]]))

    out.append("<h2 id='quality'>Decision quality</h2>")
    out.append(f"<div class='panel'>{p['quality']}</div>")
    out.append(_table(["", "count", "of scored", "rate", "which"], [
        [label, q[k]["count"], q[k]["of"], R.pct(q[k]["rate"]),
         ", ".join(q[k].get("task_runs") or q[k].get("escalations") or []) or "-"]
        for k, label in (("escaped_defects", "escaped defects (accepted by consensus, holdout fails)"),
                         ("wrong_rejections", "wrong rejections (rejected by consensus, a candidate passes holdout)"),
                         ("needless_escalations", "needless escalations (the majority's pick passes holdout)"),
                         ("human_errors", "human errors (picked one that fails holdout, or rejected a passing one)"))]))
    s = f["agreement_score"]
    out.append("<h3>Agreement score: what accepting by threshold would have done</h3>")
    out.append(f"<p class='note'>Mean {esc(R.num(s['mean'], 3))} over {count_phrase(s['task_runs'], 'task run')}; "
               + ", ".join(f"{esc(k)} {esc(R.num(v['mean'], 3))}" for k, v in s["by_outcome"].items())
               + ". What it means: the README's section \"The agreement score\".</p>")
    out.append(_table(["threshold", "would accept", "escalations avoided", "picks with holdout", "of them fail holdout"],
                      [[f"≥ {t['threshold']:.1f}", t["would_accept"], t["escalations_avoided"], t["holdout_known"],
                        t["holdout_fails"]] for t in s["thresholds"]]))

    cal = f.get("calibration")
    if cal:
        cert, dr, w = cal["certificate"], cal["drift"], cal["certificate"]["window"]
        out.append("<h2 id='calibration'>Calibration</h2>")
        out.append(_table(["", "value"], [
            ["policy file", esc(str(cal["file"]))],
            ["threshold", esc(cal["summary"])],
            ["computed on", esc(f"{w['ledger']}: {count_phrase(cert['labeled'], 'labeled task run')}, {when(w['first'])} → "
                                f"{when(w['last'])}")],
            ["recent task runs (after the window)", esc(str(dr["recent"]))],
        ], raw=True, cls="text"))
        if dr.get("warning"):
            out.append(f"<p class='note'><b>Drift warning:</b> {esc(dr['warning'])}</p>")

    escs = f["escalations"]
    out.append(f"<h2 id='escalations'>Escalations ({len(escs)})</h2>")
    if escs:
        out.append(_table(["escalation", "task", "run", "created", "decision", "by", "minutes", "final", "reason"], [
            [f'<a href="#packet-{esc(e["id"])}">{esc(e["id"])}</a>', esc(e["task"]), esc(e["run"]),
             esc(when(e["created"]) if e["created"] else ""),  # converted, as `inbox` shows it
             esc((e["action"] or "waiting") + (" " + e["pick"] if e["pick"] else "")), esc(e["decided_by"] or "-"),
             esc(R.num(e["minutes"])), f'<span class="d-{esc(e["outcome"])}">{esc(e["outcome"])}</span>',
             esc(e["reason"])]
            for e in escs], raw=True, cls="text"))
        out.append("<h3>Packets</h3>")
        for e in escs:
            out.append(_packet_html(e, ledger.get_escalation(e["id"]), open_=len(escs) <= 20))
    else:
        out.append("<p>No escalation: no human was needed.</p>")
    out.append("<h2>Raw figures</h2><details><summary>the JSON of <code>crossreview stats --json</code></summary>"
               f"<pre>{esc(json.dumps(f, indent=1))}</pre></details>")
    out.append("</main></body></html>")
    return "".join(out)


def write_report(ledger, figures: dict[str, Any], output: Path) -> Path:
    output = Path(output)
    if output.parent and not output.parent.exists():
        output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(build_html(ledger, figures), encoding="utf-8")
    return output
