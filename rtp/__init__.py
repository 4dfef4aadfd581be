"""RTP/RTCP (RFC 3550): packets, statistics, jitter buffer, RFC 4733 events, sessions."""

from .dtmf import DtmfReceiver, DtmfSender, TelephoneEvent, parse_event
from .jitter import JitterBuffer, Status
from .packet import (
    Bye,
    PacketError,
    ReceiverReport,
    ReportBlock,
    RtpPacket,
    SenderReport,
    SourceDescription,
    build_compound,
    build_rtcp,
    parse_rtcp,
    parse_rtp,
)
from .session import PortAllocator, Session
from .source_policy import SourceCounters, SourcePolicy, Verdict
from .stats import ReceiverStats, rtcp_interval

__all__ = [
    "Bye",
    "DtmfReceiver",
    "DtmfSender",
    "JitterBuffer",
    "PacketError",
    "PortAllocator",
    "ReceiverReport",
    "ReceiverStats",
    "ReportBlock",
    "RtpPacket",
    "SenderReport",
    "Session",
    "SourceCounters",
    "SourceDescription",
    "SourcePolicy",
    "Status",
    "TelephoneEvent",
    "Verdict",
    "build_compound",
    "build_rtcp",
    "parse_event",
    "parse_rtcp",
    "parse_rtp",
    "rtcp_interval",
]
