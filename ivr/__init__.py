"""IVR building blocks: digit collection, auto-attendant menus (a pure state machine and
its asyncio runner) and text-to-speech prompts, over a media channel (no SIP here)."""

from .digits import Channel, collect_digits
from .menu import (
    Announce,
    Connect,
    DialByName,
    End,
    Entry,
    Hangup,
    Menu,
    MenuMachine,
    Prompt,
    Repeat,
    SubMenu,
    Transfer,
    keypad_digits,
)
from .runner import PromptChannel, run_menu
from .tts import Speech, SpeechError

__all__ = [
    "Announce",
    "Channel",
    "Connect",
    "DialByName",
    "End",
    "Entry",
    "Hangup",
    "Menu",
    "MenuMachine",
    "Prompt",
    "PromptChannel",
    "Repeat",
    "Speech",
    "SpeechError",
    "SubMenu",
    "Transfer",
    "collect_digits",
    "keypad_digits",
    "run_menu",
]
