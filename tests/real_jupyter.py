"""A real Jupyter server for tests: a free port, its own token, the session's private Jupyter dirs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterServer:
    """``python -m <module>`` (jupyter_server, or jupyterlab for the browser suites) serving ``root``."""

    # The interpreter of the server's environment (its kernels run there too, as python3).
    python = sys.executable

    def __init__(
        self,
        root: Path,
        module: str = "jupyter_server",
        extra_args: tuple[str, ...] = (),
        timeout: float = 90,
        tls_ca: Path | None = None,  # serving https (certfile/keyfile in extra_args) with a cert from this CA
    ):
        self.root, self.port, self.token = root, free_port(), uuid.uuid4().hex
        self.base = f"{'https' if tls_ca else 'http'}://127.0.0.1:{self.port}"
        self.ssl_context = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else None
        self.log = open(root.parent / "jupyter-server.log", "w")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                self.python, "-m", module, "--no-browser", "--allow-root", "--ip=127.0.0.1",
                f"--port={self.port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={root}", *extra_args,
            ],
            cwd=root, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.api("GET", "/api/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{module} did not start; see {self.log.name}") from None
                time.sleep(0.2)

    def api(self, method: str, path: str, body: Any = None, timeout: float = 30) -> Any:
        request = urllib.request.Request(
            self.base + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout, context=self.ssl_context) as response:  # noqa: S310
            raw = response.read()
        return json.loads(raw) if raw else None

    def stop(self) -> None:
        try:
            for session in self.api("GET", "/api/sessions"):
                try:
                    self.api("DELETE", f"/api/sessions/{session['id']}")
                except OSError:
                    pass
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 signed by it: (ca.pem, cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def build(subject: str, issuer: str, key: Any, signer: Any, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if ca:
            builder = builder.add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
        else:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("ipymcp test CA", "ipymcp test CA", ca_key, ca_key, True)
    leaf = build("127.0.0.1", "ipymcp test CA", leaf_key, ca_key, False)
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def start_https_server(base: Path) -> tuple[JupyterServer, Path]:
    """A Jupyter server on https at ``base / "root"`` with a certificate from a CA of its own:
    (the server, the CA file a client must be given to trust it)."""
    ca, cert, key = make_certificates(base)
    (base / "root").mkdir()
    tls = (f"--ServerApp.certfile={cert}", f"--ServerApp.keyfile={key}")
    return JupyterServer(base / "root", extra_args=tls, tls_ca=ca), ca
