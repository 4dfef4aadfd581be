"""RTP and RTCP packets (RFC 3550): parse and build, pure.

RTP: version, padding, extension, CSRC list, marker, payload type, 16-bit sequence and
32-bit timestamp (wrap is the receiver's business, see :mod:`rtp.stats`). RTCP: sender
and receiver reports, SDES (CNAME), BYE, and compound packets.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

RTP_VERSION = 2
MAX_PACKET = 1500
_HEADER = struct.Struct("!BBHII")


class PacketError(ValueError):
    """Bytes that are not a valid RTP or RTCP packet."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined id, data: multiple of 4)
    padding: int = 0  # number of padding octets to add (0: none)

    def __bytes__(self) -> bytes:
        if not 0 <= self.payload_type <= 127:
            raise PacketError(f"payload type {self.payload_type} out of range")
        if len(self.csrcs) > 15:
            raise PacketError("more than 15 CSRCs")
        first = (RTP_VERSION << 6) | (0x20 if self.padding else 0) | len(self.csrcs)
        if self.extension is not None:
            first |= 0x10
        out = bytearray(
            _HEADER.pack(
                first,
                (0x80 if self.marker else 0) | self.payload_type,
                self.sequence & 0xFFFF,
                self.timestamp & 0xFFFFFFFF,
                self.ssrc & 0xFFFFFFFF,
            )
        )
        for csrc in self.csrcs:
            out += struct.pack("!I", csrc)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise PacketError("extension data must be a multiple of 4 octets")
            out += struct.pack("!HH", profile, len(data) // 4) + data
        out += self.payload
        if self.padding:
            if not 1 <= self.padding <= 255:
                raise PacketError("padding must be 1..255 octets")
            out += bytes(self.padding - 1) + bytes([self.padding])
        return bytes(out)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse an RTP packet; raises :class:`PacketError` for anything malformed."""
    if len(data) < 12:
        raise PacketError(f"RTP packet of {len(data)} bytes is shorter than its header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != RTP_VERSION:
        raise PacketError(f"RTP version {first >> 6}, expected 2")
    pos = 12
    count = first & 0x0F
    if len(data) < pos + 4 * count:
        raise PacketError("RTP packet truncated in its CSRC list")
    csrcs = struct.unpack_from(f"!{count}I", data, pos) if count else ()
    pos += 4 * count
    extension = None
    if first & 0x10:
        if len(data) < pos + 4:
            raise PacketError("RTP packet truncated in its extension header")
        profile, words = struct.unpack_from("!HH", data, pos)
        pos += 4
        if len(data) < pos + 4 * words:
            raise PacketError("RTP packet truncated in its extension")
        extension = (profile, bytes(data[pos : pos + 4 * words]))
        pos += 4 * words
    end = len(data)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < pos:
            raise PacketError("bad RTP padding length")
        end -= padding
    return RtpPacket(
        second & 0x7F,
        sequence,
        timestamp,
        ssrc,
        bytes(data[pos:end]),
        bool(second & 0x80),
        tuple(csrcs),
        extension,
        padding,
    )


# -- RTCP ----------------------------------------------------------------------------

RTCP_SR, RTCP_RR, RTCP_SDES, RTCP_BYE, RTCP_APP = 200, 201, 202, 203, 204
SDES_CNAME = 1
_REPORT_BLOCK = struct.Struct("!IIIIII")


@dataclass(frozen=True, slots=True)
class ReportBlock:
    """Reception report about one source (RFC 3550 §6.4.1)."""

    ssrc: int
    fraction_lost: int  # fixed point /256
    cumulative_lost: int  # signed 24-bit
    highest_sequence: int  # extended
    jitter: int  # timestamp units
    last_sr: int = 0  # middle 32 bits of the last SR's NTP timestamp
    delay_since_last_sr: int = 0  # 1/65536 s

    def pack(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return _REPORT_BLOCK.pack(
            self.ssrc,
            ((self.fraction_lost & 0xFF) << 24) | lost,
            self.highest_sequence & 0xFFFFFFFF,
            self.jitter & 0xFFFFFFFF,
            self.last_sr & 0xFFFFFFFF,
            self.delay_since_last_sr & 0xFFFFFFFF,
        )

    @classmethod
    def unpack(cls, data: bytes, pos: int) -> ReportBlock:
        ssrc, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack_from(data, pos)
        cumulative = lost & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 0x1000000
        return cls(ssrc, lost >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True, slots=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()


@dataclass(frozen=True, slots=True)
class SourceDescription:
    chunks: tuple[tuple[int, tuple[tuple[int, bytes], ...]], ...]  # (ssrc, ((type, value),))

    def cname(self, ssrc: int) -> str | None:
        for chunk_ssrc, items in self.chunks:
            if chunk_ssrc == ssrc:
                for kind, value in items:
                    if kind == SDES_CNAME:
                        return value.decode("utf-8", "replace")
        return None


@dataclass(frozen=True, slots=True)
class Bye:
    ssrcs: tuple[int, ...]
    reason: str = ""


@dataclass(frozen=True, slots=True)
class UnknownRtcp:
    packet_type: int
    data: bytes


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | UnknownRtcp


def _rtcp_header(count: int, packet_type: int, body: bytes) -> bytes:
    if len(body) % 4:
        raise PacketError("RTCP body must be a multiple of 4 octets")
    return struct.pack("!BBH", (RTP_VERSION << 6) | count, packet_type, len(body) // 4) + body


def build_rtcp(packet: RtcpPacket) -> bytes:
    if isinstance(packet, SenderReport):
        body = struct.pack(
            "!IQIII",
            packet.ssrc,
            packet.ntp_timestamp,
            packet.rtp_timestamp & 0xFFFFFFFF,
            packet.packet_count & 0xFFFFFFFF,
            packet.octet_count & 0xFFFFFFFF,
        )
        body += b"".join(r.pack() for r in packet.reports)
        return _rtcp_header(len(packet.reports), RTCP_SR, body)
    if isinstance(packet, ReceiverReport):
        body = struct.pack("!I", packet.ssrc) + b"".join(r.pack() for r in packet.reports)
        return _rtcp_header(len(packet.reports), RTCP_RR, body)
    if isinstance(packet, SourceDescription):
        body = b""
        for ssrc, items in packet.chunks:
            chunk = struct.pack("!I", ssrc)
            for kind, value in items:
                if len(value) > 255:
                    raise PacketError("SDES item longer than 255 octets")
                chunk += bytes([kind, len(value)]) + value
            chunk += b"\x00" * (4 - len(chunk) % 4)  # null item + pad to 32 bits
            body += chunk
        return _rtcp_header(len(packet.chunks), RTCP_SDES, body)
    if isinstance(packet, Bye):
        body = b"".join(struct.pack("!I", s) for s in packet.ssrcs)
        if packet.reason:
            reason = packet.reason.encode()[:255]
            extra = bytes([len(reason)]) + reason
            body += extra + b"\x00" * (-len(extra) % 4)
        return _rtcp_header(len(packet.ssrcs), RTCP_BYE, body)
    return _rtcp_header(0, packet.packet_type, packet.data)


def report_packets(
    ssrc: int,
    cname: str,
    blocks: tuple[ReportBlock, ...],
    sent: tuple[int, int, int, int] | None,
    *,
    bye: bool = False,
) -> list[RtcpPacket]:
    """One RTCP compound's packets from a sender: an SR once it has sent (``sent``: the
    NTP time, RTP timestamp, packets and octets), else an RR, with ``blocks``; SDES
    CNAME; BYE when it leaves (RFC 3550 §6.1)."""
    report: SenderReport | ReceiverReport
    if sent is not None:
        ntp, timestamp, packets, octets = sent
        report = SenderReport(
            ssrc, ntp, timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF, blocks
        )
    else:
        report = ReceiverReport(ssrc, blocks)
    out: list[RtcpPacket] = [report, SourceDescription(((ssrc, ((1, cname.encode()),)),))]
    if bye:
        out.append(Bye((ssrc,)))
    return out


def build_compound(packets: list[RtcpPacket]) -> bytes:
    return b"".join(build_rtcp(p) for p in packets)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """Parse a compound RTCP packet. Raises :class:`PacketError` if malformed."""
    out: list[RtcpPacket] = []
    pos = 0
    if len(data) < 4:
        raise PacketError("RTCP packet shorter than its header")
    while pos < len(data):
        if len(data) - pos < 4:
            raise PacketError("trailing bytes after RTCP packets")
        first, packet_type, words = struct.unpack_from("!BBH", data, pos)
        if first >> 6 != RTP_VERSION:
            raise PacketError(f"RTCP version {first >> 6}, expected 2")
        end = pos + 4 + 4 * words
        if end > len(data):
            raise PacketError("RTCP packet longer than the datagram")
        count = first & 0x1F
        body = data[pos + 4 : end]
        if first & 0x20 and body:
            body = body[: len(body) - body[-1]]
        out.append(_parse_one(packet_type, count, bytes(body)))
        pos = end
    return out


def _blocks(body: bytes, pos: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < pos + 24 * count:
        raise PacketError("RTCP report truncated in its report blocks")
    return tuple(ReportBlock.unpack(body, pos + 24 * i) for i in range(count))


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket:
    if packet_type == RTCP_SR:
        if len(body) < 24:
            raise PacketError("RTCP SR too short")
        ssrc, ntp, rtp_ts, packets, octets = struct.unpack_from("!IQIII", body)
        return SenderReport(ssrc, ntp, rtp_ts, packets, octets, _blocks(body, 24, count))
    if packet_type == RTCP_RR:
        if len(body) < 4:
            raise PacketError("RTCP RR too short")
        return ReceiverReport(struct.unpack_from("!I", body)[0], _blocks(body, 4, count))
    if packet_type == RTCP_SDES:
        chunks = []
        pos = 0
        for _ in range(count):
            if len(body) < pos + 4:
                raise PacketError("RTCP SDES truncated")
            ssrc = struct.unpack_from("!I", body, pos)[0]
            pos += 4
            items = []
            while pos < len(body) and body[pos] != 0:
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise PacketError("RTCP SDES item truncated")
                kind, length = body[pos], body[pos + 1]
                items.append((kind, body[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            pos += 1
            pos += -pos % 4
            chunks.append((ssrc, tuple(items)))
        return SourceDescription(tuple(chunks))
    if packet_type == RTCP_BYE:
        if len(body) < 4 * count:
            raise PacketError("RTCP BYE truncated")
        ssrcs = struct.unpack_from(f"!{count}I", body)
        reason = ""
        pos = 4 * count
        if pos < len(body):
            length = body[pos]
            reason = body[pos + 1 : pos + 1 + length].decode("utf-8", "replace")
        return Bye(tuple(ssrcs), reason)
    return UnknownRtcp(packet_type, body)


def is_rtcp(data: bytes) -> bool:
    """RTCP packet types 200-204 sit where RTP has marker+payload type (RFC 5761 §4)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


@dataclass
class SequenceWrap:
    """Extends 16-bit sequence numbers to a count that keeps growing across wraps."""

    highest: int | None = None

    def extend(self, sequence: int) -> int:
        if self.highest is None:
            self.highest = sequence
            return sequence
        delta = (sequence - (self.highest & 0xFFFF) + 0x8000) % 0x10000 - 0x8000
        extended = self.highest + delta
        if extended > self.highest:
            self.highest = extended
        return extended
