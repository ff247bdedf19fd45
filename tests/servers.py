"""Real servers on free loopback ports that stand in for the providers.

`SmtpServer` is aiosmtpd (STARTTLS or implicit TLS, with login) and keeps
every message it accepts; `StalledServer` accepts TCP connections and never
says a word; `HttpProvider` is an HTTP/1.1 server that records each request
and answers with whatever status the test sets. `make_cert` makes a
self-signed certificate for 127.0.0.1 with the openssl command.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.conftest import free_port

__all__ = [
    "HttpProvider",
    "Received",
    "Request",
    "SmtpServer",
    "StalledServer",
    "make_cert",
]


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 and localhost."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Received:
    """One message the SMTP server accepted."""

    sender: str
    recipients: list[str]
    message: EmailMessage
    login: str | None
    tls: bool
    at: float


class _Handler:
    def __init__(self, server: SmtpServer) -> None:
        self._server = server

    async def handle_DATA(
        self, smtp: SMTPServer, session: Session, envelope: Envelope
    ) -> str:
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        self._server.received.append(
            Received(
                sender=str(envelope.mail_from),
                recipients=list(envelope.rcpt_tos),
                message=message,  # type: ignore[arg-type]
                login=login,
                tls=_over_tls(smtp, session),
                at=time.monotonic(),
            )
        )
        return "250 OK"


def _over_tls(smtp: SMTPServer, session: Session) -> bool:
    # STARTTLS sets session.ssl; TLS from the first byte shows on the transport.
    transport = smtp.transport
    on_transport = transport is not None and transport.get_extra_info("ssl_object")
    return session.ssl is not None or bool(on_transport)


class _ClosingController(Controller):
    """A Controller that aborts open connections when it stops.

    A daemon stopped mid-conversation leaves its connection open; left to
    the garbage collector, it would surface as a ResourceWarning in some
    later test.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: list[SMTPServer] = []

    def factory(self) -> SMTPServer:
        session = super().factory()
        self.sessions.append(session)
        return session

    def stop(self, no_assert: bool = False) -> None:
        async def abort_all() -> None:
            for session in self.sessions:
                for transport in (session.transport, session._original_transport):
                    if transport is not None:
                        transport.abort()
            # Let the loop run the connection_lost callbacks that close sockets.
            for _ in range(3):
                await asyncio.sleep(0)

        if self.loop.is_running():
            asyncio.run_coroutine_threadsafe(abort_all(), self.loop).result(5)
        super().stop(no_assert=no_assert)


class SmtpServer:
    """aiosmtpd on a free port: STARTTLS (or TLS from the start) and login."""

    def __init__(
        self,
        cert: Path,
        key: Path,
        *,
        username: str = "recoveryd",
        password: str = "s3cret-smtp",
        implicit_tls: bool = False,
    ) -> None:
        self.port = free_port()
        self.username = username
        self.password = password
        self.received: list[Received] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        # aiosmtpd does not count TLS from the first byte as TLS for AUTH,
        # so there AUTH is offered without requiring it (the link is TLS).
        tls: dict[str, Any] = (
            {"ssl_context": context, "auth_require_tls": False}
            if implicit_tls
            else {
                "tls_context": context,
                "require_starttls": True,
                "auth_required": True,
            }
        )
        self._controller = _ClosingController(
            _Handler(self),
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            **tls,
        )

    def _authenticate(
        self,
        server: SMTPServer,
        session: Session,
        envelope: Envelope,
        mechanism: str,
        auth_data: Any,
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.username
            and auth_data.password.decode() == self.password
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()


class StalledServer:
    """Accepts TCP connections (the kernel does) and never answers them."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = int(self._sock.getsockname()[1])

    def stop(self) -> None:
        self._sock.close()


@dataclass
class Request:
    """One request an `HttpProvider` received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return json.loads(self.body)


class HttpProvider:
    """An HTTP server standing in for an SMS or push provider's API.

    Every request is recorded with the status it was answered with;
    ``status`` may be changed by the test at any time (500 for an outage).
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status = provider.status
                with provider._lock:
                    provider.requests.append(
                        Request(
                            "POST", self.path, dict(self.headers.items()), body, status
                        )
                    )
                reply = b'{"sid": "SM0001"}'
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def accepted(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if 200 <= r.status < 300]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
