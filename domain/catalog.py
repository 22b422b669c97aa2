"""The live catalog: the rewards mall's items and the coupon templates, kept in the database
so admins change them from the chat (``/catalog``) without editing a file or restarting.

The program file seeds them on first start (``seed``: only keys not stored yet, so a restart
never writes over an admin's change); from then on the stored rows are the catalog. Until a
key is seeded (a fresh database that never ran the bot, a key added to the file later) the
program's own entry stands in for it, so every reader sees one catalog either way.

Each change is one transaction with its audit line, and raises the item's ``version``: a
member's confirmation screen carries the version it showed, and a screen shown before a change
is asked again (``domain.rewards``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, cast

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from domain import audit
from domain.audit import Actor
from domain.errors import DomainError
from domain.models import CatalogCouponTemplate, CatalogReward, RewardStock
from domain.program import CouponTemplate, Localized, Reward
from domain.shop import Shop
from domain.sql import insert_unless_exists, table_of
from domain.transaction import read_transaction, write_transaction

KINDS = ("amount_off", "percent_off", "free_item")
CouponKind = Literal["amount_off", "percent_off", "free_item"]
NO_TIER = "none"
MAX_VALID_DAYS = 3650
MAX_NAME = 120
# What an admin may change, and of which kind of value.
REWARD_FIELDS = ("cost", "stock", "per_member_limit", "min_tier", "valid_days", "paused")
TEMPLATE_FIELDS = ("value", "min_spend", "valid_days", "paused")
# A new item starts paused with these, so an admin sets it up before members see it.
NEW_ITEM_STOCK = 100
NEW_ITEM_LIMIT = 1
NEW_ITEM_VALID_DAYS = 30


class CatalogItemNotFound(DomainError):
    code = "catalog_item_not_found"
    default_message = "no such item in the catalog"


class CatalogValueInvalid(DomainError):
    """An admin's new value for a field is not acceptable: ``field`` says which, and the
    limits (``minimum``, ``maximum``) or the choices the template words."""

    code = "catalog_value_invalid"
    default_message = "the value is not acceptable for this field"


@dataclass(frozen=True)
class CatalogItem:
    """A reward of the mall as stored now: the reward, paused or not, its version."""

    reward: Reward
    paused: bool
    version: int
    remaining: int | None = None  # filled by ``reward_entries`` for the admin's list


@dataclass(frozen=True)
class TemplateEntry:
    template: CouponTemplate
    paused: bool
    version: int


# Built without validation: the row holds minor units, which the program file's validator
# would read as whole currency units again.
def _reward_of(row: CatalogReward) -> Reward:
    return Reward.model_construct(
        key=row.key, name=Localized(en=row.name_en, zh=row.name_zh), cost=row.cost,
        kind=_kind(row.kind), value=row.value, min_spend=row.min_spend, stock=row.stock,
        per_member_limit=row.per_member_limit, min_tier=row.min_tier, valid_days=row.valid_days,
    )


def _template_of(row: CatalogCouponTemplate) -> CouponTemplate:
    return CouponTemplate.model_construct(
        key=row.key, kind=_kind(row.kind), value=row.value, min_spend=row.min_spend,
        valid_days=row.valid_days,
    )


def _kind(kind: str) -> CouponKind:
    if kind not in KINDS:
        raise ValueError(f"unknown coupon kind {kind!r} in the catalog")
    return cast(CouponKind, kind)


# ------------------------------------------------------------------ reading


async def reward_entries(
    session: AsyncSession, shop: Shop, *, with_stock: bool = False
) -> list[CatalogItem]:
    """Every item, paused ones included, stored ones in their order, then the program's
    items not stored yet. ``with_stock`` adds what is left of each."""
    rows = (await session.scalars(
        select(CatalogReward).order_by(CatalogReward.position, CatalogReward.key)
        .execution_options(populate_existing=True)
    )).all()
    items = [CatalogItem(_reward_of(r), r.paused, r.version) for r in rows]
    stored = {r.key for r in rows}
    items += [CatalogItem(r, False, 0) for r in shop.program.rewards if r.key not in stored]
    if with_stock:
        left = dict((await session.execute(
            select(RewardStock.reward_key, RewardStock.remaining)
        )).all())
        items = [
            CatalogItem(i.reward, i.paused, i.version, int(left.get(i.reward.key, i.reward.stock)))
            for i in items
        ]
    return items


async def rewards(session: AsyncSession, shop: Shop) -> list[CatalogItem]:
    """The items members see now: every item not paused, in the catalog's order."""
    return [item for item in await reward_entries(session, shop) if not item.paused]


