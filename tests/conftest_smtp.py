"""SMTP fixtures, imported by tests/conftest.py (``pytest_plugins``).

- ``smtp_server``: a recording aiosmtpd on 127.0.0.1 (no TLS, no AUTH); yields a
  ``RunningServer`` with ``host``, ``port`` and ``received`` (a list of
  ``(ReceivedEnvelope, bytes)``, one per accepted message).
- ``smtp_server_factory``: start servers with a fault script, TLS or AUTH:
  ``smtp_server_factory(ScriptedHandler({"RCPT": ["451 4.7.1 Greylisted"]}))``.
- ``tls_files``: a throw-away CA-less self-signed certificate for 127.0.0.1 / localhost.
- ``closed_port``: a loopback port nobody listens on (connection refused).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.smtpd import RecordingHandler, RunningServer, SmtpServerThread


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return TlsFiles(cert, key)


StartServer = Callable[..., RunningServer]


@pytest.fixture
def smtp_server_factory() -> Iterator[StartServer]:
    started: list[SmtpServerThread] = []

    def start(handler: RecordingHandler | None = None, **kwargs: Any) -> RunningServer:
        thread = SmtpServerThread(handler or RecordingHandler(), **kwargs)
        started.append(thread)
        return thread.start()

    yield start
    for thread in started:
        thread.stop()


@pytest.fixture
def smtp_server(smtp_server_factory: StartServer) -> RunningServer:
    return smtp_server_factory()


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port
