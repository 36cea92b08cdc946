"""`crossreview calibrate`: pick the auto-accept threshold from the ledger's labeled history.

Registered with the ledger commands (ledger_cli.register). Only click is
imported at module level, so `crossreview --help` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .ledger_cli import Since, _console, _fail, _ledger_opt, _state_opt, _suite_opt, open_ledger


def _rate(text_name: str):
    def check(ctx, param, value):
        if value is not None and not 0.0 < value < 1.0:
            raise click.BadParameter(f"{value} is not a rate strictly between 0 and 1 (e.g. {text_name})")
        return value
    return check


@click.command()
@click.option("--max-escaped", type=float, default=0.02, show_default=True, callback=_rate("0.02 for 2%"),
              help="The most auto-accepted task runs allowed to be wrong (fail holdout), as a fraction.")
@click.option("--confidence", type=float, default=0.9, show_default=True, callback=_rate("0.9 for 90%"),
              help="How sure the guarantee must be: the bound holds with this probability.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None, metavar="FILE",
              help="Where to write the policy file (default: <state-dir>/calibration.json).")
@click.option("--since", type=Since(), default=None,
              help="Only labeled task runs started since DATE (2026-03-01, an ISO date-time, or 7d / 2w / 12h).")
@_suite_opt
@_ledger_opt
@_state_opt
@click.option("--json", "json_mode", is_flag=True, help="Print the policy file's content as JSON too.")
def calibrate(max_escaped, confidence, output, since, suite, ledger, state_dir, json_mode):
    """Pick the agreement-score threshold above which task runs are auto-accepted.

    \b
    With the default flags: the threshold is chosen so that, with 90%
    confidence, at most 2% of the task runs it auto-accepts are wrong — their
    accepted candidate fails the task's holdout tests. Everything below the
    threshold goes to a human (clear rejections are still rejected).

    \b
    Labeled history: recorded task runs of tasks with holdout/ tests, whose
    candidate with the best agreement score has holdout results. Method: the
    exact binomial (Clopper-Pearson) upper bound on the error rate among the
    task runs a threshold accepts, checked from 1.00 down to 0.50 in steps of
    0.01, stopping at the first threshold whose bound exceeds the target
    (fixed-sequence testing). With too little history no threshold passes:
    nothing is auto-accepted, and the output says how many more labeled task
    runs are needed (with no error among them, 114 certify 2% at 90%).

    \b
    The result is a policy file with the threshold and its certificate, read by
      crossreview run --policy calibrated   (accept by the threshold)
      crossreview run --policy cascade      (two agents; a third only when they give no clear decision)
    and shown by `crossreview stats`, which warns when recent task runs drift
    away from the history it was computed on. Run it again as history grows.

    \b
    Exit codes: 0 a threshold was certified, 1 none was (the file is still
    written: the policies then auto-accept nothing), 2 usage or input error.
    """
    from .ledger import LedgerError
    from .ledger.calibration import calibrate_ledger, default_path, save_calibration
    from .words import count_phrase

    led = open_ledger(state_dir, ledger)
    try:
        cal = calibrate_ledger(led, max_escaped, confidence, since=since, suite=suite)
    except LedgerError as exc:
        _fail(str(exc))
    path = output or default_path(state_dir)
    try:
        save_calibration(cal, path)
    except OSError as exc:
        _fail(f"cannot write {path}: {exc}")
    if json_mode:
        click.echo(json.dumps({**cal.model_dump(mode="json"), "file": str(path)}, indent=2))
        sys.exit(0 if cal.threshold is not None else 1)
    out = _console()
    c = cal.certificate
    out.print(f"[bold]crossreview calibrate[/bold] · ledger {c.window.ledger} · {count_phrase(c.labeled, 'labeled task run')}",
              highlight=False)
    tried = [s for s in cal.steps if s.outcome in ("passed", "failed")]
    if tried:
        from rich.table import Table

        t = Table(title="thresholds tested (strictest first; the scan stops at the first failure)",
                  title_justify="left")
        for col in ("threshold", "accepted", "wrong", "upper bound", "outcome"):
            t.add_column(col, justify="right" if col != "outcome" else "left")
        # Neighbouring thresholds that accept the same task runs test the same thing: one row for them.
        groups: list[list] = []
        for s in tried:
            if groups and (groups[-1][0].accepted, groups[-1][0].errors, groups[-1][0].outcome) == \
                    (s.accepted, s.errors, s.outcome):
                groups[-1].append(s)
            else:
                groups.append([s])
        for g in groups:
            span = f"{g[0].threshold:.2f}" if len(g) == 1 else f"{g[0].threshold:.2f} – {g[-1].threshold:.2f}"
            t.add_row(span, str(g[0].accepted), str(g[0].errors), f"{g[0].bound:.2%}", g[0].outcome)
        out.print(t)
    if c.waiting:
        # The verbs and pronouns follow the count as the noun does: "1 task run ... waits ... Decide it".
        wait, they, them = (("waits for a human and has", "it is", "it") if c.waiting == 1 else
                            ("wait for a human and have", "they are", "them"))
        out.print(f"[yellow]warning:[/yellow] {count_phrase(c.waiting, 'task run')} in this history {wait} "
                  f"no holdout results in the ledger (written before parked runs were recorded), so {they} not labeled: the history leans "
                  f"towards task runs decided automatically. Decide {them} (`crossreview inbox`) and calibrate again.",
                  highlight=False)
    if cal.threshold is None:
        out.print(f"[bold yellow]no threshold passes[/bold yellow]: everything that is not a clear rejection "
                  f"escalates to a human. Certifying ≤{max_escaped:.1%} at {confidence:.0%} needs at least "
                  f"{count_phrase(c.min_labeled, 'labeled task run')} at or above a threshold with no error among them; "
                  + (f"at least {count_phrase(c.needed_more, 'more labeled task run')} "
                     f"{'is' if c.needed_more == 1 else 'are'} needed (if none of them is wrong and they "
                        f"score at or above the threshold that then passes; errors already in the history count)."
                     if c.needed_more else
                     "there are enough, but the first threshold with enough of them has too many errors "
                     "among them, which ends the scan (fixed-sequence testing): better agents or reviewers, "
                     "more history, or a looser target."), highlight=False)
    else:
        out.print(f"[bold green]{cal.summary()}[/bold green]", highlight=False)
    out.print(f"wrote {path} · use it with `crossreview run --policy calibrated` or `--policy cascade`"
              + (f" --calibration {path}" if output else ""), highlight=False)
    sys.exit(0 if cal.threshold is not None else 1)
