"""The call limit: at most ``server.max_calls`` calls at once, whatever they are.

A call is what a caller's INVITE starts. With every leg the PBX adds for it (the ringing
forks, the callee, a transfer target, a flipped device) it is one call, whether it is
bridged, in voicemail, in an IVR menu or on the conference bridge. So the PBX admits the
INVITE here, once it is authenticated, and the call counts until its dialog ends;
counting parties instead would count a bridged call twice and miss conference legs (they
leave the core's parties for the bridge's shared port). Beyond the limit the caller gets
503 with ``Retry-After``; the refusal is reported once per burst per source address.
"""

from __future__ import annotations

from collections.abc import Callable

import sip
from rtp.source_policy import BurstGate

RETRY_AFTER = 10  # seconds, in the 503 beyond the limit


class CallLimit:
    def __init__(self, limit: Callable[[], int], *, gap: float = 10.0) -> None:
        """``limit`` is read at each admission (the configuration may be replaced); a
        burst of refusals from one source ends after ``gap`` seconds without one."""
        self._limit = limit
        self.calls: set[sip.Call] = set()
        self.refused = 0
        self._burst = BurstGate(gap)

    def __len__(self) -> int:
        return len(self.calls)

    def admit(self, call: sip.Call) -> bool:
        """Count ``call`` until it ends, if the limit allows it."""
        if len(self.calls) >= self._limit():
            self.refused += 1
            return False
        self.calls.add(call)
        call.on_end.add(self.calls.discard)
        if call.state is sip.CallState.ENDED:  # it ended before it was counted
            self.calls.discard(call)
        return True

    def report(self, source: str, now: float) -> bool:
        """Should the refusal of a call from IP ``source`` be logged (first of a burst)?"""
        return self._burst((source, 0), now)
