"""`python -m bot`: migrate, then run the bot, the scheduler and the HTTP API in one process."""

from __future__ import annotations

import argparse
import asyncio
import sys

from bot.settings import SettingsError, load_settings
from domain.program import ProgramError, load_program

EXIT_BAD_SETTINGS = 2
EXIT_DATABASE_IN_USE = 3


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bot",
        description=(
            "Member Companion: a loyalty program in a Telegram chat. Without a command: apply "
            "pending database migrations, then run the bot (webhook with WEBHOOK_URL, else long "
            "polling), the scheduler and the HTTP API until SIGINT/SIGTERM. Settings come from "
            "the environment or .env."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("run", help="migrate, then run everything (the default)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    jobs = commands.add_parser("jobs", help="list the scheduled jobs, or run one now")
    job_commands = jobs.add_subparsers(dest="jobs_command", metavar="JOBS_COMMAND", required=True)
    job_commands.add_parser("list", help="the jobs, when they run, when they last ran")
    run_one = job_commands.add_parser("run", help="run one job now")
    run_one.add_argument("name", help="a job name from `jobs list`")
    run_one.add_argument(
        "--dry-run", action="store_true",
        help="print how many members it would reach and sample messages; change nothing",
    )
    run_one.add_argument("--date", help="the local date to run it for (YYYY-MM-DD); default today")
    from bot.webhook import add_arguments as webhook_arguments

    webhook_arguments(commands.add_parser(
        "webhook", help="the webhook Telegram posts updates to: info, or delete it"
    ))
    from bot.report_cli import add_arguments  # tqdm only; matplotlib is not imported

    add_arguments(commands.add_parser(
        "report", help="the shop's figures for a month or period (text, JSON or CSV)"
    ))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from bot.db import migrate  # imported late: --help stays instant
    from bot.logs import configure_logging
    from handlers.texts import TemplatesMissing, load_texts

    try:
        settings = load_settings()
        configure_logging(
            secret.get_secret_value()
            for secret in (settings.bot_token, settings.pos_api_token)
            if secret is not None
        )
        if args.command == "migrate":
            migrate(settings.database_url)
            print("database is up to date")
            return 0
        program = load_program(settings.program_file)
        load_texts(currency=program.currency)  # refuse to start when the bot cannot answer
        if args.command == "jobs":
            from bot.jobs_cli import jobs_command

            migrate(settings.database_url)
            return asyncio.run(jobs_command(settings, program, args))
        if args.command == "report":
            from bot.report_cli import report_command

            migrate(settings.database_url)
            return asyncio.run(report_command(settings, program, args))
        settings.require_bot_token()
        if args.command == "webhook":
            from bot.webhook import webhook_command

            return asyncio.run(webhook_command(settings, args))
    except (SettingsError, ProgramError, TemplatesMissing) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS

    from bot.app import create_app, run
    from bot.coordination import DatabaseInUse, lock_sqlite_file, migrate_alone

    try:
        # Held until the process ends: a second bot on the same SQLite file stops here.
        lock = lock_sqlite_file(settings.database_url)
    except DatabaseInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DATABASE_IN_USE
    asyncio.run(migrate_alone(settings.database_url))

    async def _main() -> None:
        app = create_app(settings, program=program)
        await run(app)

    try:
        asyncio.run(_main())
    except SettingsError as exc:  # e.g. a token Telegram refuses
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    finally:
        if lock is not None:
            lock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
