"""Call flip (RingCentral): ``*N`` during a call moves it to the user's device N.

Each of a user's devices may carry a flip number 1-8 (``[[users.devices]]``): a SIP device
with its own credentials, or an external number rung through the trunk with the user's
permission. Pressing ``*N`` on the device in the call rings device N alone; when it
answers, the other party is re-bridged to it (no re-dial, no gap beyond the re-bridge) and
the first device is released with BYE. If device N does not answer within its
``ring_seconds``, nothing changes. A code with no such device is relayed unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from ..calls import Party
from ..config import Device, User
from ..feature import BaseFeature, InCallHandler, Target

log = logging.getLogger("softswitch")


class CallFlip(BaseFeature):
    name = "call_flip"

    def in_call_codes(self) -> Mapping[str, InCallHandler]:
        if not any(d.flip for u in self.config.users for d in u.devices):
            return {}
        return {f"*{n}": self.pressed for n in range(1, 9)}

    def pressed(self, party: Party, code: str) -> bool:
        user = party.user
        device = self._device(user, int(code[1:])) if user is not None else None
        if user is None or device is None:
            return False  # not a flip of this user's: the keys go to the other party
        if party.device == device.name or party.peer is None:
            return True
        self.services.spawn(self.flip(party, user, device))
        return True

    @staticmethod
    def _device(user: User, flip: int) -> Device | None:
        return next((d for d in user.devices if d.flip == flip), None)

    async def flip(self, party: Party, user: User, device: Device) -> None:
        svc = self.services
        other = party.peer
        if other is None:
            return
        if device.number is not None:
            target = Target("tel", device.number, permission=user.permission)
        else:
            target = Target("device", user.extension, device=device.name)
        log.info("event=flip user=%s from=%s to=%s", user.extension, party.device, device.name)
        result = await svc.ring(other, [target], device.ring_seconds, progress=False)
        if result.outcome != "answered" or result.party is None:
            log.info("event=flip_failed user=%s outcome=%s", user.extension, result.outcome)
            return
        moved = result.party
        if moved.user is None:  # an external device is still this user's
            moved.user = user
        moved.device = device.name
        if party.ended or party.peer is not other:
            await moved.call.hangup()  # the call ended or moved while device N rang
            return
        svc.replace(party, moved)
        log.info("event=flipped user=%s to=%s", user.extension, device.name)
