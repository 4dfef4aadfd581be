"""SIP messages parsed per second: softswitch's ``sip.parse`` against PyPI SIP parsers.

The same three messages (an INVITE with SDP, a REGISTER with digest credentials, a
200 OK with SDP) are parsed in the same run by every parser installed. Two figures per
parser: "parse" is what its parse call does; "parse+use" also reads what a stack needs
to route the message (top Via branch, From tag, To URI, Call-ID, CSeq, Contact), which
forces parsers that parse header bodies lazily (sippy) to do that work. The ratio column
is the other parser's rate divided by ours (above 1 means it is faster); the last table
is ours divided by the best other parser's (``vs_best_peer`` in the JSON). The parsers
take turns in each of ``--rounds`` rounds and the best round counts, so a slow patch of
a shared machine falls on all of them alike.

    python benchmarks/sip_parse.py [--seconds 0.5] [--rounds 15] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import sip

SDP = (
    "v=0\r\no=- 8000 8000 IN IP4 192.0.2.10\r\ns=Polycom IP Phone\r\nc=IN IP4 192.0.2.10\r\n"
    "t=0 0\r\nm=audio 2222 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\n"
    "a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
    "a=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
)


def _msg(*lines: str, body: str = "") -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n" + body).encode()


MESSAGES: dict[str, bytes] = {
    "INVITE": _msg(
        "INVITE sip:101@pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1a2b3c4d5e;rport",
        'From: "Alice" <sip:100@pbx.example.com>;tag=8a7b6c5d',
        "To: <sip:101@pbx.example.com>",
        "Call-ID: 3f2e1d0c-4b5a-6978-8a9b-0c1d2e3f4a5b@192.0.2.10",
        "CSeq: 1 INVITE",
        "Contact: <sip:100@192.0.2.10:5060;transport=udp>",
        "Max-Forwards: 70",
        "User-Agent: PolycomVVX-VVX_411-UA/6.4.3.5018",
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, MESSAGE, SUBSCRIBE, NOTIFY, PRACK, "
        "UPDATE, REFER",
        "Supported: 100rel, replaces",
        "Content-Type: application/sdp",
        f"Content-Length: {len(SDP)}",
        body=SDP,
    ),
    "REGISTER": _msg(
        "REGISTER sip:pbx.example.com SIP/2.0",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK9f8e7d6c5b;rport",
        "From: <sip:100@pbx.example.com>;tag=1b2c3d4e",
        "To: <sip:100@pbx.example.com>",
        "Call-ID: 7a6b5c4d-3e2f-1a0b-9c8d-7e6f5a4b3c2d@192.0.2.10",
        "CSeq: 2 REGISTER",
        'Contact: <sip:100@192.0.2.10:5060>;expires=3600;+sip.instance="<urn:uuid:00000000>"',
        "Max-Forwards: 70",
        'Authorization: Digest username="100", realm="pbx.example.com", '
        'nonce="AAABjW5xT2gAAAAA3q2-7wAAAAA", uri="sip:pbx.example.com", '
        'response="6629fae49393a05397450978507c4ef1", algorithm=MD5, qop=auth, '
        'nc=00000001, cnonce="0a4f113b"',
        "User-Agent: PolycomVVX-VVX_411-UA/6.4.3.5018",
        "Expires: 3600",
        "Content-Length: 0",
    ),
    "200 OK": _msg(
        "SIP/2.0 200 OK",
        "Via: SIP/2.0/UDP 192.0.2.10:5060;branch=z9hG4bK1a2b3c4d5e;rport=5060;received=192.0.2.10",
        'From: "Alice" <sip:100@pbx.example.com>;tag=8a7b6c5d',
        "To: <sip:101@pbx.example.com>;tag=f0e1d2c3",
        "Call-ID: 3f2e1d0c-4b5a-6978-8a9b-0c1d2e3f4a5b@192.0.2.10",
        "CSeq: 1 INVITE",
        "Contact: <sip:101@192.0.2.11:5060>",
        "Record-Route: <sip:pbx.example.com;lr>",
        "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, REFER",
        "Supported: replaces",
        "Content-Type: application/sdp",
        f"Content-Length: {len(SDP)}",
        body=SDP,
    ),
}

Parser = Callable[[bytes], object]


def ours_parse(data: bytes) -> object:
    return sip.parse(data)


def ours_use(data: bytes) -> object:
    m = sip.parse(data)
    return (m.via[0].branch, m.from_.tag, m.to.uri, m.call_id, m.cseq, m.contact[0].uri)


def _sippy() -> tuple[Parser, Parser] | None:
    try:
        from sippy.SipRequest import SipRequest
        from sippy.SipResponse import SipResponse
    except ImportError:
        return None

    def parse(data: bytes) -> object:
        text = data.decode()
        return SipResponse(text) if text.startswith("SIP/") else SipRequest(text)

    def use(data: bytes) -> object:
        m = parse(data)
        return (
            m.getHFBody("via").getBranch(),  # type: ignore[attr-defined]
            m.getHFBody("from").getTag(),  # type: ignore[attr-defined]
            m.getHFBody("to").getUrl(),  # type: ignore[attr-defined]
            str(m.getHFBody("call-id")),  # type: ignore[attr-defined]
            m.getHFBody("cseq").getCSeq(),  # type: ignore[attr-defined]
            m.getHFBody("contact").getUrl(),  # type: ignore[attr-defined]
        )

    return parse, use


def _pyvoip() -> tuple[Parser, Parser] | None:
    try:
        import pyVoIP.VoIP  # noqa: F401  (pyVoIP.SIP imports cyclically without it)
        from pyVoIP.SIP import SIPMessage
    except ImportError:
        return None

    def parse(data: bytes) -> object:
        return SIPMessage(data)

    def use(data: bytes) -> object:
        m = SIPMessage(data)
        h = m.headers
        return (
            h["Via"][0]["branch"],
            h["From"]["tag"],
            h["To"],
            h["Call-ID"],
            h["CSeq"],
            h.get("Contact"),
        )

    return parse, use


def _loops(fn: Parser, data: bytes, seconds: float) -> int:
    """How many calls of ``fn`` take about ``seconds``."""
    fn(data)
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn(data)
        elapsed = time.perf_counter() - start
        if elapsed > 0.01:
            return max(1, int(n * seconds / elapsed))
        n *= 2


def rates(fns: dict[str, Parser], data: bytes, seconds: float, rounds: int) -> dict[str, float]:
    """Calls per second of each function, best of ``rounds`` interleaved rounds.

    The functions take turns within each round, so a slow patch of the machine (other
    load, frequency changes) falls on all of them alike rather than on one.
    """
    loops = {name: _loops(fn, data, seconds / rounds) for name, fn in fns.items()}
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():
            n = loops[name]
            start = time.perf_counter()
            for _ in range(n):
                fn(data)
            best[name] = min(best[name], (time.perf_counter() - start) / n)
    return {name: 1.0 / per_call for name, per_call in best.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per parser and figure")
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds (best one kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object last")
    args = ap.parse_args()

    parsers: dict[str, tuple[Parser, Parser]] = {"softswitch": (ours_parse, ours_use)}
    others = {"sippy": _sippy(), "pyVoIP": _pyvoip()}
    parsers.update({k: v for k, v in others.items() if v is not None})

    results: list[dict[str, object]] = []
    summary: dict[str, dict[str, float]] = {}
    print(f"SIP parse rate, Python {platform.python_version()} on {platform.machine()}")
    header = (
        f"{'message':9} {'parser':11} {'parse/s':>10} {'ratio':>6} {'parse+use/s':>12} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, data in MESSAGES.items():
        usable: dict[str, tuple[Parser, Parser]] = {}
        for pname, (parse, use) in parsers.items():
            try:
                use(data)
            except Exception as exc:  # a foreign parser that cannot handle the message
                print(f"{name:9} {pname:11} failed: {type(exc).__name__}: {exc}")
                results.append({"message": name, "parser": pname, "error": str(exc)})
                continue
            usable[pname] = (parse, use)
        parse_fns = {p: fns[0] for p, fns in usable.items()}
        use_fns = {p: fns[1] for p, fns in usable.items()}
        parse_rates = rates(parse_fns, data, args.seconds, args.rounds)
        use_rates = rates(use_fns, data, args.seconds, args.rounds)
        base_parse, base_use = parse_rates["softswitch"], use_rates["softswitch"]
        for pname in usable:
            r_parse, r_use = parse_rates[pname], use_rates[pname]
            ratio_parse, ratio_use = r_parse / base_parse, r_use / base_use
            print(
                f"{name:9} {pname:11} {r_parse:10.0f} {ratio_parse:6.2f} "
                f"{r_use:12.0f} {ratio_use:6.2f}"
            )
            results.append(
                {
                    "message": name,
                    "parser": pname,
                    "parse_per_s": round(r_parse),
                    "parse_use_per_s": round(r_use),
                    "ratio_parse": round(ratio_parse, 3),
                    "ratio_use": round(ratio_use, 3),
                }
            )
        peers = [p for p in usable if p != "softswitch"]
        if peers:
            summary[name] = {
                "parse_vs_best_peer": round(base_parse / max(parse_rates[p] for p in peers), 3),
                "parse_use_vs_best_peer": round(base_use / max(use_rates[p] for p in peers), 3),
            }
    print("ratio = rate / softswitch rate for the same message (above 1: faster than ours)")
    print()
    print(f"{'message':9} {'ours / best peer: parse':>24} {'parse+use':>10}")
    for name, row in summary.items():
        print(f"{name:9} {row['parse_vs_best_peer']:24.2f} {row['parse_use_vs_best_peer']:10.2f}")
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": "sip_parse",
                    "python": platform.python_version(),
                    "results": results,
                    "vs_best_peer": summary,
                }
            )
        )


if __name__ == "__main__":
    main()
