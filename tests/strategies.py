"""Hypothesis strategies for SIP values."""

from __future__ import annotations

from hypothesis import strategies as st

import sip
from sip.headers import Headers, NameAddr, Via
from sip.uri import URI

TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(TOKEN_ALPHABET, min_size=1, max_size=12)
lower_tokens = st.text("abcdefghijklmnopqrstuvwxyz0123456789-._", min_size=1, max_size=10)
# any text without CR/LF/surrogates: URI components are escaped on output
free_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=16
)

labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostnames = st.lists(labels, min_size=1, max_size=4).map(".".join)
ipv4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda t: ".".join(map(str, t)))
ipv6 = st.ip_addresses(v=6).map(lambda a: f"[{a}]")
hosts = st.one_of(hostnames, ipv4, ipv6)
ports = st.none() | st.integers(1, 65535)
param_dicts = st.dictionaries(lower_tokens, st.none() | free_text, max_size=4)


@st.composite
def sip_uris(draw: st.DrawFn) -> URI:
    user = draw(st.none() | free_text.filter(bool))
    password = draw(st.none() | free_text) if user is not None else None
    headers = draw(
        st.dictionaries(st.text(TOKEN_ALPHABET, min_size=1, max_size=8), free_text, max_size=2)
    )
    return URI(
        draw(st.sampled_from(["sip", "sips"])),
        user,
        password,
        draw(hosts),
        draw(ports),
        draw(param_dicts),
        headers,
    )


tel_uris = st.builds(
    lambda n, p: URI("tel", user=n, params=p),
    st.from_regex(r"\+?[0-9][0-9().-]{0,14}", fullmatch=True),
    st.dictionaries(
        lower_tokens, st.none() | st.text("abc0123-+", min_size=1, max_size=6), max_size=2
    ),
)
uris = st.one_of(sip_uris(), tel_uris)
display_names = st.none() | st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"), max_size=20
)
# header parameter values as they go on the wire: tokens or quoted strings
header_param_values = st.none() | tokens | free_text.map(sip.grammar.quote)
header_params = st.dictionaries(
    lower_tokens.filter(lambda s: s not in ("expires", "q")), header_param_values, max_size=3
)


@st.composite
def name_addrs(draw: st.DrawFn) -> NameAddr:
    uri = draw(uris)
    return NameAddr(uri, draw(display_names), draw(header_params))


@st.composite
def vias(draw: st.DrawFn) -> Via:
    params = draw(
        st.dictionaries(
            lower_tokens.filter(lambda s: s not in ("rport", "ttl")), st.none() | tokens, max_size=3
        )
    )
    params = {"branch": "z9hG4bK" + draw(tokens), **params}
    return Via(
        draw(st.sampled_from(["UDP", "TCP", "TLS", "SCTP", "WS"])), draw(hosts), draw(ports), params
    )


call_ids = st.tuples(
    st.text(TOKEN_ALPHABET + '()<>:\\"/[]?{}', min_size=1, max_size=16),
    st.none() | st.text(TOKEN_ALPHABET, min_size=1, max_size=10),
).map(lambda t: t[0] if t[1] is None else f"{t[0]}@{t[1]}")
ext_values = st.text(
    st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\r\n"), max_size=40
).map(str.strip)


@st.composite
def messages(draw: st.DrawFn) -> sip.Request | sip.Response:
    headers = Headers()
    for via in draw(st.lists(vias(), min_size=1, max_size=3)):
        headers.add("Via", via)
    headers.add("From", draw(name_addrs()))
    headers.add("To", draw(name_addrs()))
    headers.add("Call-ID", draw(call_ids))
    method = draw(st.sampled_from(["INVITE", "ACK", "BYE", "REGISTER", "OPTIONS"]) | tokens)
    headers.add("CSeq", sip.CSeq(draw(st.integers(0, 2**31 - 1)), method))
    headers.add("Max-Forwards", draw(st.integers(0, 255)))
    for name, value in draw(
        st.lists(st.tuples(tokens.map(lambda t: "X-" + t), ext_values), max_size=4)
    ):
        headers.add(name, value)
    body = draw(st.binary(max_size=64))
    if draw(st.booleans()):
        uri = draw(sip_uris()).copy(headers={})
        return sip.Request(method, uri, headers, body)
    reason = draw(st.text(st.characters(exclude_categories=["Cs", "Cc"]), max_size=20))
    return sip.Response(draw(st.integers(100, 699)), reason, headers, body)
