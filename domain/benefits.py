"""Benefits and progress: every tier's benefits side by side, the member's tier marked, and
the growth still needed for the next one."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from domain.growth import growth_total
from domain.models import Member
from domain.program import Tier
from domain.shop import Shop
from domain.tiers import TierProgress, progress
from domain.transaction import read_transaction


@dataclass(frozen=True)
class TierBenefits:
    tier: Tier
    current: bool  # the member's tier
    reached: bool  # the member's tier or one below it
    builds_on: Tier | None  # the tier below, when this tier keeps all of its services

    def services(self, lang: str) -> list[str]:
        """The services to list: only what is added to ``builds_on`` when there is one."""
        own = self.tier.services.get(lang)
        if self.builds_on is None:
            return list(own)
        below = set(self.builds_on.services.get(lang))
        return [service for service in own if service not in below]


@dataclass(frozen=True)
class BenefitsOverview:
    tiers: list[TierBenefits]
    progress: TierProgress


def compare_tiers(shop: Shop, tier_key: str) -> list[TierBenefits]:
    """The program's tiers, lowest first, with the given tier marked."""
    tiers = shop.program.tiers
    current = shop.program.tier_index(tier_key)
    rows: list[TierBenefits] = []
    for index, tier in enumerate(tiers):
        below = tiers[index - 1] if index > 0 else None
        keeps_all = below is not None and all(
            set(below.services.get(lang)) <= set(tier.services.get(lang)) for lang in ("en", "zh")
        )
        rows.append(
            TierBenefits(
                tier=tier, current=index == current, reached=index <= current,
                builds_on=below if keeps_all and below and below.services.en else None,
            )
        )
    return rows


async def benefits_overview(session: AsyncSession, shop: Shop, member: Member) -> BenefitsOverview:
    """The tier comparison for ``member`` (the row loaded for this update) and the path to the
    next tier, counted on the 12-month growth within the behaviour cap."""
    async with read_transaction(session):
        growth = await growth_total(session, shop, member.id)
    return BenefitsOverview(
        tiers=compare_tiers(shop, member.tier),
        progress=progress(shop, member.tier, growth.counted),
    )
