"""/rewards: the rewards mall. Catalog → item → confirmation → coupon, one message edited in
place; every refusal is an alert from the error handler and takes nothing."""

from __future__ import annotations

from aiogram import Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import rewards
from domain.members import FROZEN
from domain.models import Member
from domain.program import Reward
from domain.rewards import Offer
from domain.shop import Shop
from handlers.callbacks import CouponOpen, RewardRedeem, RewardView
from handlers.coupons import coupon_worth
from handlers.editing import edit_in_place
from handlers.filters import MenuButton
from handlers.keyboards import member_center_rows
from handlers.texts import Texts

CATALOG = ""  # RewardView(key=""): back to the catalog


def _button(text: str, data: RewardView | RewardRedeem | CouponOpen) -> list[InlineKeyboardButton]:
    return [InlineKeyboardButton(text=text, callback_data=data.pack())]


def _worth(texts: Texts, lang: str, reward: Reward) -> str:
    return coupon_worth(
        texts, lang, kind=reward.kind, value=reward.value, min_spend=reward.min_spend
    )


async def _catalog(
    session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str,
    webapp_url: str | None = None,
) -> tuple[str, InlineKeyboardMarkup]:
    offers = await rewards.catalog(session, shop, member)
    text = texts.render(
        lang, "rewards/catalog", offers=offers, balance=offers[0].balance if offers else 0,
        frozen=member.status == FROZEN,
    )
    markup = InlineKeyboardMarkup(
        inline_keyboard=[
            _button(
                texts.label(
                    lang, "rewards_item" if o.available else "rewards_item_locked",
                    name=o.reward.name.get(lang), cost=o.reward.cost,
                ),
                RewardView(key=o.reward.key),
            )
            for o in offers
        ] + member_center_rows(texts, lang, webapp_url, "rewards")
    )
    return text, markup


async def show_catalog(
    message: Message, session: AsyncSession, shop: Shop, texts: Texts, member: Member, lang: str,
    webapp_url: str | None = None,
) -> None:
    text, markup = await _catalog(session, shop, texts, member, lang, webapp_url)
    await message.answer(text, reply_markup=markup)


async def view(
    query: CallbackQuery,
    callback_data: RewardView,
    session: AsyncSession,
    shop: Shop,
    texts: Texts,
    member: Member,
    lang: str,
    webapp_url: str | None = None,
) -> None:
    if callback_data.key == CATALOG:
        text, markup = await _catalog(session, shop, texts, member, lang, webapp_url)
    else:
        offer = await rewards.offer(session, shop, member, callback_data.key)
        text = texts.render(
            lang, "rewards/item", offer=offer, worth=_worth(texts, lang, offer.reward)
        )
        markup = InlineKeyboardMarkup(inline_keyboard=[
            _button(
                texts.label(lang, "rewards_redeem", cost=offer.reward.cost),
                RewardRedeem(key=offer.reward.key, confirmed=False),
            ),
            _button(texts.label(lang, "rewards_back"), RewardView(key=CATALOG)),
        ])
    await edit_in_place(query, text=text, markup=markup)


async def redeem(
    query: CallbackQuery,
    callback_data: RewardRedeem,
    session: AsyncSession,
    shop: Shop,
    texts: Texts,
    member: Member,
    lang: str,
) -> None:
    if not callback_data.confirmed:
        await _confirm(query, callback_data.key, session, shop, texts, member, lang)
        return
    token, version = _split(callback_data.token)
    current = await rewards.offer(session, shop, member, callback_data.key)
    if current.version != version:  # an admin changed it since it was shown
        await _confirm(query, callback_data.key, session, shop, texts, member, lang, changed=True)
        return
    done = await rewards.redeem(
        session, shop, member.id, callback_data.key, confirmation=token, version=version
    )
    text = texts.render(
        lang, "rewards/done", done=done, worth=_worth(texts, lang, done.reward)
    )
    markup = InlineKeyboardMarkup(inline_keyboard=[
        _button(texts.label(lang, "rewards_open_coupon"), CouponOpen(coupon_id=done.coupon_id)),
        _button(texts.label(lang, "rewards_to_catalog"), RewardView(key=CATALOG)),
    ])
    await edit_in_place(query, text=text, markup=markup)


def _split(token: str) -> tuple[str, int]:
    """The confirmation token and the item's version a confirm button carries."""
    token, _, version = token.partition(".")
    return token, int(version) if version.isdigit() else 0


async def _confirm(
    query: CallbackQuery, key: str, session: AsyncSession, shop: Shop, texts: Texts,
    member: Member, lang: str, *, changed: bool = False,
) -> None:
    offer: Offer = await rewards.offer(session, shop, member, key)
    rewards.check_redeemable(offer, member)  # refuse now rather than after "Confirm"
    text = texts.render(
        lang, "rewards/confirm", offer=offer, worth=_worth(texts, lang, offer.reward),
        changed=changed,
    )
    markup = InlineKeyboardMarkup(inline_keyboard=[
        _button(
            texts.label(lang, "rewards_confirm"),
            RewardRedeem(
                key=key, confirmed=True,
                token=rewards.confirmation_token(shop, member.id, key, offer.redeemed)
                + (f".{offer.version}" if offer.version else ""),
            ),
        ),
        _button(texts.label(lang, "rewards_back"), RewardView(key=CATALOG)),
    ])
    await edit_in_place(query, text=text, markup=markup)


def build_router() -> Router:
    router = Router(name=__name__)
    router.message.register(show_catalog, Command("rewards"))
    router.message.register(show_catalog, MenuButton("menu_rewards"))
    router.callback_query.register(view, RewardView.filter())
    router.callback_query.register(redeem, RewardRedeem.filter())
    return router
