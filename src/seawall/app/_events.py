"""The case events the service writes to the outbox, built in one place."""

from __future__ import annotations

from typing import Any, Final

from fastapi.encoders import jsonable_encoder

from seawall.app._domain import Case
from seawall.messaging import Event

EVENT_SOURCE: Final = "/seawall/cases"
"""The CloudEvents ``source`` of case events: subjects ``seawall.cases.case.…``."""


def case_created(case: Case) -> Event:
    """``case.created`` with the new case."""
    return Event.create(
        "case.created", source=EVENT_SOURCE, subject=case.id, data=jsonable_encoder(case)
    )


def field_changes(before: Case, changes: dict[str, str]) -> dict[str, dict[str, Any]]:
    """``{field: {"from": old, "to": new}}`` for status and priority changes."""
    return {
        name: {"from": getattr(before, name).value, "to": value} for name, value in changes.items()
    }


def case_updated(updated: Case, changes: dict[str, dict[str, Any]]) -> Event:
    """``case.updated`` with the case as it is now and what changed (``from``/``to``)."""
    return Event.create(
        "case.updated",
        source=EVENT_SOURCE,
        subject=updated.id,
        data={"case": jsonable_encoder(updated), "changes": changes},
    )
