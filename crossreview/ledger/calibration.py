"""The ledger side of `crossreview calibrate`: labeled history in, policy file out.

The math is in crossreview/calibrate.py (pure); this module reads the ledger
and reads / writes the policy file.

Which history counts as *labeled*: a task run that was recorded or parked
(its candidates and holdout results are written to the ledger either way), has an
agreement score, and whose *picked* candidate — the one the score names, in
the task run's last round, which is the candidate the ``calibrated`` policy
would accept — has holdout results (a task with a ``holdout/`` folder, and a
candidate that produced a diff). A candidate flagged for tampering is never that
candidate: the policy never accepts one, so the score and the pick are those of
the best clean candidate (accept_pick), and a task run whose candidates are all
flagged is not labeled — it never counts as an auto-accept, right or wrong.
Its label is *wrong* when that candidate fails any holdout test. The decision actually taken does not matter: holdout
tests run on every candidate whatever the decision, so task runs escalated
or rejected under another policy label the score just as well. Failed task
runs are not labeled, nor are parked ones without holdout results in the
ledger (ledgers written before parked runs were recorded as far as they got);
the certificate counts those (``waiting``) and `calibrate` warns about them,
because leaving them out leans the history towards the task runs that were
decided automatically.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from pydantic import ValidationError

from ..calibrate import Calibration, Drift, Sample, Window, at_or_above, build, drift, scan
from ..models import utcnow
from . import score
from .figures import TR, Data, holdout_known, holdout_passes, load

DEFAULT_NAME = "calibration.json"


class CalibrationError(Exception):
    """The policy file is missing or malformed (the message names the file and the fix)."""


def flagged(c: dict) -> bool:
    """Whether a candidate row was flagged for tampering (its ``tampering`` JSON list is not empty).

    A value that does not read as a list counts as flagged: the policy never accepts a flagged
    candidate, so when in doubt it must not count as an acceptance in the history either.
    """
    raw = c.get("tampering")
    if raw in (None, "", "[]"):
        return False
    try:
        return bool(json.loads(raw))
    except (TypeError, ValueError):
        return True


def all_flagged(t: TR) -> bool:
    """Every candidate of ``t``'s last round was flagged for tampering: no policy auto-accepts it."""
    last = t.round_candidates(t.last_round)
    return bool(last) and all(flagged(c) for c in last)


def accept_pick(t: TR) -> tuple[float, dict] | None:
    """The score and row of the candidate the ``calibrated`` policy would accept in ``t``'s last round.

    That is the ledger's recorded pick, unless a candidate of the round was flagged for tampering:
    the policy never accepts one and leaves flagged candidates out of the pick and of the score it
    compares with the threshold (crossreview/policy.py), so the score is computed again from the
    rows without them, in the run's agent order (its tie-break). None when every candidate of the
    round was flagged: such a task run is never auto-accepted, whatever its score.
    """
    last = t.round_candidates(t.last_round)
    out = [c["agent"] for c in last if flagged(c)]
    if not out:
        pick = next((c for c in last if c["agent"] == t.row.get("agreement_pick")), None)
        return (float(t.row["agreement"]), pick) if pick is not None else None
    order = [a.get("name") for a in (t.run.get("config") or {}).get("agents") or [] if isinstance(a, dict)]
    rank = {name: i for i, name in enumerate(order)}
    ordered = sorted(last, key=lambda c: rank.get(c["agent"], len(rank)))  # stable: unknown agents keep their order
    a = score.from_rows(ordered, t.round_verdicts(t.last_round), exclude=out)
    pick = next((c for c in last if c["agent"] == a.pick), None)
    return (float(a.task_run), pick) if pick is not None and a.task_run is not None else None


def sample_of(t: TR) -> Sample | None:
    """The task run as a labeled sample, or None when it is not labeled (see the module docstring)."""
    if t.status not in ("done", "parked") or t.row.get("agreement") is None:
        return None
    got = accept_pick(t)
    if got is None or not holdout_known(got[1]):
        return None
    return Sample(score=got[0], wrong=not holdout_passes(got[1]), task_run=t.id)


def labeled(d: Data) -> list[tuple[TR, Sample]]:
    """Every labeled task run of the loaded ledger, oldest first."""
    out = []
    for t in d.task_runs:
        s = sample_of(t)
        if s is not None:
            out.append((t, s))
    return out


