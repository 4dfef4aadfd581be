"""Write RTP streams as pcap files (Ethernet/IPv4/UDP), the input SIPp's
``play_pcap_audio`` replays."""

from __future__ import annotations

import struct
from pathlib import Path

from rtp import RtpPacket


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_rtp_pcap(
    path: Path,
    payloads: list[bytes],
    payload_type: int,
    ptime_ms: int = 20,
    samples: int = 160,
    ssrc: int = 0x1234ABCD,
) -> None:
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    for i, payload in enumerate(payloads):
        rtp = bytes(RtpPacket(payload_type, i, i * samples, ssrc, payload, marker=(i == 0)))
        udp = struct.pack("!HHHH", 6000, 6002, 8 + len(rtp), 0) + rtp
        ip = bytearray(
            struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0, src, dst)
        )
        ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
        frame = b"\x00\x11\x22\x33\x44\x55\x66\x77\x88\x99\xaa\xbb\x08\x00" + bytes(ip) + udp
        usec = i * ptime_ms * 1000
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
