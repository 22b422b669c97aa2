"""Found by running the scheduled jobs for real: the birthdays job from the CLI (exit 0, the
codes granted, no names in cron logs), no marketing offer for members who turned offers off,
and a congratulation when a behaviour event lifts the tier."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import date, datetime, time, timedelta
from pathlib import Path

import httpx
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from domain import members
from domain.clock import FixedClock
from domain.growth import PURCHASE, add_growth
from domain.models import Coupon, Member, Push
from domain.schedule import run_job
from domain.shop import Shop
from domain.transaction import write_transaction
from tests.conftest import Conversation
from tests.fake_telegram import message_update

RUN_DAY = date(2026, 3, 10)


async def _member(
    session: AsyncSession, shop: Shop, telegram_id: int, name: str, **values: object
) -> tuple[int, str]:
    profile = members.TelegramProfile(telegram_id, name, "Surname", None, "en")
    member = (await members.register(session, shop, profile)).member
    member_id, code = member.id, member.code
    async with write_transaction(session):
        await session.execute(update(Member).where(Member.id == member_id).values(**values))
    return member_id, code


async def _cli(database_url: str, cwd: Path, *args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    env["DATABASE_URL"] = database_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "jobs", *args, env=env, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    return process.returncode or 0, out.decode()


async def test_birthdays_from_the_cli_show_the_granted_codes_and_no_names(
    session: AsyncSession, shop: Shop, clean_database: str, tmp_path: Path
) -> None:
    _, silver = await _member(
        session, shop, 7001, "Zhenzhen", tier="silver", birthday_month=3, birthday_day=10
    )
    _, plain = await _member(
        session, shop, 7002, "Wenwen", birthday_month=3, birthday_day=10
    )
    day = RUN_DAY.isoformat()

    code, out = await _cli(
        clean_database, tmp_path, "run", "birthdays", "--dry-run", "--date", day
    )
    assert code == 0, out
    assert "would reach 2 member(s)" in out
    assert f"sample to member {silver}" in out and f"sample to member {plain}" in out
    assert "a buy-one-get-one coupon" in out and "XXXXX-XXXXX" in out  # the preview
    assert "Zhenzhen" not in out and "Wenwen" not in out and "Surname" not in out
    await session.rollback()
    assert (await session.scalars(select(Push.id))).all() == []  # a dry run writes nothing

    code, out = await _cli(clean_database, tmp_path, "run", "birthdays", "--date", day)
    assert code == 0, out
    assert "reached 2 member(s); 2 push(es) written" in out
    await session.rollback()
    granted = await session.scalar(
        select(Coupon.code).where(Coupon.source == "birthday_buy_one_get_one")
    )
    assert granted is not None
    assert f"{granted[:5]}-{granted[5:]}" in out  # the code the member was given
    assert "(new code)" not in out and "XXXXX" not in out
    assert "Zhenzhen" not in out and "Wenwen" not in out and "Surname" not in out
    assert "Happy birthday!" in out  # the greeting, without the name


async def test_no_wake_up_or_win_back_coupon_for_members_who_turned_offers_off(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clock: FixedClock,
) -> None:
    clock.set(datetime.combine(RUN_DAY, time(11), tzinfo=shop.tz))
    bought = lambda days: datetime.combine(  # noqa: E731
        RUN_DAY - timedelta(days=days), time(12), tzinfo=shop.tz
    )
    ids = {}
    spells = ((1, 60, True), (2, 60, False), (3, 90, True), (4, 90, False))
    for telegram_id, days, opted_in in spells:
        ids[telegram_id], _ = await _member(
            session, shop, telegram_id, f"M{telegram_id}", created_at=bought(200),
            last_purchase_at=bought(days), first_purchase_at=bought(days), stage="active",
            marketing_opt_in=opted_in,
        )

    dry = await run_job(session_factory, shop, "lifecycle", today=RUN_DAY, dry_run=True)
    assert dry.members == 2
    await run_job(session_factory, shop, "lifecycle", today=RUN_DAY)

    await session.rollback()
    pushes = set((await session.execute(select(Push.kind, Push.member_id))).all())
    assert pushes == {("dormant_wakeup", ids[1]), ("churned_winback", ids[3])}
    offers = set(
        (await session.execute(
            select(Coupon.source, Coupon.member_id).where(Coupon.source != "welcome")
        )).all()
    )
    assert offers == {("dormant_wakeup", ids[1]), ("churned_winback", ids[3])}
    stages = dict((await session.execute(select(Member.id, Member.stage))).all())
    assert stages[ids[2]] == "dormant" and stages[ids[4]] == "churned"  # stages still move


async def test_an_event_that_lifts_the_tier_congratulates_once(
    api: httpx.AsyncClient, chat: Conversation, session: AsyncSession, shop: Shop
) -> None:
    await chat.send(message_update(4242, "/start", first_name="Lin"))
    await chat.send(message_update(4343, "/start", first_name="梅", language_code="zh-hans"))
    await session.rollback()
    codes = dict((await session.execute(select(Member.telegram_id, Member.code))).all())
    ids = dict((await session.execute(select(Member.telegram_id, Member.id))).all())
    async with write_transaction(session):
        for telegram_id in (4242, 4343):  # 4 growth short of Silver (5000)
            await add_growth(
                session, ids[telegram_id], kind="order", source=PURCHASE, amount=4996,
                reason="test", key=f"test:{telegram_id}", occurred_at=shop.now(),
            )

    review = await api.post(
        f"/api/v1/members/{codes[4242]}/events", json={"event_id": "r-1", "kind": "review"}
    )
    assert review.status_code == 201 and review.json()["tier"] == "silver"
    replay = await api.post(
        f"/api/v1/members/{codes[4242]}/events", json={"event_id": "r-1", "kind": "review"}
    )
    assert replay.status_code in (200, 201)
    share = await api.post(
        f"/api/v1/members/{codes[4343]}/events", json={"event_id": "s-1", "kind": "share"}
    )
    assert share.json()["tier"] == "silver"
    after = await api.post(  # already Silver: nothing to congratulate
        f"/api/v1/members/{codes[4343]}/events", json={"event_id": "s-2", "kind": "share"}
    )
    assert after.json()["tier_changed"] is False

    await session.rollback()
    kinds = (await session.scalars(select(Push.kind).where(Push.kind == "tier_upgrade"))).all()
    assert len(kinds) == 2
    payload = json.loads(
        await session.scalar(select(Push.payload).where(Push.member_id == ids[4242])) or "{}"
    )
    assert payload["tier"] == "silver" and payload["previous_tier"] == "member"

    assert await chat.app.sender.deliver_pending() == 2
    sent = {c.params["chat_id"]: c.params["text"] for c in chat.fake.calls_of("sendMessage")}
    assert "Congratulations, you are now Silver!" in sent["4242"]
    assert "Your review earned you +5 growth and +30 points" in sent["4242"]
    assert "恭喜您升级为银卡会员" in sent["4343"] and "您的分享" in sent["4343"]
    assert "Silver" not in sent["4343"] and "share" not in sent["4343"]


async def test_a_job_tells_its_progress_to_a_command_line(
    session: AsyncSession, session_factory: async_sessionmaker[AsyncSession], shop: Shop,
    clean_database: str, tmp_path: Path,
) -> None:
    """`jobs run` shows a bar on a terminal: the job tells the rows it found due and those it
    has handled (here the birthdays of two members), and a terminal gets the bar on stderr."""
    from domain.jobs import job_progress

    for telegram_id, name in ((7001, "Zhenzhen"), (7002, "Wenwen")):
        await _member(session, shop, telegram_id, name, birthday_month=3, birthday_day=10)
    told: list[tuple[int, int]] = []
    token = job_progress.set(lambda done, known: told.append((done, known)))
    try:
        report = await run_job(session_factory, shop, "birthdays", today=RUN_DAY, dry_run=True)
    finally:
        job_progress.reset(token)
    assert report.members == 2
    assert sum(known for _, known in told) == 2 and sum(done for done, _ in told) == 2

    import pty

    env = {k: v for k, v in os.environ.items() if k != "BOT_TOKEN"}
    env["DATABASE_URL"] = clean_database
    import fcntl
    import struct
    import termios

    main, terminal = pty.openpty()
    # A terminal 100 columns wide (a fresh pseudo-terminal has none, and no bar fits in it).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "jobs", "run", "birthdays", "--dry-run",
        "--date", RUN_DAY.isoformat(), env=env, cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE, stderr=terminal,
    )
    os.close(terminal)
    out, _ = await asyncio.wait_for(process.communicate(), 180)
    shown = b""
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # the terminal's other end is closed: all of it is read
            break
        if not chunk:
            break
        shown += chunk
    os.close(main)
    assert process.returncode == 0, out
    assert b"birthdays" in shown and b"2/2" in shown and b"rows" in shown
    assert b"rows" not in out  # stdout (cron's log) keeps the summary only
    assert "would reach 2 member(s)" in out.decode()
