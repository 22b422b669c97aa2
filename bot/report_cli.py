"""`python -m bot report [--month 2026-11 | --from D --to D] [--format text|json|csv]`: the
shop's figures on the command line, for cron and scripts (the same numbers as /stats and the
reports API). A progress bar shows on a terminal (stderr) and stays quiet under cron."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import sys
from datetime import date
from decimal import Decimal
from typing import Any

from tqdm import tqdm

from bot.db import create_engine, create_session_factory
from bot.settings import Settings
from domain.analytics import REPORT_STEPS, Period, build_report
from domain.clock import SystemClock
from domain.program import Program
from domain.shop import Shop

EXIT_USAGE = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--month", help="a calendar month (YYYY-MM); default this month")
    parser.add_argument("--from", dest="first", help="first local day (YYYY-MM-DD)")
    parser.add_argument("--to", dest="last", help="last local day, included (YYYY-MM-DD)")
    parser.add_argument("--format", choices=("text", "json", "csv"), default="text")


def period_from(args: argparse.Namespace, today: date) -> Period:
    """The period the arguments name; ValueError with a message for the user."""
    if args.month and (args.first or args.last):
        raise ValueError("give --month or --from/--to, not both")
    if args.month:
        try:
            year, month = (int(p) for p in args.month.split("-"))
            return Period.month(year, month)
        except ValueError:
            raise ValueError(f"--month {args.month!r} is not a month like 2026-11") from None
    if args.first or args.last:
        try:
            first = date.fromisoformat(args.first) if args.first else None
            last = date.fromisoformat(args.last) if args.last else None
        except ValueError:
            raise ValueError("--from and --to are dates like 2026-11-01") from None
        first = first or (last or today).replace(day=1)
        last = last or Period.month_of(first).last
        if last < first:
            raise ValueError("--to is before --from")
        return Period(first, last)
    return Period.month_of(today)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal | date):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    return value


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted name, value) pairs of a report: tiers, benefits and pushes keyed by their key."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        pairs = []
        for key, item in value.items():
            pairs += flatten(item, f"{prefix}.{key}" if prefix else str(key))
        return pairs
    if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
        pairs = []
        for item in value:
            name = getattr(item, "key", None) or getattr(item, "source", None) or getattr(
                item, "kind", ""
            )
            pairs += flatten(item, f"{prefix}.{name}")
        return pairs
    if isinstance(value, list):
        return [(prefix, json.dumps([_plain(v) for v in value]))]
    return [(prefix, "" if value is None else _plain(value))]


async def report_command(settings: Settings, program: Program, args: argparse.Namespace) -> int:
    shop = Shop(program=program, clock=SystemClock(), tz=settings.tz,
                phone_region=settings.phone_region)
    try:
        period = period_from(args, shop.today())
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    engine = create_engine(settings.database_url)
    session_factory = create_session_factory(engine)
    bar = tqdm(total=REPORT_STEPS, desc="report", file=sys.stderr, leave=False,
               disable=not sys.stderr.isatty())
    try:
        async with session_factory() as session:
            report = await build_report(session, shop, period, progress=lambda: bar.update())
            await session.commit()
    finally:
        bar.close()
        await engine.dispose()
    pairs = flatten(report)
    if args.format == "json":
        print(json.dumps(dataclasses.asdict(report), default=_json, ensure_ascii=False, indent=2))
    elif args.format == "csv":
        writer = csv.writer(sys.stdout)
        writer.writerow(("figure", "value"))
        writer.writerows(pairs)
    else:
        width = max(len(name) for name, _ in pairs)
        for name, value in pairs:
            print(f"{name:<{width}}  {value}")
    return 0


def _json(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value).__name__)
