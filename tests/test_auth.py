from __future__ import annotations

import pytest

from sip import (
    AuthResult,
    DigestClient,
    DigestServer,
    ParseError,
    parse_challenge,
    parse_credentials,
)
from sip.auth import Challenge, compute_ha1, compute_response


def test_rfc2617_example() -> None:
    ha1 = compute_ha1("MD5", "Mufasa", "testrealm@host.com", "Circle Of Life")
    response = compute_response(
        algorithm="MD5",
        ha1=ha1,
        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="0a4f113b",
    )
    assert response == "6629fae49393a05397450978507c4ef1"


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_example(algorithm: str, expected: str) -> None:
    ha1 = compute_ha1(algorithm, "Mufasa", "http-auth@example.org", "Circle of Life")
    response = compute_response(
        algorithm=algorithm,
        ha1=ha1,
        nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    )
    assert response == expected


def test_challenge_and_credentials_round_trip() -> None:
    server = DigestServer("pbx.example", key=b"k" * 32)
    sha, md5 = server.challenges(1000.0)
    assert (sha.algorithm, md5.algorithm) == ("SHA-256", "MD5")
    parsed = parse_challenge(str(sha))
    assert parsed == sha
    creds = DigestClient("100", "secret").answer(parsed, "REGISTER", "sip:pbx.example")
    assert parse_credentials(str(creds)) == creds


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_server_verifies_client(algorithm: str) -> None:
    server = DigestServer("pbx.example", nonce_ttl=60)
    challenge = next(c for c in server.challenges(0.0) if c.algorithm == algorithm)
    client = DigestClient("100", "secret")
    creds = client.answer(challenge, "INVITE", "sip:101@pbx.example")
    verify = server.verify
    assert verify(creds, method="INVITE", password="secret", now=10.0) is AuthResult.OK
    # replay of the same nonce-count is refused; the next count is accepted
    assert verify(creds, method="INVITE", password="secret", now=11.0) is AuthResult.FAILED
    creds2 = client.answer(challenge, "INVITE", "sip:101@pbx.example")
    assert creds2.nc == "00000002"
    assert verify(creds2, method="INVITE", password="secret", now=12.0) is AuthResult.OK
    # wrong password, unknown user, wrong method
    creds3 = client.answer(challenge, "INVITE", "sip:101@pbx.example")
    assert verify(creds3, method="INVITE", password="wrong", now=13.0) is AuthResult.FAILED
    assert verify(creds3, method="INVITE", password=None, now=13.0) is AuthResult.FAILED
    assert verify(creds3, method="BYE", password="secret", now=13.0) is AuthResult.FAILED
    # expired nonce with the right password is stale, not failed
    creds4 = client.answer(challenge, "INVITE", "sip:101@pbx.example")
    assert verify(creds4, method="INVITE", password="secret", now=100.0) is AuthResult.STALE


def test_forged_or_foreign_nonce_fails() -> None:
    server = DigestServer("pbx.example")
    other = DigestServer("pbx.example")
    challenge = other.challenges(0.0)[0]
    creds = DigestClient("100", "secret").answer(challenge, "REGISTER", "sip:pbx.example")
    assert server.verify(creds, method="REGISTER", password="secret", now=1.0) is AuthResult.FAILED
    forged = Challenge("pbx.example", "AAAA" * 11, "MD5")
    creds = DigestClient("100", "secret").answer(forged, "REGISTER", "sip:pbx.example")
    assert server.verify(creds, method="REGISTER", password="secret", now=1.0) is AuthResult.FAILED


def test_rfc2069_client_without_qop() -> None:
    server = DigestServer("pbx.example", algorithms=("MD5",))
    challenge = server.challenges(0.0)[0]
    challenge.qop = ()
    creds = DigestClient("100", "secret").answer(challenge, "REGISTER", "sip:pbx.example")
    assert creds.qop is None and "qop" not in str(creds)
    assert server.verify(creds, method="REGISTER", password="secret", now=1.0) is AuthResult.OK


def test_auth_int_and_sess() -> None:
    challenge = Challenge("r", "n", "SHA-256-sess", ("auth-int",))
    creds = DigestClient("u", "p").answer(challenge, "INVITE", "sip:x", body=b"v=0\r\n")
    assert creds.qop == "auth-int"
    assert creds.response == compute_response(
        algorithm="SHA-256-sess",
        ha1=compute_ha1("SHA-256", "u", "r", "p"),
        nonce="n",
        method="INVITE",
        uri="sip:x",
        qop="auth-int",
        nc=creds.nc,
        cnonce=creds.cnonce,
        body=b"v=0\r\n",
    )


@pytest.mark.parametrize(
    "value",
    [
        "Basic realm=x",
        'Digest realm="x"',
        'Digest realm="x", nonce="y", algorithm=ROT13',
        'Digest realm="x" nonce="y"',
        "Digest " + "a=b, " * 2000,
    ],
)
def test_bad_challenges(value: str) -> None:
    with pytest.raises(ParseError):
        parse_challenge(value)


def test_bad_credentials() -> None:
    with pytest.raises(ParseError):
        parse_credentials('Digest username="a", realm="b", nonce="c", uri="d"')
    with pytest.raises(ParseError):
        parse_credentials(
            'Digest username="a", realm="b", nonce="c", uri="d", response="e", qop=auth'
        )
