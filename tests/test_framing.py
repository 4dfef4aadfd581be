from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import sip
from sip import ParseError, StreamFramer

from . import torture
from .test_message import INVITE

OPTIONS = torture.LWSDISP


@given(st.lists(st.integers(1, 200), min_size=1, max_size=40))
def test_any_chunking_yields_the_same_messages(cuts: list[int]) -> None:
    stream = b"\r\n\r\n" + INVITE + OPTIONS + b"\r\n" + INVITE
    framer = StreamFramer()
    out: list[bytes] = []
    pos = 0
    for cut in cuts:
        out += framer.feed(stream[pos : pos + cut])
        pos += cut
    out += framer.feed(stream[pos:])
    assert out == [INVITE, OPTIONS, INVITE]
    assert framer.pings == 1
    assert framer.buffered == 0
    assert [sip.parse(m).cseq.method for m in out] == ["INVITE", "OPTIONS", "INVITE"]


def test_compact_content_length_and_missing_length() -> None:
    framer = StreamFramer()
    assert framer.feed(OPTIONS) == [OPTIONS]  # "l: 0"
    no_length = OPTIONS.replace(b"l: 0\r\n", b"")
    assert framer.feed(no_length + OPTIONS) == [no_length, OPTIONS]


def test_bounds() -> None:
    framer = StreamFramer(max_message=1000)
    with pytest.raises(ParseError):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nX: " + b"a" * 2000)
    framer = StreamFramer(max_message=1000)
    with pytest.raises(ParseError):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\nContent-Length: 5000\r\n\r\n")
    framer = StreamFramer()
    with pytest.raises(ParseError):
        framer.feed(b"OPTIONS sip:a@b SIP/2.0\r\nContent-Length: 1\r\nl: 2\r\n\r\nab")
