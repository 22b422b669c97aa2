"""A campaign's message as a member sees it: the admin's text in the member's language, the
offer of their tier and variant, the photo, the button into the bot or the NPS buttons. The
admin's preview and the sender both compose it here, so the preview is what members get."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup
from sqlalchemy.ext.asyncio import AsyncSession

from domain import campaigns
from domain.campaigns import CampaignSpec
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import NpsScore
from handlers.rich_push import ComposedPush
from handlers.texts import Texts

CTA_PREFIX = "go_"  # /start go_rewards: a campaign's button into the bot (handlers/surveys.py)


def compose(
    texts: Texts, shop: Shop, spec: CampaignSpec, *, campaign_id: int, variant: str, lang: str,
    tier: str, bot_username: str,
) -> ComposedPush:
    chosen = spec.variant(variant)
    offer = chosen.offer_for(tier)
    text = texts.render(
        lang, "campaign/push", text=chosen.text_for(lang), offer=offer,
        survey=spec.kind == "survey", tier=shop.program.tier(tier).name.get(lang),
    )
    rows: list[list[InlineKeyboardButton]] = []
    if spec.kind == "survey":
        scores = [
            InlineKeyboardButton(
                text=texts.number(lang, score),
                callback_data=NpsScore(campaign_id=campaign_id, score=score).pack(),
            )
            for score in range(11)
        ]
        rows = [scores[:6], scores[6:]]
    elif spec.cta is not None and bot_username:
        rows = [[InlineKeyboardButton(
            text=texts.label(lang, f"campaign_cta_{spec.cta}"),
            url=f"https://t.me/{bot_username}?start={CTA_PREFIX}{spec.cta}",
        )]]
    markup = InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
    return ComposedPush(text=text, photo=spec.photo, markup=markup)


class CampaignPushes:
    """The sender's view of campaign and survey pushes (bot/sender.py ``RichPushKind``)."""

    def __init__(self, texts: Texts, shop: Shop, bot: Bot) -> None:
        self.texts = texts
        self.shop = shop
        self.bot = bot

    async def compose(
        self, session: AsyncSession, member: Member, payload: dict[str, Any]
    ) -> ComposedPush | None:
        found = await campaigns.delivery(
            session, int(payload["campaign"]), str(payload.get("variant", "A"))
        )
        if found is None or not found.live:
            return None  # stopped (or gone): what is not sent is not sent
        me = await self.bot.me()
        return compose(
            self.texts, self.shop, found.spec, campaign_id=found.campaign_id,
            variant=found.variant, lang=member.language, tier=member.tier,
            bot_username=me.username or "",
        )

    async def delivered(
        self, session: AsyncSession, member: Member, payload: dict[str, Any]
    ) -> None:
        await campaigns.delivered(
            session, self.shop, int(payload["campaign"]), member.id, member.tier,
            str(payload.get("variant", "A")),
        )
