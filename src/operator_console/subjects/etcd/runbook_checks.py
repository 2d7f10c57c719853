"""The etcd runbook for the console's own checks: the clients' write ledger and the sources
the console reads."""

from __future__ import annotations

from typing import Any

from operator_console.contract import (
    Assessment,
    Results,
    TicketContext,
    explain,
    need,
    reject,
)
from operator_console.contract import finding as _f
from operator_console.subjects.etcd.runbook import STATUS, _blocked, _Hypothesis

# ------------------------------------------------------------------------- lost_writes


class AcknowledgedWritesLost(_Hypothesis):
    name = "acknowledged_writes_lost"
    description = "etcd acknowledged writes that a linearizable read no longer shows"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        ledger = need(results, STATUS).get("ledger") or {}
        lost = ledger.get("lost") or ticket.details.get("lost") or []
        if not lost:
            return reject("the ledger's latest check finds every acknowledged write")
        findings = [
            _f(f"{len(lost)} acknowledged writes missing, e.g. {lost[0]}", STATUS, n=len(lost))
        ]
        note = (
            "acknowledged writes are gone: stop the clients, keep every data dir for a "
            "post-mortem and get a person; no action of this console brings data back"
        )
        return _blocked(1.0, findings, note)


class LedgerRaced(_Hypothesis):
    name = "ledger_raced"
    description = "one check saw a loss the next check does not (a read racing a write)"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        ledger = need(results, STATUS).get("ledger") or {}
        if ledger.get("lost"):
            return reject("the latest check still finds writes missing")
        claim = f"the latest check of {ledger.get('checked')} keys finds nothing missing"
        return explain(0.3, [_f(claim, STATUS, checked=ledger.get("checked"))])


# -------------------------------------------------------------------- observation_failed


def _failed(results: Results) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in need(results, STATUS)["failed_sources"]}


class CredentialsRefused(_Hypothesis):
    name = "credentials_refused"
    description = "etcd refuses the console's credentials (a wrong or rotated password)"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        failed = _failed(results)
        source = failed.get(ticket.target)
        if ticket.target == "observer":
            source = next((f for f in failed.values() if "auth" in f["reason"].lower()), None)
        if source is None or "auth" not in source["reason"].lower():
            return reject(f"{ticket.target} does not fail on authentication")
        findings = [_f(f"{ticket.target}: {source['reason']}", STATUS, **source)]
        return _blocked(0.9, findings, "give the console valid etcd credentials (endpoints file)")


class SourceFailing(_Hypothesis):
    name = "source_failing"
    description = "a source the console reads keeps failing while the member otherwise answers"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        failed = _failed(results)
        if ticket.target == "observer" and failed:
            claim = f"{len(failed)} sources fail: " + ", ".join(sorted(failed))[:300]
            return explain(0.6, [_f(claim, STATUS, failed=sorted(failed))])
        source = failed.get(ticket.target)
        if source is None:
            return reject(f"{ticket.target} answers now")
        claim = f"{ticket.target} still fails: {source['state']} ({source['reason']})"
        return explain(0.6, [_f(claim, STATUS, **source)])


class SourceRecovered(_Hypothesis):
    name = "source_recovered"
    description = "a transient failure: the source answers again"

    def judge(self, ticket: TicketContext, results: Results) -> Assessment:
        failed = _failed(results)
        if ticket.target == "observer" and failed:
            return reject(f"{len(failed)} sources still fail")
        if ticket.target in failed:
            return reject(f"{ticket.target} still fails: {failed[ticket.target]['reason']}")
        return explain(
            0.4, [_f(f"{ticket.target} is not failing now", STATUS, failed=sorted(failed))]
        )
