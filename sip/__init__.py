"""The SIP stack: messages, URIs, SDP and digest auth (pure), transactions, dialogs,
transports and the asyncio user agent."""

from . import sdes as sdes
from . import webrtc as webrtc
from .auth import (
    AuthResult,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    parse_challenge,
    parse_credentials,
)
from .errors import BindError, ParseError, ResolveError, SipUsageError
from .events import Listeners
from .framing import StreamFramer
from .headers import Contact, CSeq, Headers, NameAddr, Via, parse_name_addr, parse_via
from .message import (
    MAX_MESSAGE_SIZE,
    REASONS,
    Message,
    Request,
    Response,
    make_response,
    parse,
)
from .offer_answer import (
    G722,
    OPUS,
    PCMA,
    PCMU,
    TELEPHONE_EVENT,
    AudioStream,
    Codec,
    answer,
    make_offer,
    process_answer,
)
from .sdes import SrtpKeys
from .sdp import Connection, Media, Origin, SessionDescription, parse_sdp
from .uri import URI, parse_uri

__all__ = [
    "G722",
    "MAX_MESSAGE_SIZE",
    "OPUS",
    "PCMA",
    "PCMU",
    "REASONS",
    "TELEPHONE_EVENT",
    "URI",
    "AudioStream",
    "AuthResult",
    "BindError",
    "CSeq",
    "Challenge",
    "Codec",
    "Connection",
    "Contact",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "Headers",
    "Listeners",
    "Media",
    "Message",
    "NameAddr",
    "Origin",
    "ParseError",
    "Request",
    "ResolveError",
    "Response",
    "SessionDescription",
    "SipUsageError",
    "SrtpKeys",
    "StreamFramer",
    "Via",
    "answer",
    "make_offer",
    "make_response",
    "parse",
    "parse_challenge",
    "parse_credentials",
    "parse_name_addr",
    "parse_sdp",
    "parse_uri",
    "parse_via",
    "process_answer",
]

from .call import Call, CallState, IncomingCall, OutgoingCall, RequestRefused
from .connections import ConnectionLimits, ConnectionTable
from .dialog import Dialog
from .overload import OverloadControl, OverloadSettings
from .registration import Registration, RegistrationFailed
from .security import SecurityLog
from .session_timer import TimerSettings
from .subscription import ServerSubscription, Subscription
from .transaction import Timers
from .ua import IncomingRequest, RequestFailed, UserAgent

__all__ += [
    "Call",
    "CallState",
    "ConnectionLimits",
    "ConnectionTable",
    "Dialog",
    "IncomingCall",
    "IncomingRequest",
    "OutgoingCall",
    "OverloadControl",
    "OverloadSettings",
    "Registration",
    "RegistrationFailed",
    "RequestFailed",
    "RequestRefused",
    "SecurityLog",
    "ServerSubscription",
    "Subscription",
    "TimerSettings",
    "Timers",
    "UserAgent",
]
