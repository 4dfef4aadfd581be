"""Call queues with SIP software this project did not write: two SIPp callers from a
provider's trunk and a baresip caller queue on a rotating queue served by two baresip
agents (a third member refuses queue calls by Do-Not-Disturb); the third caller hears its
position, then gets the first agent free after its wrap-up; a caller who waits too long
lands in the queue's mailbox; agents log in and out with the feature codes.

SIPp echoes the RTP it receives (``-rtp_echo``): an agent that hears its own tone heard it
through the PBX, SIPp, and the PBX again — both directions of the bridge at once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from media.audio import load_audio
from media.tones import sine_mix
from softswitch.features.voicemail import VoicemailStore
from softswitch.media_engine import prompt_path

from .audio import active, best_correlation, dominant_frequency
from .baresip import Phone
from .netutil import free_port
from .office import Office, segment, started, stop_all
from .test_sipp import SCENARIOS, counts, run_sipp

pytestmark = pytest.mark.interop

TRUNK_IP = "127.0.0.4"
WRAP_UP = 2.0
OFFICE = f"""
[[trunks]]
name = "provider"
proxy = "sip:127.0.0.1:9"
addresses = ["{TRUNK_IP}"]
inbound_extension = "700"

[[queues]]
extension = "700"
name = "Support"
members = ["100", "101", "102"]
strategy = "rotating"
ring_seconds = 8
wrap_up_seconds = {int(WRAP_UP)}
greeting = ""
announce_position_seconds = 20

[[queues]]
extension = "701"
name = "Night line"
members = ["101"]
max_wait_seconds = 3
overflow = "voicemail:709"
greeting = ""
announce_position_seconds = 0

[[users]]
extension = "709"
name = "Support mailbox"
password = "mailbox709"
pin = "1709"
kind = "virtual"
greeting = "GREETING"
"""


def recordings(phone: Phone) -> list[Path]:
    """The phone's recordings of received audio, one per call, oldest first."""
    return sorted(phone.records.glob("*-dec.wav"), key=lambda p: p.stat().st_mtime)


def tone_of(path: Path, start: float, end: float | None = None) -> float:
    audio, rate = segment(path, start, end)
    return dominant_frequency(active(audio), rate)


async def test_a_queue_with_sipp_callers_and_baresip_agents(tmp_path: Path) -> None:
    greeting = tmp_path / "mailbox-greeting.wav"  # short: the test waits through it
    soundfile.write(greeting, sine_mix((440.0,), 4000, 8000, -12), 8000, subtype="PCM_16")
    extra = OFFICE.replace("GREETING", str(greeting))
    office = Office(tmp_path, extra=extra, user_extra={"102": 'dnd = "no_queue"'})
    office.start()
    alice = office.phone("alice", "100", 600.0)
    bob = office.phone("bob", "101", 700.0)
    carol = office.phone("carol", "102", 1200.0)
    dave = office.phone("dave", "103", 900.0)
    await started(alice, bob, carol, dave)
    try:
        scenario = tmp_path / "queue_caller.xml"
        scenario.write_text((SCENARIOS / "queue_caller.xml").read_text().replace("NUMBER", "700"))
        args = [f"127.0.0.1:{office.port}", "-sf", str(scenario), "-m", "2", "-r", "5"]
        args += ["-i", TRUNK_IP, "-p", str(free_port(host=TRUNK_IP)), "-rtp_echo"]
        args += ["-mp", str(free_port(host=TRUNK_IP))]
        sipp = asyncio.ensure_future(asyncio.to_thread(run_sipp, args))
        # the two SIPp callers: one agent each (rotating), never Carol (no queue calls)
        await alice.wait_event("CALL_ESTABLISHED")
        await bob.wait_event("CALL_ESTABLISHED")

        # Dave queues third: both agents talk, he hears his position over the music
        await dave.command("dial", f"sip:700@127.0.0.1:{office.port}")
        await dave.wait_event("CALL_ESTABLISHED")
        await asyncio.sleep(3.5)
        assert len(alice.seen("CALL_ESTABLISHED")) == 1 == len(bob.seen("CALL_ESTABLISHED"))

        # Alice hangs up: after her wrap-up Dave is offered to her (Bob still talks)
        await alice.command("hangup")
        free = time.monotonic()
        answered = await alice.wait_event("CALL_ESTABLISHED", 2, 15)
        assert answered["at"] - free >= WRAP_UP - 0.1
        await asyncio.sleep(2.5)
        await alice.command("hangup")
        await bob.command("hangup")
        result = await sipp
        assert result.returncode == 0 and counts(result.stdout) == (2, 0), result.stdout[-1500:]
        await dave.wait_event("CALL_CLOSED")

        # tones both ways: each agent heard its own tone come back from its SIPp caller
        for agent, hz in ((alice, 600.0), (bob, 700.0)):
            assert abs(tone_of(recordings(agent)[0], 1.0, 3.0) - hz) < 25, agent.name
        # Dave heard "you are caller number one" first (the rendered prompt, matched)
        heard, rate = segment(recordings(dave)[0], 0.0, 3.5)
        said = np.concatenate(
            [load_audio(prompt_path(name), rate) for name in ("queue-caller-number", "num-1")]
        )
        assert best_correlation(heard, said) > 0.7
        # then Alice and Dave heard each other
        assert abs(tone_of(recordings(alice)[1], 0.5, 2.0) - 900.0) < 25
        assert abs(tail_tone(recordings(dave)[0], 2.0) - 600.0) < 25, "Dave heard no agent"
        assert not carol.seen("CALL_ESTABLISHED")  # refuses queue calls...
        await dave.command("dial", f"sip:102@127.0.0.1:{office.port}")
        await carol.wait_event("CALL_ESTABLISHED")  # ...but not her direct calls
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED", 2)

        # Bob logs out (*46): the night line has nobody, its caller waits 3 s and leaves
        # a message in the queue's mailbox
        await bob.command("dial", f"sip:*46@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_CLOSED", 2)
        await dave.command("dial", f"sip:701@127.0.0.1:{office.port}")
        await dave.wait_event("CALL_ESTABLISHED", 3)
        await asyncio.sleep(3.0 + 3.0)  # the wait, the greeting (0.5 s), then some words
        await dave.command("hangup")
        await dave.wait_event("CALL_CLOSED", 3)
        # Bob's calls: the SIPp caller and *46 (logged out: not offered the night line)
        assert len(bob.seen("CALL_ESTABLISHED")) == 2
        store = VoicemailStore(office.data_dir)
        try:
            for _ in range(50):
                if store.messages("709"):
                    break
                await asyncio.sleep(0.1)
            assert len(store.messages("709")) == 1
        finally:
            store.close()
        # Bob logs in (*45): the next caller rings him
        await bob.command("dial", f"sip:*45@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_CLOSED", 3)
        await dave.command("dial", f"sip:701@127.0.0.1:{office.port}")
        await bob.wait_event("CALL_ESTABLISHED", 4)
        await dave.command("hangup")
    finally:
        await stop_all(alice, bob, carol, dave)
        office.stop()


def tail_tone(path: Path, seconds: float) -> float:
    """The tone of the last ``seconds`` of a recording (a queue caller's: the part after
    an agent answered is at its end, after the music)."""
    audio, rate = segment(path, 0.0)
    return dominant_frequency(active(audio[-int(seconds * rate) :]), rate)
