"""Voicemail messages for the console and the API (the voicemail feature's store, opened
in the web process by :mod:`.web`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..voicemail import Message, Voicemail, VoicemailStore

if TYPE_CHECKING:
    from ...web.child import WebServices


def mailbox_store(svc: WebServices) -> VoicemailStore | None:
    feature = svc.registry.feature("voicemail")
    return feature.store if isinstance(feature, Voicemail) else None


def message_file(svc: WebServices, mailbox: str, message_id: str) -> Message | None:
    """Message ``message_id`` if it is in ``mailbox`` (and its file is there): a message
    is only ever reached through its own mailbox."""
    store = mailbox_store(svc)
    if store is None or len(message_id) > 64:
        return None
    message = store.message(message_id)
    if message is None or message.mailbox != mailbox or not message.path.is_file():
        return None
    return message


def notify(svc: WebServices, mailbox: str) -> None:
    """The mailbox's phones learn the new count (a message deleted in the console): the
    daemon sends the NOTIFYs (``console.mwi``)."""
    svc.spawn(svc.call("console.mwi", mailbox=mailbox))
