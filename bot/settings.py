"""Settings from the environment or a .env file. A bad setting stops start-up with one line."""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_PROGRAM_FILE = PACKAGE_DIR / "default_program.toml"

MEMBER_HASH_LABEL = b"member-companion/member-hash-secret/v1"
WEBHOOK_SECRET_LABEL = b"member-companion/webhook-secret/v1"
DEFAULT_WEBHOOK_PATH = "/telegram/webhook"

IdList = Annotated[frozenset[int], NoDecode]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=True
    )

    bot_token: SecretStr | None = None
    telegram_api_url: str | None = None
    database_url: str = "sqlite+aiosqlite:///data/companion.db"
    # PostgreSQL: the most connections this worker opens (40% kept, the rest for bursts);
    # N workers need N * (DATABASE_POOL + 3) under the server's max_connections.
    database_pool: int = Field(default=50, ge=2, le=1000)
    timezone: str = "Asia/Shanghai"
    admin_ids: IdList = frozenset()
    staff_ids: IdList = frozenset()
    pos_api_token: SecretStr | None = None
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    program_file: Path = DEFAULT_PROGRAM_FILE
    phone_region: str = Field(default="CN", pattern=r"^[A-Z]{2}$")
    # Pay Telegram in Stars (0.1 per message) to send pushes at up to 1,000 a second.
    paid_broadcast: bool = False
    # Key of the one-way hash kept of a Telegram id when a member erases their data, so the
    # sign-up gifts are given once per account. Changing it forgets who has been here before.
    member_hash_secret: SecretStr | None = None
    # The Mini App (member center, admin dashboard): the public HTTPS address reaching /app;
    # unset, the Mini App is off and the chat works without it.
    webapp_url: str | None = None
    # Telegram's init data older than this (seconds) is refused.
    webapp_init_max_age: int = Field(default=24 * 3600, ge=60)
    # The card's QR in the member center carries a code valid one minute, not the member code.
    webapp_rotating_code: bool = False

    # The public HTTPS address Telegram posts updates to (webhook mode); unset: long polling.
    webhook_url: str | None = None
    # What Telegram sends in X-Telegram-Bot-Api-Secret-Token; unset: derived from BOT_TOKEN.
    webhook_secret: SecretStr | None = None

    @field_validator(
        "bot_token", "telegram_api_url", "pos_api_token", "webapp_url", "webhook_url",
        "webhook_secret", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        # `.env.example` lists optional settings with nothing after `=`: that means "not set".
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("program_file", mode="before")
    @classmethod
    def _blank_is_default(cls, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return DEFAULT_PROGRAM_FILE
        return value

    @field_validator("bot_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        token = value.get_secret_value()
        head, _, tail = token.partition(":")
        if not head.isdigit() or len(tail) < 10:
            raise ValueError("does not look like a bot token (digits:letters)")
        return value

    @field_validator("admin_ids", "staff_ids", mode="before")
    @classmethod
    def _ids(cls, value: object) -> frozenset[int]:
        if isinstance(value, frozenset | set | list | tuple):
            return frozenset(int(v) for v in value)
        text = str(value or "").strip()
        ids = set()
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if not part.lstrip("-").isdigit():
                raise ValueError(f"{part!r} is not a Telegram user id")
            ids.add(int(part))
        return frozenset(ids)

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r} (try Asia/Shanghai)") from exc
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        try:
            url = make_url(value)
        except ArgumentError as exc:
            raise ValueError("not a database URL") from exc
        if url.drivername not in ("sqlite+aiosqlite", "postgresql+asyncpg"):
            raise ValueError(
                "use sqlite+aiosqlite:///path.db or postgresql+asyncpg://user:pass@host/db"
            )
        return value

    @field_validator("telegram_api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else None

    @field_validator("webapp_url")
    @classmethod
    def _webapp_url(cls, value: str | None) -> str | None:
        # Telegram opens Mini Apps over HTTPS only.
        if value is not None and not value.startswith("https://"):
            raise ValueError("must start with https:// (Telegram opens Mini Apps only over HTTPS)")
        return value.rstrip("/") if value else None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.startswith("https://"):
            raise ValueError("must start with https:// (Telegram posts only to HTTPS)")
        path = urlsplit(value).path
        if path.startswith("/api/"):
            raise ValueError("its path must not be under /api/ (the till API's)")
        if path == "/app" or path.startswith("/app/"):
            raise ValueError("its path must not be under /app (the Mini App's)")
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr | None) -> SecretStr | None:
        secret = value.get_secret_value() if value is not None else None
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", secret):
            raise ValueError("use 1-256 characters of A-Z, a-z, 0-9, _ and -")
        return value

    @field_validator("member_hash_secret", mode="before")
    @classmethod
    def _empty_secret(cls, value: object) -> object:
        return None if value is None or str(value).strip() == "" else value

    def require_bot_token(self) -> str:
        """The token, or the one-line explanation of how to get one."""
        if self.bot_token is None:
            raise SettingsError(
                "BOT_TOKEN is not set: create a bot with @BotFather in Telegram "
                "(https://t.me/BotFather), then put its token in the environment or in .env"
            )
        return self.bot_token.get_secret_value()

    def member_hash_key(self) -> bytes:
        """MEMBER_HASH_SECRET, or when unset a key derived from BOT_TOKEN (HMAC-SHA256 with a
        fixed label): stable as long as the token is, never the token itself."""
        if self.member_hash_secret is not None:
            return self.member_hash_secret.get_secret_value().encode()
        token = self.require_bot_token().encode()
        return hmac.new(token, MEMBER_HASH_LABEL, hashlib.sha256).digest()

    def webhook_secret_value(self) -> str:
        """WEBHOOK_SECRET, or when unset one derived from BOT_TOKEN (HMAC-SHA256 with a fixed
        label, hex): every worker with the same token agrees on it without another secret."""
        if self.webhook_secret is not None:
            return self.webhook_secret.get_secret_value()
        token = self.require_bot_token().encode()
        return hmac.new(token, WEBHOOK_SECRET_LABEL, hashlib.sha256).hexdigest()

    @property
    def webhook_path(self) -> str:
        """The path of WEBHOOK_URL, served by the HTTP server (``/telegram/webhook`` if none)."""
        path = urlsplit(self.webhook_url).path if self.webhook_url else ""
        return path if path not in ("", "/") else DEFAULT_WEBHOOK_PATH

    def pool_options(self) -> dict[str, int]:
        """Pool size and overflow for a server database (SQLite keeps its own pool)."""
        if make_url(self.database_url).get_backend_name() == "sqlite":
            return {}
        kept = max(1, round(self.database_pool * 0.4))
        return {"pool_size": kept, "max_overflow": self.database_pool - kept}

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @property
    def staff(self) -> frozenset[int]:
        """Admins are staff too."""
        return self.staff_ids | self.admin_ids


class SettingsError(Exception):
    """One line naming the setting and what is wrong with it."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = str(error["loc"][0]).upper() if error["loc"] else "settings"
        if error["type"] == "missing":
            raise SettingsError(f"{name} is not set") from exc
        message = error["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{name} is invalid: {message}") from exc
