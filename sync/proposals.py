"""The proposal (usulan) workflow: which role may move a household's `status_usulan` where.

draft → diusulkan (an operator proposes) → diverifikasi | dikembalikan | ditolak (a
verifier decides; returning or refusing needs a reason, kept in `catatan_usulan`) →
disahkan (a verifier approves a verified proposal). A returned proposal goes back to its
operator, who proposes it again. An admin may make every move of both roles, and through
the JSON API may set any status (to correct imported data); the audit trail names them.

The status lives in the household document, so it syncs like every other field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DRAFT = "draft"
PROPOSED = "diusulkan"
VERIFIED = "diverifikasi"
RETURNED = "dikembalikan"
REJECTED = "ditolak"
APPROVED = "disahkan"
NOTE = "catatan_usulan"

OPERATOR_MOVES: dict[str, tuple[str, ...]] = {DRAFT: (PROPOSED,), RETURNED: (PROPOSED,)}
VERIFIER_MOVES: dict[str, tuple[str, ...]] = {
    PROPOSED: (VERIFIED, RETURNED, REJECTED),
    VERIFIED: (APPROVED, RETURNED),
}
NEEDS_REASON = (RETURNED, REJECTED)


class TransitionRefused(Exception):
    """A status change the role may not make, or one without its required reason."""

    def __init__(self, message: str, forbidden: bool) -> None:
        super().__init__(message)
        self.forbidden = forbidden  # True: the role may not; False: the request is incomplete


def moves_for(role: str, current: str) -> tuple[str, ...]:
    """The statuses `role` may move a household from `current` to, in workflow order."""
    operator = OPERATOR_MOVES.get(current, ()) if role in ("operator", "admin") else ()
    verifier = VERIFIER_MOVES.get(current, ()) if role in ("verifier", "admin") else ()
    return operator + verifier


def check_move(role: str, current: str, target: str, reason: str = "") -> None:
    """Raise TransitionRefused unless `role` may move `current` to `target` with `reason`."""
    if target not in moves_for(role, current):
        raise TransitionRefused(
            f"role {role} may not move a proposal from {current} to {target}", forbidden=True
        )
    if target in NEEDS_REASON and not reason.strip():
        raise TransitionRefused(f"moving a proposal to {target} needs a reason", forbidden=False)


def moved(household: Mapping[str, Any], target: str, reason: str) -> dict[str, Any]:
    """The household with its new status; the reason kept for a return or refusal only."""
    note = reason.strip() if target in NEEDS_REASON else ""
    return {**household, "status_usulan": target, NOTE: note}


def check_api_status(role: str, current: str | None, target: str, reason: str) -> None:
    """A status set through the JSON API (`reason`: the `catatan_usulan` sent with it): a
    new record starts as a draft, a change follows the workflow; an admin may set any."""
    if role == "admin" or target == current:
        return
    if current is None:
        if target != DRAFT:
            raise TransitionRefused(f"a new household starts as {DRAFT}", forbidden=True)
        return
    check_move(role, current, target, reason)
