"""The built-in consensus policies, ``unanimous`` (default) and ``majority``."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..policy import MAJORITY, UNANIMOUS


@hookimpl
def crossreview_register_policies(register):
    register("unanimous", UNANIMOUS, help="accept only what passes its tests and every reviewer approves")
    register("majority", MAJORITY, help="accept what passes its tests and more than half its reviewers approve")
