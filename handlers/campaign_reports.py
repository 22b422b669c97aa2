"""/campaigns: the newest campaigns, each with its report (reached, sent, skipped, failed,
blocked, coupons used, bonus points, revenue from recipients; A/B side by side with a
two-proportion test; a survey's NPS) and what can still be done with it: cancel a scheduled
one, stop a running one. Admins only."""

from __future__ import annotations

from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import campaigns
from domain.campaigns import CampaignReport
from domain.shop import Shop
from handlers.callbacks import CampaignAction
from handlers.editing import edit_in_place
from handlers.texts import Texts


def report_view(
    texts: Texts, lang: str, shop: Shop, report: CampaignReport
) -> tuple[str, InlineKeyboardMarkup]:
    text = texts.render(
        lang, "campaign/report", r=report, min_sample=campaigns.MIN_SAMPLE,
        min_expected=campaigns.MIN_EXPECTED, days=campaigns.REVENUE_DAYS,
        start_at=report.start_at.astimezone(shop.tz) if report.start_at else None,
    )

    def button(key: str, action: str) -> InlineKeyboardButton:
        return InlineKeyboardButton(
            text=texts.label(lang, key),
            callback_data=CampaignAction(action=action, campaign_id=report.id).pack(),
        )

    row = [button("campaign_refresh", "report")]
    if report.state == campaigns.PLANNED:
        row.append(button("campaign_cancel", "cancel"))
    if report.state in (campaigns.WRITING, campaigns.RUNNING):
        row.append(button("campaign_stop", "stop"))
    return text, InlineKeyboardMarkup(inline_keyboard=[row])


async def list_campaigns(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, lang: str
) -> None:
    ids = await campaigns.recent_campaigns(session)
    if not ids:
        await message.answer(texts.render(lang, "campaign/none"))
        return
    for campaign_id in ids:
        report = await campaigns.report(session, shop, campaign_id)
        text, markup = report_view(texts, lang, shop, report)
        await message.answer(text, reply_markup=markup)


async def show_report(
    query: CallbackQuery, session: AsyncSession, shop: Shop, texts: Texts, lang: str,
    campaign_id: int,
) -> None:
    report = await campaigns.report(session, shop, campaign_id)
    text, markup = report_view(texts, lang, shop, report)
    await edit_in_place(query, text=text, markup=markup)
