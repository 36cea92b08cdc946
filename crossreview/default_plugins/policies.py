from __future__ import annotations

from ..hookspecs import hookimpl
from ..policy import CALIBRATED, CASCADE, MAJORITY, UNANIMOUS


@hookimpl
def crossreview_register_policies(register):
    register("unanimous", UNANIMOUS, help="accept only what passes its tests and every reviewer approves")
    register("majority", MAJORITY, help="accept what passes its tests and more than half its reviewers approve")
    register("calibrated", CALIBRATED,
             help="accept when the agreement score reaches the threshold `crossreview calibrate` certified")
    register("cascade", CASCADE,
             help="calibrated, but start two agents and a third only when those two give no clear decision")
