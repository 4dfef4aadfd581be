"""What the dashboard shows, as plain data: registrations, calls, conferences, media ticks."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import sip

if TYPE_CHECKING:
    from ...calls import Party
    from ...services import Services


def _who(party: Party) -> dict[str, str]:
    user = party.user
    if user is not None:
        label = f"{user.extension}/{party.device}" if party.device else user.extension
        return {"number": label, "name": user.name}
    remote = party.call.invite.from_ if isinstance(party.call, sip.IncomingCall) else None
    return {"number": party.label, "name": (remote.display or "") if remote else ""}


def snapshot(svc: Services) -> dict[str, Any]:
    """The PBX now. A call's time counts from when its caller's INVITE came; a member of
    a conference is a call too (into the bridge)."""
    now = svc.ua.now()
    wall = time.time()
    registrations = []
    registrar = svc.devices.registrar
    for aor in sorted(registrar.aors()):
        login = aor.removeprefix("sip:").partition("@")[0]
        identity = svc.devices.identity(login)
        for b in registrar.lookup(aor, now):
            registrations.append(
                {
                    "login": login,
                    "name": identity[0].name if identity else "",
                    "source": f"{b.source[1]}:{b.source[2]}",
                    "user_agent": b.user_agent[:60],
                    "expires_in": b.expires_in(now),
                }
            )
    calls = []
    seen: set[int] = set()
    for party in sorted(svc.parties, key=lambda p: p.label):
        if party.ended or id(party) in seen:
            continue
        seen.add(id(party))
        peer = party.peer if party.peer is not None and not party.peer.ended else None
        if peer is not None:
            seen.add(id(peer))
        key = id(party)
        first = min(party.started, peer.started) if peer is not None else party.started
        dialled = party.call.invite.uri.user if isinstance(party.call, sip.IncomingCall) else ""
        calls.append(
            {
                "id": f"{key:x}",
                "from": _who(party),
                "to": _who(peer) if peer is not None else None,
                "dialled": dialled or "",
                "state": "talking" if peer is not None else party.call.state.value,
                "held": party.holding or bool(peer and peer.holding),
                "codec": party.leg.codec.name if party.leg.codec else "",
                "seconds": int(wall - first),
            }
        )
    conferences = []
    feature = svc.registry.feature("conference")
    service = getattr(feature, "service", None)
    for owner, room in sorted((service.rooms if service else {}).items()):
        for leg in (*room.members, *room.waiting):
            invite = leg.call.invite
            calls.append(
                {
                    "id": f"{id(leg):x}",
                    "from": {
                        "number": invite.from_.uri.user or "?",
                        "name": invite.from_.display or "",
                    },
                    "to": {"number": invite.uri.user or "", "name": f"conference {owner}"},
                    "dialled": invite.uri.user or "",
                    "state": "conference" if leg in room.members else "waiting",
                    "held": False,
                    "codec": leg.codec.name if getattr(leg, "codec", None) else "",
                    "seconds": int(wall - leg.started),
                }
            )
        conferences.append(
            {
                "room": owner,
                "members": [
                    (leg.call.invite.from_.uri.user or "?") + (" (host)" if leg.host else "")
                    for leg in room.members
                ],
                "waiting": len(room.waiting),
                "locked": room.locked,
                "recording": room.recorder is not None,
            }
        )
    stats = svc.clock.stats
    return {
        "time": wall,
        "registrations": registrations,
        "calls": calls,
        "conferences": conferences,
        "media": {"ticks": stats.ticks, "late_ticks": stats.late, "skipped_ticks": stats.skipped},
        "counters": dict(svc.counters),
    }
