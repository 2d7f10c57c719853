"""A test double of PD's HTTP wire format, and of TiKV's and PD's /metrics endpoints.

TiKV and PD cannot run here, so these servers answer with payloads written to the wire
format of a named PD release (tests/subjects/tikv/payloads/pd-vX.Y.Z/*.json, from PD's
source): the same status codes, Content-Types, bodies byte for byte and Date header a
real PD member would send in that cluster situation. They are not PD: they hold no
state, and a request PD would answer from data the payloads do not cover gets gorilla
mux's "404 page not found". What they add is what tests need: every request is
recorded (method, path, query, headers, JSON body); the situation or release can be
switched at runtime, or once PD accepts a given request (`after`), as the cluster would
change; members can be advertised at the URLs the doubles listen on (`advertise`); a
member can be made a follower that does what PD's redirector
does (pkg/utils/apiutil/serverapi/middleware.go: serve local-only paths itself, refuse
an already-forwarded request, answer "no leader" without one, otherwise proxy to the
leader with a PD-Redirector header, answering "redirect failed" when the leader is
unreachable); and the recorded /metrics captures are served on their own ports with
their counters advancing at the recorded rate, so a real Prometheus can scrape them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from email.utils import format_datetime
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from operator_console.lab.ports import free_port, free_ports

PAYLOADS = Path(__file__).resolve().parent / "payloads"
NOT_FOUND = (404, "text/plain; charset=utf-8", b"404 page not found\n")


def load_cassette(release: str, situation: str) -> dict[str, Any]:
    path = PAYLOADS / f"pd-{release}" / f"{situation}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no PD payloads for {release} / {situation} at {path}")
    data = json.loads(path.read_text())
    for exchange in data["exchanges"]:
        exchange["_body"] = exchange["body"].encode("utf-8")
    recorded = datetime.fromisoformat(data["recorded_at"]).astimezone(UTC)
    data["_date"] = format_datetime(recorded, usegmt=True)
    return data


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the double received it."""

    member: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    json: Any = None
    raw_query: str = ""


@dataclass
class _State:
    cassette: dict[str, Any]
    leader: PDDouble | None = None  # None while leading; see PDDouble.follow
    is_follower: bool = False
    basic_auth: str | None = None
    requests: list[RecordedRequest] = field(default_factory=list)
    # The member URLs the cassette names (http://pd-0:2379) and where those members listen.
    advertised: list[tuple[bytes, bytes]] = field(default_factory=list)
    # (method, path, situation): once PD has accepted such a request, the cluster is there.
    transitions: list[tuple[str, str, str]] = field(default_factory=list)


def _query(raw: str) -> dict[str, str]:
    # latin-1 keeps raw key bytes one-to-one, as Go's url.Values does.
    parsed = parse_qs(raw, keep_blank_values=True, encoding="latin-1")
    return {k: v[0] for k, v in parsed.items()}


