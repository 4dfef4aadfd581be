"""The conference bridge: codes, rooms, keypad commands and the batched media engine."""
