#!/usr/bin/env python3
"""Regenerate the built-in voice prompts (softswitch/sounds/*.flac) with espeak-ng, sox.

The files are committed (FLAC: half the size of WAV): the daemon needs neither tool at
run time. 8 kHz, 16-bit mono.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "softswitch" / "sounds"

PROMPTS = {
    "vm-greeting": "The person you are calling is not available. "
    "Please leave a message after the tone. Hang up or press pound when you are done.",
    "vm-enter-pin": "Please enter your PIN, followed by the pound key.",
    "vm-enter-mailbox": "Please enter your mailbox number, followed by the pound key.",
    "vm-incorrect": "That PIN is incorrect.",
    "vm-you-have": "You have",
    "vm-new-messages": "new messages.",
    "vm-new-message": "new message.",
    "vm-no-messages": "You have no messages.",
    "vm-message-menu": "Press 7 to delete this message, 9 to keep it, or 1 to hear it again.",
    "vm-deleted": "Message deleted.",
    "vm-saved": "Message saved.",
    "vm-no-more": "There are no more messages.",
    "vm-full": "This mailbox is full.",
    "goodbye": "Goodbye.",
    "connecting": "Please hold while I try to connect you.",
    "unavailable": "The number you have dialed is not available.",
    "not-allowed": "You are not allowed to call this number.",
    "hotdesk-extension": "Hot desk. Please enter your extension, followed by the pound key.",
    "hotdesk-in": "You are logged in on this phone.",
    "hotdesk-out": "You are logged out of this phone.",
    "conf-enter-code": "Please enter your conference code, followed by the pound key.",
    "conf-invalid": "That code is not valid.",
    "conf-wait-host": "Please wait for the host to join the conference.",
    "conf-locked": "This conference is locked.",
    "conf-full": "This conference is full.",
    "conf-there-are": "There are",
    "conf-participants": "participants in the conference.",
    "conf-muted": "You are muted.",
    "conf-unmuted": "You are unmuted.",
    "conf-mode-1": "All callers are muted. Press star pound 6 to unmute yourself.",
    "conf-mode-2": "Listen only mode.",
    "conf-mode-3": "All callers are unmuted.",
    "conf-lock": "The conference is now locked.",
    "conf-unlock": "The conference is now unlocked.",
    "conf-rec-start": "Recording started.",
    "conf-rec-stop": "Recording stopped.",
    "conf-tones": "Entry and exit tones changed.",
    "conf-ended": "The conference has ended.",
    "conf-menu": "Star 0, caller count. Star 1, leave. Star 6, mute or unmute. "
    "Star 2, listening mode. Star 5, lock. Star 9, record. Star 4, entry and exit tones.",
    **{
        f"num-{n}": word
        for n, word in enumerate(
            [
                "zero",
                "one",
                "two",
                "three",
                "four",
                "five",
                "six",
                "seven",
                "eight",
                "nine",
                "ten",
                "eleven",
                "twelve",
                "thirteen",
                "fourteen",
                "fifteen",
                "sixteen",
                "seventeen",
                "eighteen",
                "nineteen",
                "twenty",
            ]
        )
    },
}


def main(names: list[str]) -> None:
    """Every prompt, or only those named on the command line."""
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = {n: t for n, t in PROMPTS.items() if not names or n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in chosen.items():
            raw = Path(tmp) / f"{name}.wav"
            subprocess.run(
                ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), text], check=True
            )
            subprocess.run(
                [
                    "sox",
                    str(raw),
                    "-r",
                    "8000",
                    "-c",
                    "1",
                    "-b",
                    "16",
                    str(OUT / f"{name}.flac"),
                    "norm",
                    "-6",
                ],
                check=True,
            )
    print(f"{len(chosen)} prompts in {OUT}", file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])