async def reward(session: AsyncSession, shop: Shop, key: str) -> CatalogItem | None:
    """One item, paused or not, or None when the catalog has no such key."""
    row = await session.scalar(
        select(CatalogReward).where(CatalogReward.key == key)
        .execution_options(populate_existing=True)
    )
    if row is not None:
        return CatalogItem(_reward_of(row), row.paused, row.version)
    found = next((r for r in shop.program.rewards if r.key == key), None)
    return CatalogItem(found, False, 0) if found is not None else None


async def reward_names(session: AsyncSession, shop: Shop) -> dict[str, Localized]:
    """Every item's name by key (paused ones too: a coupon outlives a pause)."""
    return {i.reward.key: i.reward.name for i in await reward_entries(session, shop)}


async def template_entries(session: AsyncSession, shop: Shop) -> list[TemplateEntry]:
    """Every coupon template, paused ones included, as ``reward_entries`` orders items."""
    rows = (await session.scalars(
        select(CatalogCouponTemplate)
        .order_by(CatalogCouponTemplate.position, CatalogCouponTemplate.key)
        .execution_options(populate_existing=True)
    )).all()
    stored = {r.key for r in rows}
    return [TemplateEntry(_template_of(r), r.paused, r.version) for r in rows] + [
        TemplateEntry(t, False, 0) for t in shop.program.coupons.templates if t.key not in stored
    ]


async def coupon_templates(session: AsyncSession, shop: Shop) -> list[CouponTemplate]:
    """The coupon templates that can be issued now (not paused), in the catalog's order."""
    return [e.template for e in await template_entries(session, shop) if not e.paused]


async def coupon_template(session: AsyncSession, shop: Shop, key: str) -> CouponTemplate | None:
    """The template ``key`` as it stands now, or None when unknown or paused."""
    row = await session.scalar(
        select(CatalogCouponTemplate).where(CatalogCouponTemplate.key == key)
        .execution_options(populate_existing=True)
    )
    if row is not None:
        return None if row.paused else _template_of(row)
    return shop.program.coupon_template(key)


