"""/coupons: the member's usable coupons; each opens as a QR code photo for the cashier."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
)
from sqlalchemy.ext.asyncio import AsyncSession

from domain import coupons
from domain.coupons import CouponView
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import CouponOpen, RewardView
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.media import qr_png
from handlers.texts import Texts

LIST = 0  # CouponOpen(coupon_id=0): the list itself


def coupon_worth(texts: Texts, lang: str, *, kind: str, value: int, min_spend: int) -> str:
    """What a coupon (or a reward's coupon) is worth, in the wording every screen uses."""
    return texts.coupon(lang, kind=kind, value=value, min_spend=min_spend)


def _worth(texts: Texts, lang: str, coupon: CouponView) -> str:
    if coupon.kind == "free_item" and coupon.reward_name is not None:
        return coupon.reward_name.get(lang)  # "A gift at the counter" says more than "free item"
    return coupon_worth(
        texts, lang, kind=coupon.kind, value=coupon.value, min_spend=coupon.min_spend
    )


@dataclass(frozen=True)
class CouponLine:
    coupon: CouponView
    worth: str


def _listing(
    texts: Texts, lang: str, found: list[CouponView]
) -> tuple[str, InlineKeyboardMarkup]:
    if not found:
        markup = InlineKeyboardMarkup(
            inline_keyboard=[[InlineKeyboardButton(
                text=texts.label(lang, "coupons_to_rewards"),
                callback_data=RewardView(key="").pack(),
            )]]
        )
        return texts.render(lang, "coupons/empty"), markup
    items = [CouponLine(c, _worth(texts, lang, c)) for c in found]
    markup = InlineKeyboardMarkup(
        inline_keyboard=[
            [InlineKeyboardButton(
                text=texts.label(
                    lang, "coupons_button", worth=item.worth, until=item.coupon.valid_until
                ),
                callback_data=CouponOpen(coupon_id=item.coupon.id).pack(),
            )]
            for item in items
        ]
    )
    return texts.render(lang, "coupons/list", items=items), markup


async def list_coupons(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str
) -> None:
    found = await coupons.member_coupons(session, shop, member.id)
    text, markup = _listing(texts, lang, found)
    await message.answer(text, reply_markup=markup)


async def open_coupon(
    query: CallbackQuery,
    callback_data: CouponOpen,
    session: AsyncSession,
    shop: Shop,
    texts: Texts,
    member: Member,
    lang: str,
) -> None:
    if callback_data.coupon_id == LIST:
        found = await coupons.member_coupons(session, shop, member.id)
        text, markup = _listing(texts, lang, found)
        await edit_in_place(query, text=text, markup=markup)
        return
    # Only the presser's own coupon: another member's id is "not found", nothing shown.
    coupon = await coupons.member_coupon(session, shop, member.id, callback_data.coupon_id)
    await query.answer()
    worth = _worth(texts, lang, coupon)
    caption = texts.render(lang, "coupons/coupon", coupon=coupon, worth=worth)
    png = await asyncio.to_thread(qr_png, coupon.code)  # CPU work off the event loop
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await query.bot.send_photo(  # type: ignore[union-attr]
        chat_id, BufferedInputFile(png, filename=f"coupon-{coupon.code}.png"), caption=caption
    )


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(list_coupons, Command("coupons"))
    router.message.register(list_coupons, MenuButton("menu_coupons"))
    router.callback_query.register(open_coupon, CouponOpen.filter())
    return router
