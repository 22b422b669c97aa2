"""What members do with a campaign: answer an NPS survey (0-10, once per survey, only for a
survey they were sent, then an optional comment) and follow a campaign's button into the bot
(``/start go_rewards`` and the like)."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import CommandObject, CommandStart, StateFilter
from aiogram.fsm.context import FSMContext
from aiogram.fsm.state import State, StatesGroup
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import campaigns
from domain.models import Member
from domain.shop import Shop
from handlers import checkin, coupons, rewards
from handlers.callbacks import NpsScore
from handlers.campaign_push import CTA_PREFIX
from handlers.editing import edit_in_place
from handlers.filters import Matches
from handlers.texts import Texts

NO_COMMENT = -1


class Survey(StatesGroup):
    comment = State()  # data["campaign_id"]: the survey the next message comments on


async def score(
    query: CallbackQuery, callback_data: NpsScore, state: FSMContext, session: AsyncSession,
    shop: Shop, texts: Texts, lang: str, member: Member | None = None,
) -> None:
    if member is None:
        await query.answer(texts.render(lang, "campaign/nps_not_asked"), show_alert=True)
        return
    if callback_data.score == NO_COMMENT:
        await state.clear()
        await edit_in_place(query, text=texts.render(lang, "campaign/nps_thanks", comment=False))
        return
    recorded = await campaigns.answer_nps(
        session, shop, member.id, callback_data.campaign_id, callback_data.score
    )
    if not recorded:
        await query.answer(texts.render(lang, "campaign/nps_already"), show_alert=True)
        return
    await state.set_state(Survey.comment)
    await state.set_data({"campaign_id": callback_data.campaign_id})
    skip = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(
        text=texts.label(lang, "campaign_nps_no_comment"),
        callback_data=NpsScore(campaign_id=callback_data.campaign_id, score=NO_COMMENT).pack(),
    )]])
    await edit_in_place(
        query, text=texts.render(lang, "campaign/nps_ask_comment", score=callback_data.score),
        markup=skip,
    )


async def comment(
    message: Message, state: FSMContext, session: AsyncSession, texts: Texts, lang: str,
    member: Member,
) -> None:
    data = await state.get_data()
    await state.clear()
    await campaigns.comment_nps(session, member.id, int(data["campaign_id"]), message.text or "")
    await message.answer(texts.render(lang, "campaign/nps_thanks", comment=True))


async def _not_a_command(message: Message) -> bool:
    return not (message.text or "").startswith("/")


async def _a_member(_: Message, member: Member | None = None) -> bool:
    return member is not None


async def follow_button(
    message: Message, command: CommandObject, session: AsyncSession, shop: Shop, texts: Texts,
    member: Member, lang: str,
) -> None:
    """A campaign's button: the screen it names, for the member who pressed it."""
    target = (command.args or "").removeprefix(CTA_PREFIX)
    if target == "rewards":
        await rewards.show_catalog(message, session, shop, texts, member, lang)
    elif target == "coupons":
        await coupons.list_coupons(message, session, shop, texts, member, lang)
    else:
        await checkin.check_in(message, session, shop, texts, member, lang)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(
        follow_button,
        CommandStart(deep_link=True, magic=F.args.in_({CTA_PREFIX + c for c in campaigns.CTAS})),
        _a_member,
    )
    router.message.register(
        comment, StateFilter(Survey.comment), _a_member, _not_a_command, Matches(F.text),
    )
    router.callback_query.register(score, NpsScore.filter())
    return router
