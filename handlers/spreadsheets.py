"""The shop's spreadsheets as CSV: UTF-8 with a byte-order mark, so that Excel opens Chinese
names right; headers and words from the labels in the admin's language."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator

from domain.analytics_export import AuditRow, LedgerRow, MemberRow
from domain.shop import Shop
from handlers.texts import Texts

BOM = "\ufeff"


def _word(texts: Texts, lang: str, key: str, fallback: str) -> str:
    try:
        return texts.label(lang, key)
    except KeyError:
        return texts.label(lang, fallback)


async def members_csv(
    texts: Texts, lang: str, shop: Shop, pages: AsyncIterator[list[MemberRow]]
) -> tuple[bytes, int]:
    """The members as CSV bytes, and how many rows."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    columns = ("code", "name", "language", "tier", "stage", "status", "balance", "joined",
               "first_purchase", "last_purchase", "offers")
    writer.writerow([texts.label(lang, f"stats_csv_{c}") for c in columns])
    yes, no = texts.label(lang, "stats_yes"), texts.label(lang, "stats_no")
    rows = 0
    async for page in pages:
        for m in page:
            writer.writerow([
                m.code, m.name, m.language, shop.program.tier(m.tier).name.get(lang),
                _word(texts, lang, f"stats_stage_{m.stage}", "stats_kind_other"),
                _word(texts, lang, f"stats_status_{m.status}", "stats_kind_other"),
                m.balance, m.joined.isoformat(),
                m.first_purchase.isoformat() if m.first_purchase else "",
                m.last_purchase.isoformat() if m.last_purchase else "",
                yes if m.accepts_offers else no,
            ])
            rows += 1
    return out.getvalue().encode("utf-8"), rows


async def ledger_csv(
    texts: Texts, lang: str, pages: AsyncIterator[list[LedgerRow]]
) -> tuple[bytes, int]:
    """The ledger entries as CSV bytes (local times), and how many rows."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    columns = ("time", "code", "entry", "points", "balance_after")
    writer.writerow([texts.label(lang, f"stats_csv_{c}") for c in columns])
    rows = 0
    async for page in pages:
        for e in page:
            writer.writerow([
                e.at.strftime("%Y-%m-%d %H:%M:%S"), e.member_code,
                _word(texts, lang, f"stats_kind_{e.kind}", "stats_kind_other"),
                e.points, e.balance_after,
            ])
            rows += 1
    return out.getvalue().encode("utf-8"), rows


async def audit_csv(
    texts: Texts, lang: str, pages: AsyncIterator[list[AuditRow]]
) -> tuple[bytes, int]:
    """The audit lines as CSV bytes (local times; before and after as kept, JSON), and how
    many rows."""
    out = io.StringIO()
    out.write(BOM)
    writer = csv.writer(out)
    columns = ("time", "role", "actor", "action", "member", "subject", "before", "after",
               "reason")
    writer.writerow([texts.label(lang, f"stats_csv_audit_{c}") for c in columns])
    rows = 0
    async for page in pages:
        for a in page:
            writer.writerow([
                a.at.strftime("%Y-%m-%d %H:%M:%S"),
                _word(texts, lang, f"audit_role_{a.role}", "stats_kind_other"),
                a.actor_telegram_id,
                _label_or_raw(texts, lang, "audit_action_" + a.action.replace(".", "_"),
                              a.action),
                a.member_code or "", a.subject or "", a.before, a.after, a.reason,
            ])
            rows += 1
    return out.getvalue().encode("utf-8"), rows


def _label_or_raw(texts: Texts, lang: str, key: str, raw: str) -> str:
    """The label ``key``, or the action as written for one the labels do not name (a
    campaign's, added by another part of the bot)."""
    try:
        return texts.label(lang, key)
    except KeyError:
        return raw
