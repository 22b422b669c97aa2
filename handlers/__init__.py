"""The doors: aiogram routers for members and staff, HTTP routes for tills."""

from __future__ import annotations

from aiogram import Router

from handlers import card, contact, errors, group, help, language, staff, start


def build_router() -> Router:
    """Fresh routers (one set per app), in the order they are tried: groups first, the catch-all help last."""
    root = Router(name="root")
    root.include_routers(
        errors.build_router(),
        group.build_router(),
        start.build_router(),
        staff.build_router(),
        card.build_router(),
        contact.build_router(),
        language.build_router(),
        help.build_router(),
    )
    return root
