"""The one context every command shares: settings from the environment and flags, the engine."""

from __future__ import annotations

import faulthandler
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import IO, Any, TypeVar

import click
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from operator_console.db import DatabaseError, create_db_engine, init_db
from operator_console.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])

DB_HELP = (
    "SQLAlchemy database URL (default: SQLite in the user data folder; env OPERATOR_CONSOLE_DB)."
)


@dataclass
class CliContext:
    """Settings and the database engine, built once per command, on first use."""

    overrides: dict[str, Any] = field(default_factory=dict)
    _settings: Settings | None = None
    _engine: Engine | None = None

    def set(self, key: str, value: Any) -> None:
        if value is not None:
            self.overrides[key] = value
            self._settings = None

    @property
    def settings(self) -> Settings:
        """The settings; a bad value in the environment is one line naming the variable."""
        if self._settings is None:
            try:
                self._settings = Settings(**self.overrides)
            except ValidationError as exc:
                raise click.ClickException(settings_error(exc)) from None
        return self._settings

    @property
    def engine(self) -> Engine:
        """The database, made or upgraded to this code's schema; a bad URL is one clear line."""
        return self._open(must_exist=False)

    @property
    def existing_engine(self) -> Engine:
        """The database for a command that only reads: one that does not exist yet is an
        error, not a new empty database."""
        return self._open(must_exist=True)

    def _open(self, *, must_exist: bool) -> Engine:
        if self._engine is None:
            engine: Engine | None = None
            try:
                engine = create_db_engine(self.settings.db_url, must_exist=must_exist)
                init_db(engine, must_exist=must_exist)
            except DatabaseError as exc:
                if engine is not None:
                    engine.dispose()
                raise click.ClickException(str(exc)) from None
            self._engine = engine
        return self._engine

    def setup_logging(self) -> Path:
        return setup_logging(self.settings)


def settings_error(exc: ValidationError) -> str:
    """The first bad setting, named as the user set it (its environment variable)."""
    error = exc.errors()[0]
    name = str(error["loc"][0]) if error["loc"] else "settings"
    variable = name.upper() if name.startswith("ANTHROPIC") else f"OPERATOR_CONSOLE_{name.upper()}"
    given = error.get("input")
    shown = "" if name.startswith("anthropic_api") else f" (got {given!r})"
    return f"{variable}: {error['msg']}{shown}; fix or unset it"


class FilePath(click.Path):
    """A file (or, with `directory`, a folder) path option; a path no file system can hold (a
    NUL byte) is a usage error, not a traceback from the stat click makes."""

    def __init__(self, *, directory: bool = False) -> None:
        super().__init__(path_type=Path, dir_okay=directory, file_okay=not directory)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and "\x00" in value:
            self.fail(f"{value!r} is not a path (it holds a NUL byte)", param, ctx)
        return super().convert(value, param, ctx)


def cli_context() -> CliContext:
    """The context of the command being run."""
    return click.get_current_context().ensure_object(CliContext)


def _set_db(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    ctx.ensure_object(CliContext).set("db", value)


def db_option(func: F) -> F:
    """`--db URL` on any command; it goes into the shared context."""
    return click.option(
        "--db",
        metavar="URL",
        help=DB_HELP,
        expose_value=False,
        callback=_set_db,
        is_eager=True,
    )(func)


class _RedactingFilter(logging.Filter):
    """Last line of defence: no secret reaches the log file, whoever logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from operator_console.audit.redact import redact_text

        message = record.getMessage()
        cleaned = redact_text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_stack_dump_file: IO[str] | None = None


def setup_logging(settings: Settings) -> Path:
    """Log to a file: the terminal belongs to the timeline and the console."""
    global _stack_dump_file
    log_dir = settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "operator-console.log"
    handler = RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(_RedactingFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for noisy in ("httpx", "httpcore", "anthropic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # `kill -USR1 PID` writes every thread's stack to this file: how to see where it is stuck.
    if _stack_dump_file is None:
        _stack_dump_file = open(log_dir / "stacks.log", "a")  # kept open for the process
        faulthandler.register(signal.SIGUSR1, file=_stack_dump_file, all_threads=True)
    return path