def ledger_id(ledger) -> str:
    """The ledger as the policy file names it: a SQLite file by its absolute path (a relative one means
    nothing from another folder), a PostgreSQL one by its redacted URL."""
    path = getattr(ledger.backend, "path", None)
    return str(Path(path).resolve()) if path is not None else str(ledger.backend.describe())


def calibrate_ledger(ledger, max_escaped: float, confidence: float, since: datetime | None = None,
                     suite: str | None = None, now: datetime | None = None) -> Calibration:
    """Scan the ledger's labeled history (optionally since ``since``, of suite ``suite``) for a certified threshold."""
    d = load(ledger, since=since, suite=suite)
    pairs = labeled(d)
    result = scan([s for _, s in pairs], max_escaped, confidence)
    scored = [t for t in d.counted if t.row.get("agreement") is not None]
    scores = [float(t.row["agreement"]) for t in scored]
    window = Window(
        ledger=ledger_id(ledger), since=since, suite=suite,
        # The window spans every scored task run read (labeled or not), so "recent" means new since.
        first=min((t.started for t in scored), default=None),
        last=max((t.started for t in scored), default=None),
        task_runs=len(scores),
        share_at_or_above=(sum(1 for s in scores if at_or_above(s, result.threshold)) / len(scores)
                           if scores and result.threshold is not None else None),
        mean_score=sum(scores) / len(scores) if scores else None,
    )
    cal = build(result, max_escaped, confidence, window, now or utcnow())
    # Waiting means "no holdout results yet"; a parked task run whose candidates are all flagged is
    # not labeled because it can never be auto-accepted, which holdout results would not change.
    cal.certificate.waiting = sum(1 for t in d.counted
                                  if t.status == "parked" and sample_of(t) is None and not all_flagged(t))
    return cal


def drift_for(ledger, cal: Calibration) -> Drift:
    """The ledger's task runs started after the calibration window, against it."""
    w = cal.certificate.window
    d = load(ledger, suite=w.suite)
    after = [t for t in d.counted if w.last is None or t.started > w.last]
    scores = [float(t.row["agreement"]) for t in after if t.row.get("agreement") is not None]
    recent_labeled = [s for t in after if (s := sample_of(t)) is not None]
    out = drift(cal, scores, recent_labeled)
    here = ledger_id(ledger)
    there = w.ledger
    if there and not Path(there).is_absolute() and "://" not in there:
        there = None  # files written before the path was made absolute: cannot tell
    if there is not None and there != here:
        other = (f"the policy file was computed on another ledger ({w.ledger}), not this one ({here}): "
                 f"its certificate says nothing about this ledger's task runs, and 'recent' here means started "
                 f"after that ledger's last one; run `crossreview calibrate` on this ledger, or pass its own "
                 f"policy file with --calibration")
        out.other_ledger = w.ledger
        out.warning = other + ("; " + out.warning if out.warning else "")
    return out


def default_path(state_dir: Path) -> Path:
    """Where `calibrate` writes and the policies look by default: <state-dir>/calibration.json."""
    return Path(state_dir) / DEFAULT_NAME


FIX = ("run `crossreview calibrate` on a ledger with labeled history (task runs of tasks with holdout/ tests) "
       "to write it, or point at another file with --calibration FILE (or `calibration = \"FILE\"` in crossreview.toml)")


def load_calibration(path: Path) -> Calibration:
    """Read a policy file; CalibrationError naming the file and the fix when it is missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationError(f"no calibration file at {path}: {FIX}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"cannot read calibration file {path}: {exc}; {FIX}") from None
    try:
        head = json.loads(text)
    except ValueError:
        head = None
    if isinstance(head, dict) and head.get("format") == "crossreview-calibration" \
            and head.get("version") != Calibration.model_fields["version"].default:
        raise CalibrationError(
            f"calibration file {path} has version {head.get('version')!r}; this crossreview reads version "
            f"{Calibration.model_fields['version'].default}: {FIX}")
    try:
        return Calibration.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first.get("loc", ()))
        msg = str(first.get("msg", "")).removeprefix("Value error, ")
        raise CalibrationError(
            f"calibration file {path} is malformed ({where + ': ' if where else ''}{msg}); {FIX}") from None


def save_calibration(cal: Calibration, path: Path) -> Path:
    """Write the policy file (JSON, indented, so a reviewer can read the certificate in a diff)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(cal.model_dump(mode="json"), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)  # never a half-written file for a run that reads it at this moment
    return path
