"""The daemon's TLS identity: the server context of its ``tls:`` listeners, the demo's
self-signed certificate, the fingerprint the banner prints, and reloading on SIGHUP.

One :class:`ssl.SSLContext` serves every TLS listener for the daemon's life; a reload
loads the new certificate into it, so connections made after it get the new one and the
open ones (calls, registrations) go on with theirs.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import logging
import os
import ssl
from pathlib import Path
from typing import Any

from rtp.dtls_srtp import fingerprint as der_fingerprint

from .config import ConfigError, Server

log = logging.getLogger(__name__)

DEMO_DAYS = 825  # what browsers and phones still accept for a leaf certificate
RENEW_BEFORE = datetime.timedelta(days=30)


def server_context(server: Server, hosts: list[str]) -> ssl.SSLContext:
    """A server context for ``server``'s certificate (TLS 1.2 and later only); with none
    configured, the demo's own self-signed one for ``hosts`` (made when missing)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    load(context, server, hosts)
    return context


def names(cert: dict[str, Any]) -> set[str]:
    """The names a peer certificate (``getpeercert()``'s form) carries: its subject's
    common names and its DNS subject alternative names, lower case."""
    found = {
        value.lower()
        for rdn in cert.get("subject", ())
        for key, value in rdn
        if key == "commonName"
    }
    found |= {value.lower() for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"}
    return found


def paths(server: Server, hosts: list[str]) -> tuple[Path, Path | None]:
    """The certificate and key files in use: the configured ones, else the demo's."""
    if server.tls_certificate is not None:
        return server.tls_certificate, server.tls_key
    return demo_certificate(Path(server.data_dir) / "tls", hosts)


def load(context: ssl.SSLContext, server: Server, hosts: list[str]) -> None:
    """(Re)load the certificate chain and key into ``context``; a file that is missing or
    not a PEM certificate with its key raises :class:`ConfigError` naming the key."""
    cert, key = paths(server, hosts)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        name = "server.tls_certificate" if server.tls_certificate else "the demo certificate"
        raise ConfigError(
            f"{name} ({cert}{', key ' + str(key) if key else ''}): cannot load a PEM"
            f" certificate chain and its private key: {exc}"
        ) from None
    load_client_ca(context, server)


def load_client_ca(context: ssl.SSLContext, server: Server) -> None:
    """With ``tls_client_ca``, peers may present a certificate checked against it (phones
    need not: it is asked for, not required); a file that does not load raises
    :class:`ConfigError`."""
    if server.tls_client_ca is None:
        return
    try:
        context.load_verify_locations(cafile=server.tls_client_ca)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"server.tls_client_ca ({server.tls_client_ca}): cannot load PEM CA certificates: {exc}"
        ) from None
    context.verify_mode = ssl.CERT_OPTIONAL


def fingerprint(server: Server, hosts: list[str]) -> str:
    """SHA-256 of the leaf certificate (the first of the file), as phones show it."""
    cert, _ = paths(server, hosts)
    text = cert.read_text(errors="replace")
    begin = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", begin)
    if begin < 0 or end < 0:
        return "unknown"
    return der_fingerprint(
        ssl.PEM_cert_to_DER_cert(text[begin : end + len("-----END CERTIFICATE-----")])
    )


def demo_certificate(directory: Path, hosts: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for ``hosts`` in ``directory`` (cert.pem, key.pem with
    mode 0600), made when missing, expiring within 30 days, or not naming every host."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    names = sorted(set(hosts) | {"localhost"})
    now = datetime.datetime.now(datetime.UTC)
    if cert_path.exists() and key_path.exists():
        try:
            current = x509.load_pem_x509_certificate(cert_path.read_bytes())
            alt = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            named = {str(v) for v in alt.value.get_values_for_type(x509.IPAddress)}
            named |= set(alt.value.get_values_for_type(x509.DNSName))
            if current.not_valid_after_utc - now > RENEW_BEFORE and set(names) <= named:
                return cert_path, key_path
        except (ValueError, x509.ExtensionNotFound):
            pass  # unreadable or not ours: made again
    directory.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # every phone takes RSA
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alt_names: list[x509.GeneralName] = []
    for name in names:
        # an address is named twice: as an address, and as a "DNS name" for TLS stacks
        # that match only those (mbedTLS 2, in linphone, refuses the certificate otherwise)
        with contextlib.suppress(ValueError):
            alt_names.append(x509.IPAddress(ipaddress.ip_address(name)))
        alt_names.append(x509.DNSName(name))
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=DEMO_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        # its own CA (phones are given it as their trusted root): key identifiers as
        # `openssl req -x509` writes them, which mbedTLS (linphone) needs to build the path
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    pem_key = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem_key)
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    log.info("event=tls_demo_certificate path=%s names=%s", cert_path, ",".join(names))
    return cert_path, key_path