def _matches(
    exchange: dict[str, Any], method: str, path: str, query: dict[str, str], body: Any
) -> bool:
    if exchange["method"] != method or exchange["path"] != path:
        return False
    if "query" in exchange and exchange["query"] != query:
        return False
    wanted = exchange.get("match_json")
    if wanted is not None:
        if not isinstance(body, dict):
            return False
        return all(body.get(k) == v for k, v in wanted.items())
    return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, as Go's server does
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _answer(
        self,
        status: int,
        content_type: str,
        body: bytes,
        headers: dict[str, str] | None = None,
        date: str | None = None,
    ) -> None:
        self.send_response_only(status)
        if date:
            self.send_header("Date", date)
        self.send_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        double = self.server.double
        state = double.state
        split = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = RecordedRequest(
            double.name,
            self.command,
            split.path,
            _query(split.query),
            headers,
            raw,
            parsed,
            split.query,
        )
        with double.lock:
            state.requests.append(record)
            cassette = state.cassette
        date = cassette["_date"]
        if state.basic_auth is not None and headers.get("authorization") != state.basic_auth:
            self._answer(
                401,
                "text/plain; charset=utf-8",
                b"Unauthorized\n",
                {"WWW-Authenticate": 'Basic realm="pd"'},
                date,
            )
            return
        if state.is_follower and not self._local(cassette, split.path, headers):
            self._forward(cassette, state, raw, date)
            return
        for exchange in cassette["exchanges"]:
            if _matches(exchange, self.command, split.path, record.query, parsed):
                body = exchange["_body"]
                for name, url in state.advertised:
                    body = body.replace(name, url)
                self._answer(exchange["status"], exchange["content_type"], body, date=date)
                if exchange["status"] < 300:
                    double.applied(self.command, split.path)
                return
        status, content_type, body = NOT_FOUND
        self._answer(status, content_type, body, {"X-Content-Type-Options": "nosniff"}, date)

    def _local(self, cassette: dict[str, Any], path: str, headers: dict[str, str]) -> bool:
        if "pd-allow-follower-handle" in headers:
            return True
        local = cassette["redirector"]["local_only_paths"]
        if local and path == "/pd/api/v1/config" and self.command == "GET":
            return True
        return any(path.startswith(p) for p in local)

    def _forward(self, cassette: dict[str, Any], state: _State, raw: bytes, date: str) -> None:
        redirector = cassette["redirector"]
        plain = {"X-Content-Type-Options": "nosniff"}

        def refuse(kind: str) -> None:
            answer = redirector[kind]
            self._answer(
                answer["status"], "text/plain; charset=utf-8", answer["body"].encode(), plain, date
            )

        if self.headers.get("PD-Redirector"):
            refuse("not_leader")
            return
        leader = state.leader
        if leader is None:
            refuse("no_leader")
            return
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "content-length", "connection")
        }
        headers["PD-Redirector"] = self.server.double.name
        headers["X-Forwarded-For"] = self.client_address[0]
        try:
            connection = leader.connection(self.server.double._client_tls)
            connection.request(self.command, self.path, body=raw or None, headers=headers)
            response = connection.getresponse()
            body = response.read()
            copied = [
                (k, v)
                for k, v in response.getheaders()
                if k.lower()
                not in (
                    "content-length",
                    "content-encoding",
                    "connection",
                    "transfer-encoding",
                    "date",
                    "content-type",
                )
            ]
            content_type = response.getheader("Content-Type", "")
            leader_date = response.getheader("Date", date)
            connection.close()
        except (OSError, http.client.HTTPException):
            refuse("redirect_failed")
            return
        self._answer(response.status, content_type, body, dict(copied), leader_date)

    do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128  # socketserver's 5 drops concurrent connects (1 s SYN retry)

    def __init__(self, address: tuple[str, int], double: PDDouble) -> None:
        self.double = double
        self.open_connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.open_connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.open_connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut every open keep-alive connection, as a process that dies does."""
        with self.connections_lock:
            connections = list(self.open_connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class PDDouble:
    """One PD member's HTTP API, answering from a cassette (see the module docstring)."""

    def __init__(
        self,
        name: str = "pd-0",
        *,
        release: str = "v8.5.7",
        situation: str = "healthy",
        tls: ssl.SSLContext | None = None,
        client_tls: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.release = release
        self.lock = threading.Lock()
        self.state = _State(load_cassette(release, situation))
        self._tls = tls
        self._client_tls = client_tls
        self.port = free_port()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> PDDouble:
        server = _Server(("127.0.0.1", self.port), self)
        if self._tls is not None:
            server.socket = self._tls.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            name=f"pd-double-{self.name}",
            kwargs={"poll_interval": 0.01},
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listener: clients now get connection refused, as from a dead member."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> PDDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connection(self, client_tls: ssl.SSLContext | None) -> http.client.HTTPConnection:
        """A connection to this member, as another member's redirector opens one."""
        if self._tls is not None:
            return http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=5, context=client_tls
            )
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)

    # -------------------------------------------------------------- test controls

    def set_situation(self, situation: str, release: str | None = None) -> None:
        cassette = load_cassette(release or self.release, situation)
        with self.lock:
            self.release = release or self.release
            self.state.cassette = cassette

    def follow(self, leader: PDDouble | None) -> None:
        """Act as a follower of `leader` (None: no leader elected, as during an election)."""
        with self.lock:
            self.state.is_follower = True
            self.state.leader = leader

    def lead(self) -> None:
        with self.lock:
            self.state.is_follower = False
            self.state.leader = None

    def advertise(self, urls: dict[str, str]) -> None:
        """Name the members at these URLs (pd-0 -> this double's URL) in every answer, as a
        real member lists the advertise-client-urls it and its peers listen on."""
        with self.lock:
            self.state.advertised = [
                (f"http://{name}:2379".encode(), url.encode()) for name, url in urls.items()
            ]

    def after(self, method: str, path: str, situation: str) -> None:
        """Once a `method path` request is accepted (2xx), answer from `situation`: the
        cluster as PD leaves it after carrying the request out."""
        with self.lock:
            self.state.transitions.append((method, path, situation))

    def applied(self, method: str, path: str) -> None:
        with self.lock:
            due = [t for t in self.state.transitions if t[:2] == (method, path)]
            for transition in due:
                self.state.transitions.remove(transition)
        for _, _, situation in due[:1]:
            self.set_situation(situation)

    def require_basic_auth(self, username: str, password: str) -> None:
        token = base64.b64encode(f"{username}:{password}".encode()).decode()
        with self.lock:
            self.state.basic_auth = f"Basic {token}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self.lock:
            return list(self.state.requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def clear_requests(self) -> None:
        with self.lock:
            self.state.requests.clear()


# ---------------------------------------------------------------------- /metrics


@dataclass(frozen=True)
class MetricsTarget:
    name: str
    job: str
    instance: str  # the label a deployment's Prometheus gives it, e.g. "tikv-0:20180"
    port: int
    up: bool


class _Capture:
    """Two captures 15 s apart of one /metrics page, served as a linear time series."""

    def __init__(self, first: str, second: str, interval_s: int) -> None:
        self.lines: list[tuple[str, Fraction, Fraction] | str] = []
        a, b = first.splitlines(), second.splitlines()
        if len(a) != len(b):
            raise ValueError("the two /metrics captures do not list the same series")
        for line_a, line_b in zip(a, b, strict=True):
            if line_a.startswith("#") or not line_a.strip():
                self.lines.append(line_a)
                continue
            series_a, value_a = line_a.rsplit(" ", 1)
            series_b, value_b = line_b.rsplit(" ", 1)
            if series_a != series_b:
                raise ValueError(f"captures differ in series order: {series_a} / {series_b}")
            v0, v1 = Fraction(value_a), Fraction(value_b)
            self.lines.append((series_a, v0, (v1 - v0) / interval_s))

    def render(self, step: int, timestamp_ms: int) -> bytes:
        out = []
        for line in self.lines:
            if isinstance(line, str):
                out.append(line)
                continue
            series, v0, slope = line
            value = v0 + slope * step
            shown = str(value.numerator) if value.denominator == 1 else repr(float(value))
            out.append(f"{series} {shown} {timestamp_ms}")
        return ("\n".join(out) + "\n").encode()


class _MetricsHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: _MetricsServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        if urlsplit(self.path).path != "/metrics":
            body = b"404 page not found\n"
            self.send_response_only(404)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
        else:
            step = max(0, int(time.time() - self.server.started_s))
            body = self.server.capture.render(step, (self.server.started_s + step) * 1000)
            self.send_response_only(200)
            self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _MetricsServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, port: int, capture: _Capture, content_type: str, started_s: int) -> None:
        self.capture = capture
        self.content_type = content_type
        self.started_s = started_s
        super().__init__(("127.0.0.1", port), _MetricsHandler)


