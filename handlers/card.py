"""/card: the member card, a QR code photo with the member's standing as its caption; under it
"Pay with points", a one-time QR code that lets the till spend the member's points."""

from __future__ import annotations

import asyncio

from aiogram import Router
from aiogram.exceptions import TelegramBadRequest
from aiogram.filters import Command
from aiogram.types import BufferedInputFile, CallbackQuery, InlineKeyboardMarkup, Message
from sqlalchemy.ext.asyncio import AsyncSession

from domain import members, plus, spending
from domain.growth import GrowthTotal
from domain.models import Member
from domain.shop import Shop
from handlers.callbacks import SpendCodeAsk
from handlers.filters import MenuButton
from handlers.keyboards import card_actions, member_center_rows
from handlers.media import qr_png
from handlers.texts import Texts


class CardUploads:
    """The card image is uploaded once per member, then sent by Telegram's file_id. A /card
    sent while the member's first card is still uploading waits for that upload and reuses
    its file_id instead of uploading the same image again."""

    KEEP = 1_000  # uploads remembered after they finished (see below)

    def __init__(self) -> None:
        # member code -> its upload, under way or finished lately: a /card that loaded the
        # member just before the file_id was stored still finds it here.
        self.uploads: dict[str, asyncio.Future[str | None]] = {}
        # File ids waiting to be stored (member id -> file_id), written together: first cards
        # shown at the same time cost one turn at the database's writer, not one each.
        self.unsaved: dict[int, str] = {}
        self.saved: asyncio.Future[None] | None = None  # when the waiting ones are stored
        self.saving = asyncio.Lock()

    async def card(
        self, message: Message, session: AsyncSession, shop: Shop, texts: Texts,
        member: Member, lang: str, growth: GrowthTotal | None = None,
        webapp_url: str | None = None,
    ) -> None:
        view = await members.member_card(session, shop, member, growth)
        badge = plus.is_active(member.plus_state, member.plus_until, shop.now())
        caption = texts.render(lang, "card_caption", card=view, plus=badge)
        # A frozen member's points cannot be used at the till: no button to try.
        rows = [] if view.frozen else card_actions(texts, lang).inline_keyboard
        rows = [*rows, *member_center_rows(texts, lang, webapp_url, "card")]
        markup = InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
        file_id = member.card_file_id
        if file_id is None and member.code in self.uploads:
            file_id = await asyncio.shield(self.uploads[member.code])
        if file_id:
            try:
                await message.answer_photo(file_id, caption=caption, reply_markup=markup)
                return
            except TelegramBadRequest:
                pass  # the file_id is no longer valid (e.g. another bot token): upload again
        uploaded: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self.uploads[member.code] = uploaded
        self._forget_old()
        file_id = None
        try:
            png = qr_png(member.code)  # ~0.5 ms: cheaper than a hop to a worker thread
            photo = BufferedInputFile(png, filename=f"card-{member.code}.png")
            sent = await message.answer_photo(photo, caption=caption, reply_markup=markup)
            file_id = sent.photo[-1].file_id if sent.photo else None
        finally:
            uploaded.set_result(file_id)  # None: whoever waited uploads themselves
            if file_id is None and self.uploads.get(member.code) is uploaded:
                del self.uploads[member.code]
        if file_id:
            await self.remember(session, member.id, file_id)

    async def remember(self, session: AsyncSession, member_id: int, file_id: str) -> None:
        """Store a card's file_id with every other one waiting (group commit): whoever gets
        the turn writes them all; the others find theirs written."""
        self.unsaved[member_id] = file_id
        if self.saved is None:
            self.saved = asyncio.get_running_loop().create_future()
        saved = self.saved
        async with self.saving:
            if saved.done():
                return saved.result()  # an earlier turn stored it (or raises its error)
            batch, self.unsaved, self.saved = self.unsaved, {}, None
            try:
                await members.remember_card_files(session, batch)
            except BaseException as error:
                saved.set_exception(error)
                saved.exception()  # retrieved: the others raise it, nobody logs it as lost
                raise
            saved.set_result(None)

    def _forget_old(self) -> None:
        while len(self.uploads) > self.KEEP:
            oldest = next(iter(self.uploads))
            if not self.uploads[oldest].done():
                break
            del self.uploads[oldest]


async def pay_with_points(
    query: CallbackQuery, session: AsyncSession, shop: Shop, texts: Texts,
    member: Member | None, lang: str,
) -> None:
    """A new spend code for the member who pressed, as a QR code; never reused, never cached."""
    if member is None:
        await query.answer()
        return
    issued = await spending.issue(session, shop, member.id)
    await query.answer()
    png = await asyncio.to_thread(qr_png, issued.code)
    caption = texts.render(
        lang, "card_spend_code", code=spending.format_spend_code(issued.code),
        minutes=issued.minutes, balance=member.points_balance,
    )
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await query.bot.send_photo(  # type: ignore[union-attr]
        chat_id, BufferedInputFile(png, filename="pay-with-points.png"), caption=caption
    )


def build_router() -> Router:
    router = Router(name=__name__)
    uploads = CardUploads()  # one per app: the uploads under way in this process
    router.callback_query.register(pay_with_points, SpendCodeAsk.filter())
    router.message.register(uploads.card, Command("card"))
    router.message.register(uploads.card, MenuButton("menu_card"))
    return router
