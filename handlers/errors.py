"""Domain errors become replies here, in one place."""

from __future__ import annotations

import logging

from aiogram import Router
from aiogram.filters import ExceptionTypeFilter
from aiogram.types import ErrorEvent

from handlers.texts import Texts
from domain.errors import DomainError

log = logging.getLogger(__name__)


async def _reply(event: ErrorEvent, text: str) -> None:
    update = event.update
    if update.message is not None:
        await update.message.answer(text)
    elif update.callback_query is not None:
        await update.callback_query.answer(text[:200], show_alert=True)


async def domain_error(event: ErrorEvent, texts: Texts, lang: str = "en") -> None:
    error = event.exception
    assert isinstance(error, DomainError)
    context = {"message": str(error), **error.details}
    await _reply(event, texts.render(lang, f"errors/{error.code}", **context))


async def unexpected(event: ErrorEvent, texts: Texts, lang: str = "en") -> None:
    log.exception("update %s failed", event.update.update_id, exc_info=event.exception)
    await _reply(event, texts.render(lang, "errors/error"))


def build_router() -> Router:
    router = Router(name=__name__)
    router.errors.register(domain_error, ExceptionTypeFilter(DomainError))
    router.errors.register(unexpected)
    return router
