"""Builds a SQLite database of many members with realistic histories, fast, for bench/jobs.py.

The schema comes from the project's migrations; rows are written with sqlite3 executemany
(the ORM would take far longer for millions of rows). Histories hold together like the real
thing: every member's points balance equals the sum of their ledger and of their lots' remains;
tiers follow the 1:10 ladder (1000:100:10:1); purchases, birthdays, expiry dates and coupons
spread over the last three years so that every daily job finds members on its day. Each
purchase lot comes with its order (amount, offset, paid, points earned) dated like it, so
orders and the ledger spread over the last 13 months (bench/analytics.py reports on them).
"""

from __future__ import annotations

import argparse
import random
import sqlite3
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bot.db import migrate
from domain.member_code import check_character

TIERS = [("member", 0), ("silver", 5000), ("gold", 20000), ("black_gold", 50000)]
TIER_WEIGHTS = [1000, 100, 10, 1]
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _code(n: int) -> str:
    data = ""
    for _ in range(7):
        data = ALPHABET[n % 32] + data
        n //= 32
    return data + check_character(data)


def _end_of_month_after(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 + months
    year, month = divmod(index, 12)
    first_next = date(year + (month + 1) // 12, (month + 1) % 12 + 1, 1)
    return first_next - timedelta(days=1)


def generate(path: Path, members: int, today: date, seed: int = 7) -> dict[str, int]:
    if path.exists():
        path.unlink()
    migrate(f"sqlite+aiosqlite:///{path}")
    rng = random.Random(seed)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=OFF")
    now = datetime.combine(today, datetime.min.time(), tzinfo=UTC).replace(tzinfo=None)
    counts = {"members": 0, "ledger": 0, "lots": 0, "growth": 0, "coupons": 0, "orders": 0}
    batch = 20_000
    member_rows, ledger_rows, lot_rows, growth_rows, coupon_rows = [], [], [], [], []
    order_rows: list[tuple[object, ...]] = []
    entry_id = lot_id = coupon_id = order_id = 0

    def flush() -> None:
        db.executemany(
            "INSERT INTO members (id, telegram_id, code, first_name, language, tier, "
            "points_balance, points_debt, status, marketing_opt_in, birthday_month, birthday_day, "
            "birthday_gift_from, reachable, stage, stage_since, created_at, first_purchase_at, "
            "last_purchase_at) VALUES (?,?,?,?,?,?,?,0,'active',?,?,?,NULL,1,?,?,?,?,?)",
            member_rows,
        )
        db.executemany(
            "INSERT INTO ledger_entries (id, member_id, kind, amount, balance_after, reason, "
            "source_ref, idempotency_key, created_at) VALUES (?,?,?,?,?,?,?,?,?)",
            ledger_rows,
        )
        db.executemany(
            "INSERT INTO points_lots (id, member_id, entry_id, earned_on, expires_on, amount, "
            "remaining) VALUES (?,?,?,?,?,?,?)",
            lot_rows,
        )
        db.executemany(
            "INSERT INTO growth_entries (member_id, kind, source, amount, reason, "
            "idempotency_key, occurred_at) VALUES (?,?,?,?,?,?,?)",
            growth_rows,
        )
        db.executemany(
            "INSERT INTO coupons (id, code, member_id, source, kind, value, min_spend, valid_from, "
            "valid_until, status, created_at) VALUES (?,?,?,?,?,?,?,?,?,'active',?)",
            coupon_rows,
        )
        db.executemany(
            "INSERT INTO orders (id, order_id, request_hash, member_id, amount, coupon_discount, "
            "points_redeemed, offset, paid, points_earned, growth_earned, earn_entry_id, "
            "refunded, points_taken_back, points_returned, growth_taken_back, cash_returned, "
            "occurred_at, created_at, response) "
            "VALUES (?,?,'',?,?,0,?,?,?,?,?,?,0,0,0,0,0,?,?,'')",
            order_rows,
        )
        for name, rows in (("members", member_rows), ("ledger", ledger_rows), ("lots", lot_rows),
                           ("growth", growth_rows), ("coupons", coupon_rows),
                           ("orders", order_rows)):
            counts[name] += len(rows)
            rows.clear()
        db.commit()

    for member_id in range(1, members + 1):
        tier, threshold = rng.choices(TIERS, TIER_WEIGHTS)[0]
        joined = now - timedelta(days=rng.randint(1, 1100), seconds=rng.randint(0, 86399))
        bought = rng.random() < 0.8
        last = None
        if bought:
            last = min(now - timedelta(seconds=rng.randint(0, 86399)),
                       joined + timedelta(days=rng.randint(0, max(1, (now - joined).days))))
        balance = 0
        # Lots: a few purchases within the last 13 months (some already past their expiry).
        for _ in range(rng.randint(1, 4) if bought else 0):
            entry_id += 1
            lot_id += 1
            earned = today - timedelta(days=rng.randint(0, 400))
            amount = rng.randint(10, 800)
            expires = _end_of_month_after(earned, 12)
            remaining = amount if rng.random() < 0.7 else rng.randint(0, amount)
            # what was spent of the lot is an offset entry; keep the ledger whole
            balance += amount
            ledger_rows.append((entry_id, member_id, "purchase", amount, balance, "order", None,
                                f"gen:{entry_id}", f"{earned} 12:00:00"))
            # The order the points came from (1 point per 1.00 paid), with the offset of what
            # was spent of the lot, dated like it.
            order_id += 1
            offset = amount - remaining
            order_rows.append((
                order_id, f"G{order_id}", member_id, amount * 100 + offset, offset,
                offset, amount * 100, amount, amount, entry_id, f"{earned} 12:00:00",
                f"{earned} 12:00:00",
            ))
            lot_rows.append((lot_id, member_id, entry_id, earned.isoformat(), expires.isoformat(),
                             amount, remaining))
            if remaining < amount:
                entry_id += 1
                balance -= amount - remaining
                ledger_rows.append((entry_id, member_id, "offset", remaining - amount, balance,
                                    "order", None, f"gen:{entry_id}", f"{earned} 12:00:00"))
            growth_rows.append((member_id, "purchase", "purchase", max(threshold // 2, amount),
                                "order", f"gen-g:{entry_id}", f"{earned} 12:00:00"))
        if rng.random() < 0.3:
            coupon_id += 1
            until = now + timedelta(days=rng.randint(-5, 40))
            coupon_rows.append((coupon_id, f"G{coupon_id:09d}", member_id, "welcome", "amount_off",
                                1000, 5000, str(until - timedelta(days=30)), str(until), str(joined)))
        # The stage as yesterday's lifecycle run left it, so today's run moves only today's.
        reference = (last or joined).date()
        idle = (today - timedelta(days=1) - reference).days
        if idle >= 90:
            stage, since = "churned", reference + timedelta(days=90)
        elif idle >= 60:
            stage, since = "dormant", reference + timedelta(days=60)
        else:
            stage, since = ("active" if last else "new"), reference
        has_birthday = rng.random() < 0.6
        member_rows.append((
            member_id, 10_000_000 + member_id, _code(member_id), f"M{member_id}",
            "zh" if rng.random() < 0.7 else "en", tier, balance, rng.random() < 0.85,
            rng.randint(1, 12) if has_birthday else None, rng.randint(1, 28) if has_birthday else None,
            stage, since.isoformat(), str(joined),
            str(last) if last else None, str(last) if last else None,
        ))
        if len(member_rows) >= batch:
            flush()
    flush()
    db.execute("ANALYZE")
    db.commit()
    db.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument("--today", default="2026-03-10")
    args = parser.parse_args()
    started = time.perf_counter()
    counts = generate(args.path, args.members, date.fromisoformat(args.today))
    print(f"generated {counts} in {time.perf_counter() - started:.1f}s")


if __name__ == "__main__":
    main()
