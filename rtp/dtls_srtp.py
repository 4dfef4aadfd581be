"""DTLS-SRTP (RFC 5763, RFC 5764) for one WebRTC leg: the DTLS handshake on the leg's
port, the peer's certificate checked against the fingerprint its SDP gave (the only
thing that authenticates it: WebRTC certificates are self-signed), and the SRTP keys
exported from the handshake (RFC 5705) for :mod:`rtp.srtp`.

Datagrams in, datagrams out (OpenSSL through pyOpenSSL on memory BIOs): the owner feeds
what arrives on the port (first byte 20-63, :func:`rtp.ice_lite.kind`) to
:meth:`DtlsSrtp.receive`, sends what it returns to the peer, and calls
:meth:`DtlsSrtp.retransmit` now and then until :attr:`DtlsSrtp.keys` is set.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

# DTLS-SRTP protection profiles we take (RFC 5764 §4.1.2, RFC 7714), best first, with the
# SDES name of the same suite and its master key and salt lengths
PROFILES = {
    b"SRTP_AEAD_AES_128_GCM": ("AEAD_AES_128_GCM", 16, 12),
    b"SRTP_AES128_CM_SHA1_80": ("AES_CM_128_HMAC_SHA1_80", 16, 14),
}
LABEL = b"EXTRACTOR-dtls_srtp"
MAX_DATAGRAM = 1500
DTLS1_2 = 0xFEFD  # OpenSSL's DTLS1_2_VERSION (pyOpenSSL names the TLS ones only)


class Identity:
    """Our DTLS certificate (ECDSA P-256, self-signed, as browsers make theirs) and the
    fingerprint our SDP names (``a=fingerprint:sha-256 AB:CD:...``)."""

    def __init__(self) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "softswitch")])
        now = datetime.datetime.now(datetime.UTC)
        certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .sign(key, hashes.SHA256())
        )
        self.certificate = certificate
        self.key = key
        der = certificate.public_bytes(serialization.Encoding.DER)
        self.fingerprint = ("sha-256", fingerprint(der))


def fingerprint(der: bytes, algorithm: str = "sha-256") -> str:
    """``AB:CD:...`` of a DER certificate, as SDP writes it (RFC 8122)."""
    digest = hashlib.new(algorithm.replace("-", ""), der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


class DtlsSrtp:
    """One leg's DTLS-SRTP endpoint. ``server``: we answer the ClientHello (our SDP said
    ``a=setup:passive``); else we send it (``active``). ``remote_fingerprint``:
    (algorithm, ``AB:CD:...``) from the peer's SDP."""

    def __init__(
        self, identity: Identity, *, server: bool, remote_fingerprint: tuple[str, str]
    ) -> None:
        context = SSL.Context(SSL.DTLS_METHOD)
        context.set_min_proto_version(DTLS1_2)
        context.use_certificate(identity.certificate)
        context.use_privatekey(identity.key)
        # the peer's certificate is self-signed: it is judged by its fingerprint below
        context.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, lambda *_: True)
        context.set_tlsext_use_srtp(b":".join(PROFILES))
        self._ssl = SSL.Connection(context, None)
        if server:
            self._ssl.set_accept_state()
        else:
            self._ssl.set_connect_state()
        self.server = server
        self.remote_fingerprint = (remote_fingerprint[0].lower(), remote_fingerprint[1].upper())
        # (suite, our master key + salt, the peer's) once the handshake is done: what
        # sip.SrtpKeys holds for SDES legs
        self.keys: tuple[str, bytes, bytes] | None = None
        self.failed: str | None = None  # why the handshake was refused

    def start(self) -> list[bytes]:
        """The first flight (the ClientHello when we are the client)."""
        return self._handshake()

    def receive(self, datagram: bytes) -> list[bytes]:
        """A DTLS datagram from the peer; returns the datagrams to send back."""
        if self.failed is not None:
            return []
        self._ssl.bio_write(datagram)
        if self.keys is None:
            return self._handshake()
        try:  # after the handshake only alerts are expected (media is SRTP)
            self._ssl.recv(MAX_DATAGRAM)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            pass
        except SSL.Error as exc:
            self.failed = f"dtls_error:{exc}"
        return self._pending()

    def retransmit(self) -> list[bytes]:
        """A lost flight sent again once its timer has run out (call every tick or so)."""
        if self.keys is not None or self.failed is not None:
            return []
        timeout = self._ssl.DTLSv1_get_timeout()
        if timeout is not None and timeout <= 0:
            self._ssl.DTLSv1_handle_timeout()
        return self._pending()

    def _handshake(self) -> list[bytes]:
        try:
            self._ssl.do_handshake()
        except SSL.WantReadError:
            return self._pending()
        except SSL.Error as exc:
            self.failed = f"dtls_handshake:{exc}"
            return self._pending()
        self._established()
        return self._pending()

    def _established(self) -> None:
        peer = self._ssl.get_peer_certificate(as_cryptography=True)
        algorithm, expected = self.remote_fingerprint
        if peer is None or algorithm not in ("sha-256", "sha-384", "sha-512"):
            self.failed = "dtls_fingerprint"
            return
        der = peer.public_bytes(serialization.Encoding.DER)
        if not hmac.compare_digest(fingerprint(der, algorithm), expected):
            self.failed = "dtls_fingerprint"  # not the certificate its SDP named
            return
        profile = self._ssl.get_selected_srtp_profile()
        if profile not in PROFILES:
            self.failed = "dtls_no_srtp_profile"
            return
        suite, key_len, salt_len = PROFILES[profile]
        material = self._ssl.export_keying_material(LABEL, 2 * (key_len + salt_len))
        client_key, server_key = material[:key_len], material[key_len : 2 * key_len]
        salts = material[2 * key_len :]
        client_salt, server_salt = salts[:salt_len], salts[salt_len:]
        client, server = client_key + client_salt, server_key + server_salt
        local, remote = (server, client) if self.server else (client, server)
        self.keys = (suite, local, remote)

    def _pending(self) -> list[bytes]:
        out: list[bytes] = []
        while True:
            try:
                data = self._ssl.bio_read(MAX_DATAGRAM)
            except SSL.WantReadError:
                return out
            if not data:
                return out
            out.append(data)
