"""PBX features, one module each, on the plugin seam of :mod:`softswitch.feature`.

``BUILTIN`` is what ``softswitch run`` loads; an embedding program passes its own list
(built-ins plus its modules) to :class:`softswitch.pbx.Pbx` and to ``config.parse``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..feature import FeatureType


def builtin() -> list[FeatureType]:
    from .blocking import Blocking
    from .call_flip import CallFlip
    from .call_waiting import CallWaiting
    from .cdr import CallHistory
    from .conference.service import Conference
    from .console.feature import Console
    from .extensions import Extensions
    from .hold_music import HoldMusicFeature
    from .hot_desk import HotDesk
    from .intercom import Intercom
    from .phones import Phones
    from .pickup import Pickup
    from .presence import Presence
    from .provisioning import Provisioning
    from .queues.feature import Queues
    from .receptionist import Receptionists
    from .recording import CallRecording
    from .ring_groups import RingGroups
    from .session_timers import SessionTimers
    from .transfer import Transfer
    from .trunks import Trunks
    from .voicemail import Voicemail
    from .voicemail_email import VoicemailEmail

    return [
        HoldMusicFeature,
        Blocking,
        Extensions,
        Voicemail,
        VoicemailEmail,
        Conference,
        RingGroups,
        Queues,
        Receptionists,
        CallFlip,
        CallRecording,
        Transfer,
        Trunks,
        SessionTimers,
        Presence,
        Pickup,
        Intercom,
        Phones,
        HotDesk,
        Provisioning,
        CallWaiting,
        CallHistory,
        Console,
    ]


def sections_of(features: Sequence[FeatureType]) -> dict[str, Any]:
    """The config tables the features own, with the type that validates each."""
    return {f.section: f.config_model for f in features if f.section is not None}


def builtin_sections() -> dict[str, Any]:
    return sections_of(builtin())
