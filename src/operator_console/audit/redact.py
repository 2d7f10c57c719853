"""Secret redaction: nothing that looks like a credential reaches the audit log or the screen."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

# Shorter values would redact ordinary words wherever they appear.
MIN_SECRET_LENGTH = 8

# Environment variables whose values are credentials the console itself may hold.
SECRET_ENV_VARS = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "OPERATOR_CONSOLE_ANTHROPIC_API_KEY",
    "OPENAI_API_KEY",
)

# Dict keys are compared without case or separators; a key is secret when it ends with one of these
# (so `ANTHROPIC_API_KEY` and `github_token` are, while `max_tokens` and `token_rate` are not).
_SECRET_KEY_SUFFIXES = (
    "apikey",
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "privatekey",
    "cookie",
)
_KEY_SEPARATORS = re.compile(r"[^a-z0-9]")

_VALUE = r"[^\s\"',;&]+"
_STRING_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Anthropic keys first so the generic rule cannot leave a recognisable prefix behind.
    (re.compile(r"\bsk-ant-[A-Za-z0-9_\-]{8,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{20,}"), REDACTED),
    # scheme://user:PASSWORD@host keeps the user and the host.
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s/@]+(@)"), rf"\1{REDACTED}\2"),
    (
        re.compile(
            r"(?i)(\b(?:proxy-)?authorization[\"']?\s*[:=]\s*[\"']?)"
            r"(?:(?:bearer|basic|token|digest)\s+)?" + _VALUE
        ),
        rf"\1{REDACTED}",
    ),
    # A bearer token is long or has a digit or punctuation: "the bearer of bad news" stays.
    (
        re.compile(
            r"(?i)\b(bearer\s+)(?=[A-Za-z]*[0-9\-._~+/]|[A-Za-z]{20})[A-Za-z0-9\-._~+/]{8,}=*"
        ),
        rf"\1{REDACTED}",
    ),
    (
        re.compile(
            r"(?i)(\b(?:x-api-key|api[-_]?key|access[-_]?token|refresh[-_]?token|auth[-_]?token"
            r"|client[-_]?secret|password|passwd)[\"']?\s*[:=]\s*[\"']?)" + _VALUE
        ),
        rf"\1{REDACTED}",
    ),
)

_lock = threading.Lock()
_registered: set[str] = set()
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str | None) -> None:
    """Redact this exact value wherever it appears from now on; empty or short ones are ignored."""
    global _registered_pattern
    if not value:
        return
    value = value.strip()
    if len(value) < MIN_SECRET_LENGTH:
        return
    with _lock:
        if value in _registered:
            return
        _registered.add(value)
        # Longest first, so a secret that contains another is removed whole.
        alternation = "|".join(re.escape(v) for v in sorted(_registered, key=len, reverse=True))
        _registered_pattern = re.compile(alternation)


def register_secrets_from_env(environ: Mapping[str, str] | None = None) -> None:
    """Register the credentials the console may have been given through the environment."""
    env = os.environ if environ is None else environ
    for name in SECRET_ENV_VARS:
        register_secret(env.get(name))


def clear_registered_secrets() -> None:
    """Forget every registered value (tests use this to start clean)."""
    global _registered_pattern
    with _lock:
        _registered.clear()
        _registered_pattern = None


def is_secret_key(key: str) -> bool:
    """True when a mapping key names a credential, whatever its case or separators."""
    normalized = _KEY_SEPARATORS.sub("", key.lower())
    return normalized.endswith(_SECRET_KEY_SUFFIXES)


def redact_text(text: str) -> str:
    """Replace every secret in one string."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    for rule, replacement in _STRING_RULES:
        text = rule.sub(replacement, text)
    return text


def redact(value: Any) -> Any:
    """Return a copy of `value` (dicts, lists, tuples, strings) with every secret replaced."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            clean_key = redact_text(key) if isinstance(key, str) else key
            if isinstance(key, str) and is_secret_key(key) and _has_content(item):
                out[clean_key] = REDACTED
            else:
                out[clean_key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    if isinstance(value, tuple):
        return tuple(redact(item) for item in value)
    if isinstance(value, set | frozenset):
        return [redact(item) for item in value]
    return value


def _has_content(value: Any) -> bool:
    # `password: null` or `token: false` say there is none; nothing to hide.
    return value is not None and not isinstance(value, bool) and value != ""
