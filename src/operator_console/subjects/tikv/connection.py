"""How the PD and Prometheus clients reach a real cluster: TLS files and basic credentials.

Secrets stay out of every repr, log line and error message; an endpoint URL that carries
`user:password@` has them moved into the credentials and dropped from the URL.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx


class ConnectionConfigError(ValueError):
    """A TLS file or endpoint given to a client cannot be used; the message says which."""


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """CA bundle to trust and, for mutual TLS, the client certificate and key."""

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts `ca_file` (or the system store) and presents the cert."""
        if (self.cert_file is None) != (self.key_file is None):
            raise ConnectionConfigError(
                "TLS client certificate and key go together: give both cert_file and key_file"
            )
        for label, path in (
            ("CA", self.ca_file),
            ("certificate", self.cert_file),
            ("key", self.key_file),
        ):
            if path is not None and not Path(path).is_file():
                raise ConnectionConfigError(f"TLS {label} file {path} does not exist")
        try:
            context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
            if self.cert_file and self.key_file:
                context.load_cert_chain(str(self.cert_file), str(self.key_file))
        except (ssl.SSLError, OSError) as exc:
            # The reason names the failing step, never the files' contents.
            reason = exc.strerror or exc
            raise ConnectionConfigError(f"TLS files cannot be loaded: {reason}") from None
        return context


@dataclass(frozen=True, slots=True)
class Credentials:
    """HTTP basic credentials; the password never appears in repr()."""

    username: str
    password: str = field(repr=False)

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***')"

    def auth(self) -> httpx.BasicAuth:
        return httpx.BasicAuth(self.username, self.password)


def split_endpoint(url: str) -> tuple[str, Credentials | None]:
    """The endpoint without userinfo or trailing slash, and the credentials it carried."""
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    try:
        _ = parts.port
    except ValueError:
        raise ConnectionConfigError(f"endpoint {url.split('@')[-1]!r} has a bad port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectionConfigError(
            f"endpoint {_without_userinfo(parts)!r} is not an http(s) URL such as http://pd:2379"
        )
    creds = None
    if parts.username is not None:
        creds = Credentials(parts.username, parts.password or "")
    clean = _without_userinfo(parts).rstrip("/")
    return clean, creds


def _without_userinfo(parts: SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def build_http_client(
    *,
    tls: TLSFiles | None,
    credentials: Credentials | None,
    timeout: float,
    endpoints: tuple[str, ...] = (),
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One pooled async client for every endpoint of a cluster, redirects not followed."""
    verify: ssl.SSLContext | bool
    if tls is not None:
        verify = tls.ssl_context()
    else:
        # The system trust store takes a tenth of a second to load; plain http needs none.
        verify = any(url.startswith("https://") for url in endpoints) or not endpoints
    return httpx.AsyncClient(
        verify=verify,
        auth=credentials.auth() if credentials is not None else None,
        timeout=httpx.Timeout(timeout, connect=min(timeout, 3.0)),
        follow_redirects=False,
        transport=transport,
        trust_env=False,
    )
