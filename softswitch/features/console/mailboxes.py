"""Voicemail messages for the console and the API (the voicemail feature's store)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..voicemail import Message, Voicemail, VoicemailStore

if TYPE_CHECKING:
    from ...services import Services


def mailbox_store(svc: Services) -> VoicemailStore | None:
    feature = svc.registry.feature("voicemail")
    return feature.store if isinstance(feature, Voicemail) else None


def message_file(svc: Services, mailbox: str, message_id: str) -> Message | None:
    """Message ``message_id`` if it is in ``mailbox`` (and its file is there): a message
    is only ever reached through its own mailbox."""
    store = mailbox_store(svc)
    if store is None or len(message_id) > 64:
        return None
    message = store.message(message_id)
    if message is None or message.mailbox != mailbox or not message.path.is_file():
        return None
    return message


def notify(svc: Services, mailbox: str) -> None:
    """The mailbox's phones learn the new count (a message deleted in the console)."""
    feature = svc.registry.feature("voicemail")
    if isinstance(feature, Voicemail) and feature.store is not None:
        svc.spawn(feature.notify(mailbox))