class MetricsDouble:
    """Serves one metrics set's captures, one port per live instance (dead ones refuse).

    Each sample is stamped with the whole second its value stands for (step s after the
    start: value = first + (second - first) * s / 15), so the rates Prometheus computes
    equal the recorded rates exactly, whatever the jitter of its 1 s scrapes. TiKV and PD
    do not stamp their samples; the values and labels are theirs.
    """

    def __init__(self, set_name: str) -> None:
        self.set_name = set_name
        folder = PAYLOADS / "metrics" / set_name
        self.manifest = json.loads((folder / "targets.json").read_text())
        self.started_s = int(time.time())
        ports = free_ports(len(self.manifest["targets"]))
        self.targets = [
            MetricsTarget(t["name"], t["job"], t["instance"], port, t["up"])
            for t, port in zip(self.manifest["targets"], ports, strict=True)
        ]
        self._folder = folder
        self._servers: list[tuple[_MetricsServer, threading.Thread]] = []

    def start(self) -> MetricsDouble:
        interval = int(self.manifest["interval_s"])
        for target in list(self.targets):
            if not target.up:
                continue
            first = (self._folder / f"{target.name}.0s.prom").read_text()
            second = (self._folder / f"{target.name}.{interval}s.prom").read_text()
            content_type = (
                "text/plain; version=0.0.4"
                if target.job == "tikv"
                else "text/plain; version=0.0.4; charset=utf-8"
            )
            capture = _Capture(first, second, interval)
            try:
                server = _MetricsServer(target.port, capture, content_type, self.started_s)
            except OSError:  # taken since it was chosen: choose again, before Prometheus knows
                index = self.targets.index(target)
                target = self.targets[index] = replace(target, port=free_port())
                server = _MetricsServer(target.port, capture, content_type, self.started_s)
            thread = threading.Thread(
                target=server.serve_forever,
                daemon=True,
                kwargs={"poll_interval": 0.01},
                name=f"metrics-{self.set_name}-{target.name}",
            )
            thread.start()
            self._servers.append((server, thread))
        return self

    def stop(self) -> None:
        for server, thread in self._servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        self._servers.clear()

    def capture_text(self, name: str, at_s: int) -> str:
        return (self._folder / f"{name}.{at_s}s.prom").read_text()
