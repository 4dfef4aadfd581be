"""RFC 4235 dialog-info documents, pure: dialog views in, ``application/dialog-info+xml`` out.

A view is one INVITE dialog of the monitored user as its own phone sees it (so the local
tag is the phone's tag); the document is the full list (``state="full"``) or the dialogs
that changed since the last NOTIFY (``state="partial"``), each NOTIFY one version higher.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"
STATES = ("trying", "proceeding", "early", "confirmed", "terminated")


@dataclass(frozen=True, slots=True)
class Participant:
    identity: str  # a URI
    display: str | None = None
    target: str | None = None  # the contact URI


@dataclass(frozen=True, slots=True)
class DialogView:
    id: str
    state: str  # one of STATES
    direction: str  # "initiator" (the user called) or "recipient" (the user is called)
    call_id: str | None = None
    local_tag: str | None = None
    remote_tag: str | None = None
    local: Participant | None = None
    remote: Participant | None = None
    duration: int | None = None  # seconds since confirmed

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"dialog state {self.state!r} is not one of {STATES}")
        if self.direction not in ("initiator", "recipient"):
            raise ValueError(f"dialog direction {self.direction!r}")


def _participant(parent: ET.Element, name: str, who: Participant) -> None:
    element = ET.SubElement(parent, name)
    identity = ET.SubElement(element, "identity")
    identity.text = who.identity
    if who.display:
        identity.set("display-name", who.display)
    if who.target:
        ET.SubElement(element, "target", {"uri": who.target})


def render(entity: str, version: int, dialogs: list[DialogView], *, full: bool) -> bytes:
    """The document for ``entity`` (the monitored AOR)."""
    root = ET.Element(
        "dialog-info",
        {
            "xmlns": NAMESPACE,
            "version": str(version),
            "state": "full" if full else "partial",
            "entity": entity,
        },
    )
    for view in dialogs:
        attributes = {"id": view.id, "direction": view.direction}
        if view.call_id is not None:
            attributes["call-id"] = view.call_id
        if view.local_tag is not None:
            attributes["local-tag"] = view.local_tag
        if view.remote_tag is not None:
            attributes["remote-tag"] = view.remote_tag
        dialog = ET.SubElement(root, "dialog", attributes)
        state = ET.SubElement(dialog, "state")
        state.text = view.state
        if view.duration is not None:
            ET.SubElement(dialog, "duration").text = str(view.duration)
        if view.local is not None:
            _participant(dialog, "local", view.local)
        if view.remote is not None:
            _participant(dialog, "remote", view.remote)
    return (
        b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode").encode()
    )
