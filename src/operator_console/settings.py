"""Settings from the environment (OPERATOR_CONSOLE_*) with the user's data directory as home."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from operator_console.domain.windows import Windows

APP_NAME = "operator-console"


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


class Settings(BaseSettings):
    """Where the console keeps its database and run directories, and how often it looks."""

    model_config = SettingsConfigDict(env_prefix="OPERATOR_CONSOLE_", extra="ignore")

    data_dir: Path = Field(default_factory=default_data_dir)
    db: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset")
    interval: float = Field(default=1.0, gt=0, description="monitor tick, seconds")
    resolve_after: int = Field(default=3, ge=1, description="clean ticks before auto-resolve")
    escalate_after_s: float = Field(default=300.0, gt=0, description="unattended ticket age")
    mode: Literal["observe", "approve", "auto"] = "approve"
    brain: Literal["auto", "claude", "rules"] = "auto"

    # Claude; the key is a secret: never logged, stored or shown.
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY", "anthropic_api_key")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL", "anthropic_base_url")
    )
    model: str = "claude-sonnet-5"
    agent_max_turns: int = Field(default=8, ge=1, le=50)
    agent_max_total_tokens: int = Field(default=60_000, ge=1000)
    agent_max_output_tokens: int = Field(default=1024, ge=64)
    agent_max_wall_s: float = Field(default=120.0, gt=0)

    # With Claude configured, a small model writes one-line summaries of the agent's audit
    # rows in batches, within this many tokens per run.
    audit_summaries: bool = True
    summary_model: str = "claude-haiku-4-5"
    summary_token_budget: int = Field(default=20_000, ge=0)

    # Blast radius: what the agent may do without a person, per target.
    auto_actions_per_target: int = Field(default=2, ge=0, le=100)
    auto_action_window_s: float = Field(default=600.0, gt=0)
    after_action_window_s: float = Field(default=60.0, ge=0)
    # How long a run waits for a person to decide a proposal before it ends and says so.
    approval_wait_s: float = Field(default=120.0, gt=0, le=86_400)

    # When high-risk actions may run, e.g. "Sat 02:00-04:00 UTC; Wed 22:00-23:00 UTC"; empty:
    # any time. Approved outside one, a high-risk action waits for the next (unless --now).
    maintenance_windows: str = ""

    @field_validator("maintenance_windows")
    @classmethod
    def _windows_read(cls, value: str) -> str:
        Windows.parse(value)  # a WindowError (a ValueError) names the form that works
        return value

    # The agent's shell tool: off unless enabled. Each call is a high-risk action.
    shell_enabled: bool = False
    shell_timeout_s: float = Field(default=20.0, gt=0, le=600)
    shell_output_cap: int = Field(default=8000, ge=256, le=1_000_000)
    # auto: with a Docker engine at hand each command runs in a throwaway container (no
    # socket, read-only root, no capabilities, the stack's network only); off: on this host.
    shell_sandbox: Literal["auto", "off"] = "auto"

    @property
    def windows(self) -> Windows:
        return Windows.parse(self.maintenance_windows)

    @property
    def db_url(self) -> str:
        if self.db:
            return self.db
        return f"sqlite:///{self.data_dir / 'operator-console.db'}"

    @property
    def runs_dir(self) -> Path:
        return self.data_dir / "runs"

    @property
    def lab_state_file(self) -> Path:
        return self.data_dir / "lab.json"
