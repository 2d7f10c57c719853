"""Redaction: credentials of every usual shape disappear, ordinary operations text survives."""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Iterator
from typing import Any

import pytest

from operator_console.audit import redact, register_secret
from operator_console.audit.redact import (
    REDACTED,
    clear_registered_secrets,
    register_secrets_from_env,
)


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    clear_registered_secrets()
    yield
    clear_registered_secrets()


def _random(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(n))


def test_anthropic_key_is_removed_whole() -> None:
    key = "sk-ant-api03-" + _random(40, string.ascii_letters + string.digits + "-_")
    out = redact(f"calling the API with {key} now")
    assert key not in out
    assert "sk-ant" not in out
    assert out == f"calling the API with {REDACTED} now"


def test_generic_sk_key_is_removed() -> None:
    key = "sk-proj-" + _random(48)
    assert redact(f"OPENAI={key}") == f"OPENAI={REDACTED}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-123_XYZ", f"Authorization: {REDACTED}"),
        ("authorization=Basic dXNlcjpwYXNz", f"authorization={REDACTED}"),
        ('{"Authorization": "Bearer eyJhbGciOi.J9.x"}', f'{{"Authorization": "{REDACTED}"}}'),
        ("sent bearer eyJhbGciOiJIUzI1NiJ9.e30.sig to node", f"sent bearer {REDACTED} to node"),
        ("x-api-key: k3y-" + "a" * 30, f"x-api-key: {REDACTED}"),
        ("X-Api-Key=abc123456789", f"X-Api-Key={REDACTED}"),
        ("GET /v1?api_key=abcdef12345&n=1", f"GET /v1?api_key={REDACTED}&n=1"),
        ("password: hunter22", f"password: {REDACTED}"),
    ],
)
def test_header_and_assignment_secrets_are_removed(text: str, expected: str) -> None:
    assert redact(text) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "postgresql+psycopg://alice:s3cr3t-pw@db.internal:5432/ops",
            f"postgresql+psycopg://alice:{REDACTED}@db.internal:5432/ops",
        ),
        ("redis://:topsecret@127.0.0.1:6379/0", f"redis://:{REDACTED}@127.0.0.1:6379/0"),
        (
            "connect failed: amqp://guest:guest123@mq/vhost (refused)",
            f"connect failed: amqp://guest:{REDACTED}@mq/vhost (refused)",
        ),
    ],
)
def test_url_password_is_removed_user_and_host_kept(url: str, expected: str) -> None:
    assert redact(url) == expected


@pytest.mark.parametrize(
    "key",
    [
        "api_key",
        "apiKey",
        "APIKEY",
        "X-Api-Key",
        "ANTHROPIC_API_KEY",
        "token",
        "access_token",
        "Secret",
        "client_secret",
        "PASSWORD",
        "db_password",
        "Authorization",
    ],
)
def test_values_of_secret_named_keys_are_removed(key: str) -> None:
    out = redact({"outer": [{key: "plain-looking-value", "node": "rl-1"}]})
    assert out == {"outer": [{key: REDACTED, "node": "rl-1"}]}


def test_secret_named_keys_with_no_value_are_left_alone() -> None:
    data = {"password": None, "token": "", "api_key": False}
    assert redact(data) == data


def test_registered_secret_is_removed_anywhere() -> None:
    value = _random(24)
    register_secret(value)
    out = redact({"note": f"prefix{value}suffix", "list": [value], "k": (value,)})
    assert out == {
        "note": f"prefix{REDACTED}suffix",
        "list": [REDACTED],
        "k": (REDACTED,),
    }


def test_short_and_empty_registered_values_are_ignored() -> None:
    register_secret("")
    register_secret(None)
    register_secret("abc")
    assert redact("abc is a fine name") == "abc is a fine name"


def test_secrets_from_environment_are_registered() -> None:
    value = "opaque" + _random(30)
    register_secrets_from_env({"ANTHROPIC_API_KEY": value, "HOME": "/home/someone-long"})
    assert redact(f"using {value}") == f"using {REDACTED}"
    assert redact("/home/someone-long") == "/home/someone-long"


ORDINARY = [
    "user:hot",
    "node rl-2 is down; 3 of 4 nodes answer",
    "http://127.0.0.1:8080/metrics",
    "redis://127.0.0.1:6379/0",
    "the bearer of bad news",
    "token bucket refill 5/s, tokens=12",
    "task-queue-backlog-is-growing-fast",
    "disk-usage-on-node-3-above-threshold",
    "risk: low; restores invariant no_over_admission",
    "approve action 7 (restart node rl-3)",
    "password policy unchanged",
    "sk-node-1",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_untouched(text: str) -> None:
    assert redact(text) == text


def test_ordinary_keys_and_values_are_untouched() -> None:
    data: dict[str, Any] = {
        "max_tokens": 1024,
        "tokens": 12,
        "token_rate": 5.0,
        "secret_santa": "alice",
        "password_policy": "strict",
        "keys": ["user:hot", "user:cold"],
        "node": "rl-3",
        "ok": True,
        "n": None,
    }
    assert redact(data) == data


def test_input_is_not_mutated_and_output_is_a_copy() -> None:
    data: dict[str, Any] = {"api_key": "abcdefgh1234", "nested": {"list": ["Bearer abcdefgh1234"]}}
    before = copy.deepcopy(data)
    out = redact(data)
    assert data == before
    assert out is not data
    assert out["nested"] is not data["nested"]
    assert out["nested"]["list"] is not data["nested"]["list"]


def test_redaction_is_idempotent() -> None:
    text = (
        "Authorization: Bearer abc123def456 x-api-key: zzz123456789 "
        "postgresql://u:p4ss@h/db sk-ant-api03-" + _random(40)
    )
    once = redact(text)
    assert redact(once) == once


def test_non_text_values_pass_through() -> None:
    assert redact(5) == 5
    assert redact(1.5) == 1.5
    assert redact(None) is None
    assert redact(True) is True
