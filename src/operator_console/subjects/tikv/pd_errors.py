"""Typed errors for PD's HTTP answers, each naming the endpoint and PD's own text.

PD answers errors in three forms (server/api/*.go, pkg/utils/apiutil): a JSON string
written by `render.JSON(w, code, err.Error())` such as
`"[PD:core:ErrStoreNotFound]store 7 not found"`; an errcode JSON object
`{"code": "input", "msg": ...}` from `apiutil.ErrorResp`; and plain text from Go's
`http.Error` (the redirector's "redirect to not leader", gorilla's "404 page not found").
"""

from __future__ import annotations

import json
import re

_PD_CODE = re.compile(r"^\[(?P<code>PD:[\w:]+)\](?P<message>.*)$", re.DOTALL)


class PDError(Exception):
    """Something went wrong talking to PD; `endpoint` is "METHOD /path"."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: str = "",
        status: int | None = None,
        code: str | None = None,
        pd_text: str = "",
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.pd_text = pd_text


class PDUnavailableError(PDError):
    """No PD endpoint could be reached (or each one answered that it cannot serve);
    `refusals` holds the answers of the members that did answer (no leader, and the like)."""

    refusals: tuple[PDError, ...] = ()


class PDResponseError(PDError):
    """PD answered with a body that is not what its encoder writes for that endpoint."""


class PDHTTPError(PDError):
    """PD refused the request; the subclasses name the refusals an operator acts on."""


class PDAuthError(PDHTTPError):
    """The endpoint (or a proxy in front of it) rejected the credentials."""


class PDInvalidInputError(PDHTTPError):
    """PD rejected the request's parameters or body as malformed."""


class PDNotBootstrappedError(PDHTTPError):
    """The PD cluster has no TiKV store yet."""


class StoreNotFoundError(PDHTTPError):
    """PD has no store with that id."""


class StoreUnhealthyError(PDHTTPError):
    """The store has been down too long for PD to place anything on it."""


class StoreRemovedError(PDHTTPError):
    """The store is Tombstone (removed) or physically destroyed."""


class RegionNotFoundError(PDHTTPError):
    """PD has no region with that id (PD answers 404, `null` or a zero region by version)."""


class OperatorExistsError(PDHTTPError):
    """The region already has an operator PD will not replace."""


class OperatorNotFoundError(PDHTTPError):
    """The region has no pending operator."""


class OperatorRejectedError(PDHTTPError):
    """PD could not build the operator (no peer or voter on that store, and the like)."""


class SchedulerExistsError(PDHTTPError):
    """A scheduler of that name already runs."""


class SchedulerNotFoundError(PDHTTPError):
    """No such scheduler (or the scheduler has no entry for that store)."""


class LeaderTransferPausedError(PDHTTPError):
    """The store already has leader transfer paused (another evict/grant scheduler holds it)."""


class PDNoLeaderError(PDHTTPError):
    """The PD member answering has no leader to forward to: an election is under way."""


class PDNotLeaderError(PDHTTPError):
    """A forwarded request reached a member that is not the leader either."""


class PDRedirectFailedError(PDHTTPError):
    """A follower could not forward the request to the leader."""


_BY_CODE: dict[str, tuple[type[PDHTTPError], str]] = {
    "PD:core:ErrStoreNotFound": (StoreNotFoundError, "unknown store"),
    "PD:core:ErrStoreUnhealthy": (StoreUnhealthyError, "store not healthy"),
    "PD:core:ErrStoreRemoved": (StoreRemovedError, "store removed"),
    "PD:core:ErrStoreDestroyed": (StoreRemovedError, "store physically destroyed"),
    "PD:core:ErrPauseLeaderTransfer": (LeaderTransferPausedError, "leader transfer paused"),
    "PD:region:ErrRegionNotFound": (RegionNotFoundError, "region not found"),
    "PD:operator:ErrAddOperator": (OperatorExistsError, "operator exists"),
    "PD:operator:ErrOperatorNotFound": (OperatorNotFoundError, "no such operator"),
    "PD:scheduler:ErrSchedulerExisted": (SchedulerExistsError, "scheduler exists"),
    "PD:scheduler:ErrSchedulerNotFound": (SchedulerNotFoundError, "scheduler not found"),
    "PD:scheduler:ErrScheduleConfigNotExist": (SchedulerNotFoundError, "scheduler has no entry"),
    "PD:cluster:ErrNotBootstrapped": (PDNotBootstrappedError, "cluster not bootstrapped"),
    "PD:apiutil:ErrRedirectNoLeader": (PDNoLeaderError, "no PD leader"),
    "PD:apiutil:ErrRedirectToNotLeader": (PDNotLeaderError, "forwarded to a non-leader"),
    "PD:apiutil:ErrRedirect": (PDRedirectFailedError, "forwarding to the leader failed"),
}
# PD v7.5's redirector writes these without a code (pkg/utils/apiutil constants).
_BY_PLAIN_TEXT: dict[str, tuple[type[PDHTTPError], str]] = {
    "no leader": (PDNoLeaderError, "no PD leader"),
    "redirect to not leader": (PDNotLeaderError, "forwarded to a non-leader"),
    "redirect failed": (PDRedirectFailedError, "forwarding to the leader failed"),
}
# Texts PD's handlers write without a code for operators they cannot build.
_OPERATOR_REFUSALS = (
    "region has no voter in store",
    "region has no peer in store",
    "region already has peer in store",
)


def pd_text_of(body: bytes) -> tuple[str, str | None]:
    """PD's own error text and its `PD:...` code (if any) from an error body."""
    raw = body.decode("utf-8", errors="replace").strip()
    message = raw
    try:
        decoded = json.loads(raw) if raw else None
    except ValueError:
        decoded = raw
    if isinstance(decoded, str):
        message = decoded
    elif isinstance(decoded, dict) and isinstance(decoded.get("msg"), str):
        message = decoded["msg"]
    elif decoded is None:
        message = ""
    message = message.strip()
    match = _PD_CODE.match(message)
    return message, (match.group("code") if match else None)


def error_for(endpoint: str, status: int, body: bytes) -> PDHTTPError:
    """The typed exception for PD's error answer to `endpoint`."""
    pd_text, code = pd_text_of(body)
    cls: type[PDHTTPError] = PDHTTPError
    what = f"HTTP {status}"
    if code in _BY_CODE:
        cls, what = _BY_CODE[code]
    elif pd_text.lower() in _BY_PLAIN_TEXT:
        cls, what = _BY_PLAIN_TEXT[pd_text.lower()]
    elif status in (401, 403):
        cls, what = PDAuthError, "credentials rejected"
    elif status == 400:
        cls, what = PDInvalidInputError, "invalid request"
    elif pd_text.startswith(_OPERATOR_REFUSALS):
        cls, what = OperatorRejectedError, "operator refused"
    shown = pd_text if pd_text else "(no message in the body)"
    return cls(
        f"PD {endpoint}: {what} (HTTP {status}): {shown}",
        endpoint=endpoint,
        status=status,
        code=code,
        pd_text=pd_text,
    )