async def templates_by_key(
    session: AsyncSession, shop: Shop, keys: Iterable[str]
) -> dict[str, CouponTemplate | None]:
    """Several templates as they stand now, in one read: None for unknown or paused keys."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = {
        row.key: row for row in (await session.scalars(
            select(CatalogCouponTemplate).where(CatalogCouponTemplate.key.in_(wanted))
            .execution_options(populate_existing=True)
        )).all()
    }
    return {
        key: (None if rows[key].paused else _template_of(rows[key])) if key in rows
        else shop.program.coupon_template(key)
        for key in wanted
    }


# ------------------------------------------------------------------ seeding


async def seed(session: AsyncSession, shop: Shop) -> int:
    """Store the program's items and templates that are not stored yet (one transaction);
    those already stored, and so every admin change, stay as they are. How many were added."""
    now = shop.now()
    added = 0
    async with write_transaction(session):
        for position, r in enumerate(shop.program.rewards):
            written = await session.scalar(
                insert_unless_exists(session, table_of(CatalogReward), "key")
                .values(_reward_values(r, position, now))
                .returning(table_of(CatalogReward).c.key)
            )
            added += written is not None
        for position, t in enumerate(shop.program.coupons.templates):
            written = await session.scalar(
                insert_unless_exists(session, table_of(CatalogCouponTemplate), "key")
                .values(
                    key=t.key, kind=t.kind, value=t.value, min_spend=t.min_spend,
                    valid_days=t.valid_days, paused=False, position=position, version=0,
                    updated_at=now,
                )
                .returning(table_of(CatalogCouponTemplate).c.key)
            )
            added += written is not None
    return added


def _reward_values(r: Reward, position: int, now: datetime) -> dict[str, Any]:
    return {
        "key": r.key, "name_en": r.name.en, "name_zh": r.name.zh, "cost": r.cost,
        "kind": r.kind, "value": r.value, "min_spend": r.min_spend, "stock": r.stock,
        "per_member_limit": r.per_member_limit, "min_tier": r.min_tier,
        "valid_days": r.valid_days, "paused": False, "position": position, "version": 0,
        "updated_at": now,
    }


# ------------------------------------------------------------------ changing


def parse_value(shop: Shop, field: str, text: str) -> int | str | bool | None:
    """An admin's typed value for ``field``, checked; CatalogValueInvalid when it is not
    acceptable. Points, counts and days are whole numbers; money is read by the caller."""
    text = text.strip()
    if field == "min_tier":
        keys = [t.key for t in shop.program.tiers]
        if text in (NO_TIER, "-", ""):
            return None
        if text not in keys:
            raise CatalogValueInvalid(field=field, choices=keys)
        return text
    bounds = {
        "cost": (1, 10_000_000), "stock": (0, 10_000_000), "per_member_limit": (1, 1000),
        "valid_days": (1, MAX_VALID_DAYS),
    }
    low, high = bounds.get(field, (0, 10_000_000))
    cleaned = text.replace(",", "").replace("_", "")
    if not cleaned.isdigit() or not low <= int(cleaned) <= high:
        raise CatalogValueInvalid(field=field, minimum=low, maximum=high)
    return int(cleaned)


async def _locked_reward(session: AsyncSession, shop: Shop, key: str) -> CatalogReward:
    """The stored row of ``key``, locked; a program item not stored yet is stored first."""
    row = await session.scalar(
        select(CatalogReward).where(CatalogReward.key == key).with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is not None:
        return row
    position = next((i for i, r in enumerate(shop.program.rewards) if r.key == key), None)
    if position is None:
        raise CatalogItemNotFound(key=key)
    await session.execute(
        insert_unless_exists(session, table_of(CatalogReward), "key")
        .values(_reward_values(shop.program.rewards[position], position, shop.now()))
    )
    return await _locked_reward(session, shop, key)


async def _changed(
    session: AsyncSession, shop: Shop, actor: Actor, row: CatalogReward | CatalogCouponTemplate,
    subject: str, field: str, value: object, before: object,
) -> None:
    """Set one field of a catalog row, raise its version (a confirmation shown before goes
    stale) and write the audit line, in the caller's transaction."""
    setattr(row, field, value)
    row.version += 1
    row.updated_at = shop.now()
    kind = subject.partition(":")[0]
    audit.record(
        session, actor, f"catalog.{kind}.{field}", shop.now(), subject=subject,
        before={field: before}, after={field: value},
    )
    await session.flush()


async def change_reward(
    session: AsyncSession, shop: Shop, actor: Actor, key: str, field: str,
    value: int | str | bool | None,
) -> CatalogItem:
    """Set one field of an item (``REWARD_FIELDS``; ``stock`` sets what is left now), with its
    audit line, in one transaction. Members see it on their next look at the mall."""
    if field not in REWARD_FIELDS:
        raise CatalogValueInvalid(field=field)
    async with write_transaction(session):
        row = await _locked_reward(session, shop, key)
        if field == "stock":
            left = await session.scalar(
                select(RewardStock.remaining).where(RewardStock.reward_key == key)
            )
            before: object = int(left) if left is not None else row.stock
            await session.execute(
                insert_unless_exists(session, table_of(RewardStock), "reward_key")
                .values(reward_key=key, remaining=int(value or 0))
            )
            await session.execute(
                update(RewardStock).where(RewardStock.reward_key == key)
                .values(remaining=int(value or 0))
            )
        else:
            before = getattr(row, field)
        await _changed(session, shop, actor, row, f"reward:{key}", field, value, before)
        return CatalogItem(_reward_of(row), row.paused, row.version)


