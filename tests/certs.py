"""Certificates for TLS tests, made by openssl (not by the code under test)."""

from __future__ import annotations

import subprocess
from pathlib import Path


def make_certificate(directory: Path, name: str) -> tuple[Path, Path]:
    """A self-signed RSA certificate for ``name`` and its key (PEM files)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)),
            *("-out", str(cert), "-days", "2", "-subj", f"/CN={name}"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
