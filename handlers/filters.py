"""Filters shared by the routers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiogram import Router
from aiogram.dispatcher.event.handler import FilterObject
from aiogram.filters import Command, Filter, StateFilter
from aiogram.fsm.state import State
from aiogram.types import Message, TelegramObject
from magic_filter import MagicFilter

from handlers.texts import Texts


class MenuButton(Filter):
    """A press of a main-menu button, in whichever language the member sees it."""

    def __init__(self, key: str) -> None:
        self.key = key

    async def __call__(self, message: Message, texts: Texts) -> bool:
        return message.text is not None and message.text in texts.labels_everywhere(self.key)


class Matches(Filter):
    """A magic filter (``F.chat.type == ...``) checked on the event loop. aiogram runs a bare
    magic filter, like any plain function, in a worker thread: a thread hop per check, on
    every message that reaches the router."""

    def __init__(self, rule: MagicFilter) -> None:
        self.rule = rule

    async def __call__(self, event: TelegramObject) -> Any:
        return self.rule.resolve(event)


class EntryGate(Filter):
    """A router's message filter that lets through only what one of its handlers could take:
    one of its commands, or a message in one of its conversation states. Added by
    ``gate_routers``; a message it turns away would have been refused by every handler of
    the router anyway, at the cost of checking each one's filters (a /card passed ~30 of them
    on its way to the card router)."""

    def __init__(self, commands: frozenset[str], states: frozenset[str]) -> None:
        self.commands = commands
        self.states = states

    async def __call__(self, message: Message, raw_state: str | None = None) -> bool:
        if raw_state is not None and raw_state in self.states:
            return True
        words = (message.text or message.caption or "").split(maxsplit=1)
        if not words or not words[0].startswith("/"):
            return False
        # As aiogram reads it ("/Sale@shop_bot 12" → "sale"); case and mention are left to
        # the handlers' own filters.
        command = words[0][1:].partition("@")[0]
        return command.casefold() in self.commands


def _entry(filters: Sequence[FilterObject]) -> tuple[set[str], set[str]] | None:
    """The commands or states without which a handler with these filters cannot match; None
    when it can match something else too."""
    for found in filters:
        rule = found.callback
        if isinstance(rule, Command) and rule.prefix == "/" and all(
            isinstance(c, str) for c in rule.commands
        ):
            return {str(c).casefold() for c in rule.commands}, set()
        if isinstance(rule, StateFilter) and all(
            isinstance(s, State) and s.state not in (None, "*") for s in rule.states
        ):
            return set(), {str(s.state) for s in rule.states}  # type: ignore[union-attr]
    return None


def gate_routers(root: Router) -> None:
    """Give every router under ``root`` whose message handlers all start from a command or a
    conversation state an ``EntryGate``: other messages pass it with one check."""
    for router in root.sub_routers:
        observer = router.message
        if router.sub_routers or not observer.handlers:
            continue
        commands: set[str] = set()
        states: set[str] = set()
        for handler in observer.handlers:
            entry = _entry(handler.filters or ())
            if entry is None:
                break
            commands |= entry[0]
            states |= entry[1]
        else:
            observer.filter(EntryGate(frozenset(commands), frozenset(states)))
