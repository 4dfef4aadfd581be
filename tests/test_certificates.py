"""The daemon's TLS identity (softswitch.certificates): the demo's self-signed certificate,
the certificate reloaded in place (new connections get the new
one), and a certificate that does not load refused with file and key named."""

from __future__ import annotations

import asyncio
import hashlib
import os
import ssl
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from softswitch import certificates
from softswitch import config as cfg

from .certs import make_certificate
from .netutil import ROOT
from .office import demo_pbx


def server(tmp_path: Path, **values: object) -> cfg.Server:
    return cfg.Server(data_dir=tmp_path / "data", **values)


def test_the_demo_certificate_is_made_once_and_again_for_a_new_name(tmp_path: Path) -> None:
    s = server(tmp_path)
    cert, key = certificates.paths(s, ["127.0.0.1", "office.test"])
    assert key is not None and stat.S_IMODE(os.stat(key).st_mode) == 0o600
    first = cert.read_bytes()
    assert certificates.paths(s, ["office.test"])[0].read_bytes() == first  # kept
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(first.decode())).hexdigest().upper()
    assert certificates.fingerprint(s, ["office.test"]).replace(":", "") == digest
    certificates.paths(s, ["127.0.0.2"])  # a name it lacks: made again
    assert cert.read_bytes() != first
    context = ssl.create_default_context(cafile=str(cert))  # it is its own trusted root
    assert context.get_ca_certs()


async def handshake(port: int) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()


def with_server(config: cfg.Config, update: Mapping[str, object]) -> cfg.Config:
    return config.model_copy(update={"server": config.server.model_copy(update=dict(update))})


async def test_tls_listener_versions_and_a_reloaded_certificate(tmp_path: Path) -> None:
    pbx = await demo_pbx(tmp_path, tls=True)
    tls_port = pbx.ua.listeners[-1].port
    try:
        demo = await handshake(tls_port)
        # TLS 1.2 and later only (this machine's OpenSSL cannot even offer 1.1 to test it)
        assert pbx.tls_context is not None
        assert pbx.tls_context.minimum_version is ssl.TLSVersion.TLSv1_2
        cert, key = make_certificate(tmp_path, "office")
        update = {"tls_certificate": cert, "tls_key": key}
        config = pbx.config.model_copy(
            update={"server": pbx.config.server.model_copy(update=update)}
        )
        await pbx.apply(config)
        assert await handshake(tls_port) == ssl.PEM_cert_to_DER_cert(cert.read_text())
        assert await handshake(tls_port) != demo
        broken = tmp_path / "broken.pem"
        broken.write_text("-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----\n")
        update = {"tls_certificate": broken, "tls_key": key}
        with pytest.raises(cfg.ConfigError, match=r"server\.tls_certificate"):
            await pbx.apply(with_server(pbx.config, update))
        assert await handshake(tls_port) == ssl.PEM_cert_to_DER_cert(cert.read_text())  # kept
    finally:
        await pbx.stop()


def test_check_names_a_certificate_that_does_not_load(tmp_path: Path) -> None:
    path = tmp_path / "office.toml"
    path.write_text(
        '[server]\nlisten = ["tls:127.0.0.1:5061"]\ntls_certificate = "missing.pem"\n'
        f'data_dir = "{tmp_path / "data"}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "softswitch.cli", "check", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "server.tls_certificate" in result.stderr and "missing.pem" in result.stderr


def issue(ca: tuple[Path, Path], directory: Path, name: str) -> tuple[Path, Path]:
    """A client certificate for ``name`` signed by ``ca``."""
    key, csr, cert = (directory / f"{name}.{kind}" for kind in ("key", "csr", "pem"))
    openssl = ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
    subprocess.run([*openssl, "-out", str(csr), "-subj", f"/CN={name}"], check=True)
    subprocess.run(
        [
            *("openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca[0])),
            *("-CAkey", str(ca[1]), "-CAcreateserial", "-days", "2", "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_a_trunk_is_believed_only_with_its_client_certificate(tmp_path: Path) -> None:
    import sip

    ca = make_certificate(tmp_path, "office-ca")
    good = issue(ca, tmp_path, "provider.test")
    other = issue(ca, tmp_path, "other.test")
    trunk = (
        '\n[[trunks]]\nname = "provider"\nproxy = "sips:127.0.0.1:5061"\n'
        'addresses = ["127.0.0.1"]\ninbound_extension = "100"\n'
        'tls_client_name = "provider.test"\n'
    )
    pbx = await demo_pbx(tmp_path, tls=True, server=f'tls_client_ca = "{ca[0]}"', extra=trunk)
    udp, tls = pbx.ua.listeners[0].port, pbx.ua.listeners[-1].port

    async def invite(transport: str, client: tuple[Path, Path] | None) -> int:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        if client is not None:
            context.load_cert_chain(*client)
        # its own TLS listener (Via names it) needs a certificate of its own: any will do
        own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        own.load_cert_chain(*(client or ca))
        async with sip.UserAgent(
            ["udp:127.0.0.1:0", "tls:127.0.0.1:0"],
            user="provider",
            tls_context=own,
            client_tls_context=context,
            overload=None,
        ) as provider:
            where = f"127.0.0.1:{tls};transport=tls" if transport == "tls" else f"127.0.0.1:{udp}"
            offer = sip.make_offer("127.0.0.1", 40000)
            call = await provider.invite(f"sip:0123456789@{where}", bytes(offer), wait=False)
            try:
                response = await call.wait_answer(timeout=10)
            except sip.RequestFailed as exc:
                return exc.status
            await call.bye()
            return response.status

    try:
        assert await invite("tls", good) != 403  # believed: it rings (or reaches voicemail)
        assert await invite("tls", None) == 403  # no certificate
        assert await invite("tls", other) == 403  # another name, same CA
        assert await invite("udp", None) == 403  # not over TLS at all
    finally:
        await pbx.stop()


async def test_a_ua_registers_over_tls_with_a_transport_parameter(tmp_path: Path) -> None:
    """``register("sip:HOST:PORT;transport=tls")`` goes over TLS (the Request-URI keeps
    its transport; it once went over UDP to the TLS port and timed out)."""
    import sip

    pbx = await demo_pbx(tmp_path, tls=True)
    tls_port = pbx.ua.listeners[-1].port
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname, client.verify_mode = False, ssl.CERT_NONE
    own = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    own.load_cert_chain(*certificates.paths(pbx.config.server, []))
    try:
        async with sip.UserAgent(
            ["udp:127.0.0.1:0", "tls:127.0.0.1:0"],
            user="100",
            tls_context=own,
            client_tls_context=client,
        ) as phone:
            await phone.register(
                f"sip:127.0.0.1:{tls_port};transport=tls",
                aor="sip:100@demo.softswitch",
                username="100",
                password="alice100",
                expires=300,
            )
            [binding] = pbx.registrar.lookup("sip:100@demo.softswitch", pbx.ua.now())
            assert binding.source[0] == "tls"
    finally:
        await pbx.stop()
