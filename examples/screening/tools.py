"""Offline, deterministic tools of the screening example (an in-memory applicant database)."""

from __future__ import annotations

from typing import Literal

APPLICATIONS = {
    "A-1042": {
        "candidate": "Ada Moreno",
        "role": "backend-engineer",
        "years_experience": 6,
        "skills": ["python", "postgresql", "kubernetes"],
        "work_permit": True,
    },
    "A-1043": {
        "candidate": "Ben Ito",
        "role": "backend-engineer",
        "years_experience": 1,
        "skills": ["javascript"],
        "work_permit": True,
    },
}

REQUIREMENTS = {
    "backend-engineer": {"min_years": 3, "skills": {"python", "postgresql"}},
}

SLOTS = ["2025-03-03T10:00", "2025-03-03T14:00", "2025-03-04T09:30"]


def load_application(application_id: str) -> dict:
    """Load an application by id.

    Args:
        application_id: The application's id, e.g. "A-1042".
    """
    try:
        return {"application_id": application_id, **APPLICATIONS[application_id]}
    except KeyError:
        raise LookupError(f"no application {application_id!r}") from None


def check_requirements(application_id: str, role: str) -> bool:
    """Check an application against a role's hard requirements; true when all are met.

    Args:
        application_id: The application to check.
        role: The role whose requirements apply.
    """
    app = APPLICATIONS[application_id]
    need = REQUIREMENTS[role]
    return (
        app["work_permit"]
        and app["years_experience"] >= need["min_years"]
        and need["skills"] <= set(app["skills"])
    )


def schedule_interview(
    application_id: str, slot: Literal["2025-03-03T10:00", "2025-03-03T14:00", "2025-03-04T09:30"]
) -> str:
    """Book a first interview for the candidate in one of the open slots.

    Args:
        application_id: The application whose candidate is invited.
        slot: One of the open interview slots.
    """
    name = APPLICATIONS[application_id]["candidate"]
    return f"Interview booked for {name} on {slot} (confirmation IV-{application_id[2:]})."


def send_rejection(application_id: str, reason: str) -> str:
    """Send the candidate a polite rejection that states the reason.

    Args:
        application_id: The application being rejected.
        reason: One sentence the candidate will read.
    """
    name = APPLICATIONS[application_id]["candidate"]
    return f"Rejection sent to {name}: {reason}"
