"""Domain errors become replies here, in one place: the template ``errors/<code>`` words the
error's reason and values in the reader's language."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent, User

from domain.errors import DomainError
from handlers.texts import Texts

log = logging.getLogger(__name__)


async def _reply(event: ErrorEvent, text: str) -> None:
    update = event.update
    if update.message is not None:
        await update.message.answer(text)
    elif update.callback_query is not None:
        await update.callback_query.answer(text[:200], show_alert=True)


def _sender(event: ErrorEvent) -> User | None:
    update = event.update
    if update.message is not None:
        return update.message.from_user
    if update.callback_query is not None:
        return update.callback_query.from_user
    return None


async def domain_error(
    event: ErrorEvent, texts: Texts, lang: str = "en", staff_ids: frozenset[int] = frozenset()
) -> None:
    error = event.exception
    assert isinstance(error, DomainError)
    sender = _sender(event)
    # Staff read what the shop may know (e.g. a frozen member's note); members never do.
    staff = sender is not None and sender.id in staff_ids
    context = {**error.details, "reason": error.reason, "details": error.details, "staff": staff}
    await _reply(event, texts.render(lang, f"errors/{error.code}", **context))


async def unexpected(event: ErrorEvent, texts: Texts, lang: str = "en") -> None:
    log.exception("update %s failed", event.update.update_id, exc_info=event.exception)
    await _reply(event, texts.render(lang, "errors/error"))


def build_router() -> Router:
    router = Router(name=__name__)
    router.errors.register(domain_error, ExceptionTypeFilter(DomainError))
    router.errors.register(unexpected)
    return router
