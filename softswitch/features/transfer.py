"""Call transfer by REFER (RFC 3515): blind, and attended with Replaces (RFC 3891).

Blind: the transferee hears ringback (or music, ``features.transfer_audio``) while the
target is dialled through the dialplan, so a transfer follows the target's own rules: an
unregistered extension's unreachable rule, a ring group, voicemail. When nothing takes
the call it goes back to the transferor. Attended: the transferor's two calls are joined
(our peer with the peer of its other call) and the transferor is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping

import sip

from ..calls import Party, refresh_media, sipfrag, unbridge
from ..feature import BaseFeature, Dial, Failed, InDialogHandler

log = logging.getLogger("softswitch")


class Transfer(BaseFeature):
    name = "transfer"

    def in_dialog(self) -> Mapping[str, InDialogHandler]:
        return {"REFER": self.on_refer}

    def on_refer(self, party: Party, incoming: sip.IncomingRequest) -> None:
        refer_to = incoming.request.headers.get("Refer-To")
        transferee = party.peer
        if refer_to is None or transferee is None:
            incoming.respond(400 if refer_to is None else 603)
            return
        try:
            target = sip.parse_name_addr(refer_to, "Refer-To").uri
        except sip.ParseError as exc:
            incoming.respond(400, f"Bad Request ({exc})")
            return
        incoming.respond(202)
        replaces = next((v for k, v in target.headers.items() if k.lower() == "replaces"), None)
        if replaces is not None:
            self.services.spawn(self.attended(party, transferee, replaces))
        else:
            self.services.spawn(self.blind(party, transferee, target))

    async def _notify(self, party: Party, status: int, *, final: bool) -> None:
        if party.ended:
            return
        with contextlib.suppress(Exception):
            await party.call.notify_refer(sipfrag(status), final=final)

    async def blind(self, transferor: Party, transferee: Party, target: sip.URI) -> None:
        svc = self.services
        await self._notify(transferor, 100, final=False)
        number = target.user or ""
        log.info(
            "event=blind_transfer by=%s moving=%s to=%s",
            transferor.label,
            transferee.label,
            number,
        )
        unbridge(transferor)
        transferee.holding = False
        if self.config.features.transfer_audio == "music" and svc.music is not None:
            transferee.leg.source = svc.music_for(transferor)
        else:
            transferee.leg.source = svc.ringback()
        taken = asyncio.Event()

        def took() -> None:
            taken.set()
            # the transferee was answered long ago: this is when the target took it (the
            # call history's answer time for the transferred conversation)
            svc.emit("answered", transferee)

        transferee.on_taken.append(took)
        dial = Dial(transferee, number, transferor.user, on_behalf=transferor.user, depth=1)
        routing = asyncio.ensure_future(svc.dial(dial))
        waiting = asyncio.ensure_future(taken.wait())
        await asyncio.wait({routing, waiting}, return_when=asyncio.FIRST_COMPLETED)
        waiting.cancel()
        if taken.is_set():  # answered by the target, or by an application (voicemail)
            await self._notify(transferor, 200, final=True)
            await transferor.call.hangup()
            await svc.finish(transferee, await routing)
            return
        outcome = routing.result()
        if not isinstance(outcome, Failed):  # e.g. the transferee hung up meanwhile
            await svc.finish(transferee, outcome)
            return
        await self._notify(transferor, outcome.status, final=True)
        if not transferor.ended and not transferee.ended:
            svc.bridge(transferor, transferee)  # the transfer failed: back to the transferor
        elif not transferee.ended:
            await transferee.call.hangup()

    async def attended(self, transferor: Party, transferee: Party, replaces: str) -> None:
        """Refer-To: <target?Replaces=call-id;to-tag=..;from-tag=..>: connect our peer
        with the peer of the transferor's other call (RFC 3891 §3 via RFC 3515)."""
        svc = self.services
        call_id, _, params = replaces.partition(";")
        tags = dict(p.partition("=")[::2] for p in params.split(";") if p)
        other = next(
            (
                p
                for p in svc.parties
                if p.call.call_id == call_id
                and p.call.dialog is not None
                and {p.call.dialog.local_tag, p.call.dialog.remote_tag}
                == {tags.get("to-tag"), tags.get("from-tag")}
            ),
            None,
        )
        if other is None or other.peer is None:
            await self._notify(transferor, 481, final=True)
            return
        target = other.peer
        log.info(
            "event=attended_transfer by=%s moving=%s to=%s",
            transferor.label,
            transferee.label,
            target.label,
        )
        unbridge(transferor)
        unbridge(other)
        transferee.holding = target.holding = False
        svc.bridge(transferee, target)
        refresh_media(transferee)
        await self._notify(transferor, 200, final=True)
        await transferor.call.hangup()
        await other.call.hangup()
