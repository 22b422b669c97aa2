"""The doors: aiogram routers for members and staff, HTTP routes for tills."""

from __future__ import annotations

from aiogram import Router

from handlers import (
    audit,
    benefits,
    campaigns,
    card,
    care,
    catalog,
    chat_member,
    checkin,
    contact,
    coupons,
    errors,
    group,
    help,
    invite,
    language,
    plus,
    points,
    profile,
    rewards,
    staff,
    start,
    stats,
    surveys,
)


def build_router() -> Router:
    """Fresh routers (one set per app), in the order they are tried: groups first, the
    catch-all help last."""
    root = Router(name="root")
    root.include_routers(
        errors.build_router(),
        group.build_router(),
        chat_member.build_router(),
        # Before every other message handler: a payment (successful_payment) and Telegram's
        # pre-checkout question are PLUS's alone.
        plus.build_router(),
        # Before start: admins need not be members to press the /stats buttons.
        stats.build_router(),
        # Before start too: staff and admins need not be members for member care, the catalog
        # and the audit, nor to answer their questions.
        care.build_router(),
        catalog.build_router(),
        audit.build_router(),
        # Before start: admins build campaigns without being members; a campaign's button
        # (/start go_...) and a survey's comment are answered before anything else.
        campaigns.build_router(),
        surveys.build_router(),
        start.build_router(),
        staff.build_router(),
        card.build_router(),
        checkin.build_router(),
        points.build_router(),
        rewards.build_router(),
        coupons.build_router(),
        invite.build_router(),
        benefits.build_router(),
        profile.build_router(),
        contact.build_router(),
        language.build_router(),
        help.build_router(),
    )
    return root