async def add_reward(
    session: AsyncSession, shop: Shop, actor: Actor, *, name: Localized, cost: int, kind: str,
    value: int,
) -> CatalogItem:
    """A new item, paused, with the stock, limit and validity of ``NEW_ITEM_*``: the admin sets
    it up, then resumes it. Its key is made here (members never see keys)."""
    if kind not in KINDS:
        raise CatalogValueInvalid(field="kind", choices=list(KINDS))
    if kind == "percent_off" and not 1 <= value <= 100:
        raise CatalogValueInvalid(field="percent", minimum=1, maximum=100)
    if cost < 1:
        raise CatalogValueInvalid(field="cost", minimum=1, maximum=10_000_000)
    async with write_transaction(session):
        count = int(await session.scalar(select(func.count()).select_from(CatalogReward)) or 0)
        position = int(
            await session.scalar(select(func.max(CatalogReward.position))) or count
        ) + 1
        key = f"item_{count + 1}"
        while await session.get(CatalogReward, key) is not None or any(
            r.key == key for r in shop.program.rewards
        ):
            count += 1
            key = f"item_{count + 1}"
        row = CatalogReward(
            key=key, name_en=name.en[:MAX_NAME], name_zh=name.zh[:MAX_NAME], cost=cost,
            kind=kind, value=value if kind != "free_item" else 0, min_spend=0,
            stock=NEW_ITEM_STOCK, per_member_limit=NEW_ITEM_LIMIT, min_tier=None,
            valid_days=NEW_ITEM_VALID_DAYS, paused=True, position=position, version=0,
            updated_at=shop.now(),
        )
        session.add(row)
        await session.execute(
            insert_unless_exists(session, table_of(RewardStock), "reward_key")
            .values(reward_key=key, remaining=NEW_ITEM_STOCK)
        )
        audit.record(
            session, actor, "catalog.reward.add", shop.now(), subject=f"reward:{key}",
            after={"cost": cost, "kind": kind, "value": value, "stock": NEW_ITEM_STOCK,
                   "paused": True},
        )
        await session.flush()
        return CatalogItem(_reward_of(row), row.paused, row.version)


async def change_template(
    session: AsyncSession, shop: Shop, actor: Actor, key: str, field: str,
    value: int | bool,
) -> TemplateEntry:
    """Set one field of a coupon template (``TEMPLATE_FIELDS``), with its audit line. Coupons
    issued before keep what they were issued with."""
    if field not in TEMPLATE_FIELDS:
        raise CatalogValueInvalid(field=field)
    async with write_transaction(session):
        row = await session.scalar(
            select(CatalogCouponTemplate).where(CatalogCouponTemplate.key == key)
            .with_for_update().execution_options(populate_existing=True)
        )
        if row is None:
            template = shop.program.coupon_template(key)
            if template is None:
                raise CatalogItemNotFound(key=key)
            position = [t.key for t in shop.program.coupons.templates].index(key)
            row = CatalogCouponTemplate(
                key=key, kind=template.kind, value=template.value,
                min_spend=template.min_spend, valid_days=template.valid_days, paused=False,
                position=position, version=0, updated_at=shop.now(),
            )
            session.add(row)
            await session.flush()
        if field == "value" and row.kind == "percent_off" and not 1 <= int(value) <= 100:
            raise CatalogValueInvalid(field="percent", minimum=1, maximum=100)
        await _changed(
            session, shop, actor, row, f"template:{key}", field, value, getattr(row, field)
        )
        return TemplateEntry(_template_of(row), row.paused, row.version)


async def read_rewards(session: AsyncSession, shop: Shop) -> list[CatalogItem]:
    """``reward_entries`` with stock, as one read that ends its transaction (the admin's list)."""
    async with read_transaction(session):
        return await reward_entries(session, shop, with_stock=True)


async def read_templates(session: AsyncSession, shop: Shop) -> list[TemplateEntry]:
    async with read_transaction(session):
        return await template_entries(session, shop)
