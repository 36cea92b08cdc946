"""The inbox escalation channel: parked runs wait in the ledger for `crossreview decide`."""

from __future__ import annotations

from ..hookspecs import hookimpl


@hookimpl
def crossreview_escalation_opened(escalation, ledger):
    ledger.open_escalation(escalation)
