"""IVR building blocks: digit collection and prompts over a media channel (no SIP here)."""

from .digits import Channel, collect_digits

__all__ = ["Channel", "collect_digits"]
