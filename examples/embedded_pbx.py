"""The PBX inside your own asyncio program, with a feature of your own.

    python examples/embedded_pbx.py --listen 127.0.0.1:5070 --data-dir /tmp/pbx-data

The configuration is built in Python (the embedded demo office, plus a ring group), the
:class:`~softswitch.pbx.Pbx` gets the built-in features and ``CallLog``, a feature that
only listens to call events and prints one line per answered call and per hang-up. The
program runs until Ctrl-C (or ``--seconds``), then stops the PBX cleanly: calls get BYE,
features stop, the data directory is flushed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Iterable
from pathlib import Path

from softswitch import config as cfg
from softswitch.calls import Party
from softswitch.feature import BaseFeature, CallListener
from softswitch.features import builtin
from softswitch.pbx import Pbx


class CallLog(BaseFeature, CallListener):
    """Prints who answered and who hung up (a feature with listeners and nothing else)."""

    name = "call_log"

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    def answered(self, party: Party) -> None:
        print(f"answered: {party.label}", flush=True)

    def ended(self, party: Party) -> None:
        print(f"ended: {party.label} ({party.call.end_reason})", flush=True)


def office(listen: str, data_dir: Path) -> cfg.Config:
    """The demo office on ``listen``, with a ring group 600 for 101 and 102."""
    text = cfg.DEMO + (
        '\n[[ring_groups]]\nextension = "600"\nname = "Sales"\n'
        'steps = [ { targets = ["101", "102"], ring_seconds = 20 } ]\nno_answer = "voicemail:101"\n'
    )
    config = cfg.parse(text, "<embedded_pbx.py>")
    server = config.server.model_copy(
        update={"listen": [f"udp:{listen}", f"tcp:{listen}"], "data_dir": data_dir}
    )
    return config.model_copy(update={"server": server})


async def main(listen: str, data_dir: Path, seconds: float | None) -> None:
    pbx = Pbx(office(listen, data_dir), features=[*builtin(), CallLog])
    await pbx.start()
    print(f"embedded PBX ready on {listen}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
    await pbx.stop()
    print(f"stopped; counters: {pbx.stats['calls']} calls", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen", default="127.0.0.1:5070")
    parser.add_argument("--data-dir", type=Path, default=Path("data-embedded"))
    parser.add_argument("--seconds", type=float, help="stop after this long")
    args = parser.parse_args()
    asyncio.run(main(args.listen, args.data_dir, args.seconds))
