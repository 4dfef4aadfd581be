"""One conference: members, host, listening modes, lock, entry/exit tones, recording.

What FEATURES.md asks of the keypad, applied to the mixer's talk flags:

- listening mode 1 (``*2`` once): callers muted, each may unmute itself with ``*#6``;
  mode 2 (twice): listen only; mode 3 (three times): callers unmuted. The host always talks
  unless it muted its own line (``*6``).
- lock (``*5``): nobody else may join; again to open.
- entry/exit tones (``*4`` 1..4 times): off, entry only, exit only, both.
- record (``*9``): the room's mix to a WAV file in the data directory; again to stop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from media.audio import Player, Recorder
from media.codecs import CODECS, Encoder
from media.mixer import Mixer, MixOutput
from media.tones import sine_mix

from ...media_engine import PCMA_ID, PCMU_ID, Groups, GroupSource, MediaEngine, MediaLeg, Singles
from ...private_files import private_dir, private_file
from ...prompts import number_names
from .keypad import COMMANDS, Pressed, allowed
from .member import Member

log = logging.getLogger(__name__)
Samples = npt.NDArray[np.int16]


def _beep(freq: float, rate: int) -> Samples:
    """150 ms of ``freq`` and 50 ms of silence, at ``rate``."""
    on = rate * 150 // 1000
    return np.concatenate([sine_mix((freq,), on, rate, -12), np.zeros(on // 3, np.int16)])


ENTRY_TONE, EXIT_TONE = _beep(1400.0, 8000), _beep(700.0, 8000)
TONES = {rate: (_beep(1400.0, rate), _beep(700.0, rate)) for rate in (8000, 16000)}


class Room(GroupSource):
    """A conference: mixed every tick by the media engine (:meth:`mix`), heard by its
    members as a group source (:meth:`payloads`)."""

    def __init__(
        self,
        engine: MediaEngine,
        owner: str,
        *,
        max_legs: int,
        join_before_host: bool,
        end_with_host: bool,
        recordings: Path,
        on_end: Callable[[Room], None] | None = None,
    ) -> None:
        self.engine = engine
        self.owner = owner
        self.max_legs = max_legs
        self.join_before_host = join_before_host
        self.end_with_host = end_with_host
        self.recordings = recordings
        self.mixer = Mixer(max_legs)
        self.members: list[Member] = []
        self.waiting: list[Member] = []
        self.hosts = 0
        self.locked = False
        self.mode = 3
        self.tones = 4
        self.recorder: Recorder | None = None
        self.output: MixOutput | None = None
        self.ended = False
        self.on_end = on_end
        self._overlay: list[tuple[Player, Player]] = []  # (8 kHz, 16 kHz) of one tone
        self._encoders: dict[str, Encoder] = {}
        # members as columns: engine rows and mixer rows (remade when members change)
        self._rows: npt.NDArray[np.int64] | None = None
        self._mrows: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._by_row: dict[int, Member] = {}
        self._mixer_of = np.zeros(0, dtype=np.int64)  # engine row -> mixer row (-1: none)
        engine.add_mixer(self)

    @property
    def size(self) -> int:
        return len(self.members) + len(self.waiting)

    # -- joining and leaving ----------------------------------------------------------------

    def admit(self, leg: Member, *, host: bool) -> str | None:
        """Join ``leg``; returns the prompt that refuses it, or None."""
        if self.ended:
            return "conf-ended"
        if self.locked and not host:
            return "conf-locked"
        if self.size >= self.max_legs:
            return "conf-full"
        leg.host = host
        leg.room = self
        if host or self.hosts or self.join_before_host:
            self._enter(leg)
        else:
            leg.waiting = True
            self.waiting.append(leg)
            leg.hear()
        return None

    def _enter(self, leg: Member) -> None:
        leg.waiting = False
        leg.mixer_row = self.mixer.add(
            talk=self._can_talk(leg), listen=True, wide=leg.rate != self.mixer.rate
        )
        self.members.append(leg)
        self._rows = None
        self.engine.need_audio(leg.leg, True)
        leg.hear()
        if leg.host:
            self.hosts += 1
            waiting, self.waiting = self.waiting, []
            for other in waiting:
                self._enter(other)
        if self.tones in (2, 4):
            self._overlay.append(self._tone(0))
        log.info(
            "event=conference_join room=%s host=%s members=%d",
            self.owner,
            leg.host,
            len(self.members),
        )

    def leave(self, leg: Member) -> None:
        if leg in self.waiting:
            self.waiting.remove(leg)
        if leg in self.members:
            self.members.remove(leg)
            self._rows = None
            self.engine.need_audio(leg.leg, False)
            if leg.mixer_row is not None:
                self.mixer.remove(leg.mixer_row)
            if leg.host:
                self.hosts -= 1
            if self.tones in (3, 4):
                self._overlay.append(self._tone(1))
        leg.room = None
        leg.mixer_row = None
        leg.hear()
        host_gone = leg.host and self.hosts == 0 and self.end_with_host
        if host_gone or (not self.members and not self.waiting):
            self.end()

    @staticmethod
    def _tone(which: int) -> tuple[Player, Player]:
        return (
            Player(TONES[8000][which], 160, loop=False),
            Player(TONES[16000][which], 320, loop=False),
        )

    def end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.engine.remove_mixer(self)
        self.stop_recording()
        if self.on_end is not None:
            self.on_end(self)

    # -- talking ---------------------------------------------------------------------------

    def _can_talk(self, leg: Member) -> bool:
        if leg.self_muted:
            return False
        if leg.host:
            return True
        if self.mode == 2:
            return False
        if self.mode == 1:
            return leg.self_unmuted
        return True

    def refresh_talk(self) -> None:
        for leg in self.members:
            if leg.mixer_row is not None:
                self.mixer.talk[leg.mixer_row] = self._can_talk(leg)

    # -- keypad -----------------------------------------------------------------------------

    def command(self, leg: Member, pressed: Pressed) -> str | None:
        """Apply a keypad command from ``leg``; returns what happened (for logs and tests),
        or None when it was not allowed."""
        command = pressed.command
        if not allowed(command, host=leg.host):
            return None
        name = command.name
        if name == "count":
            n = self.size
            leg.say("conf-there-are", *number_names(n), "conf-participants")
        elif name == "leave":
            return "leave"  # the caller hangs up; the PBX ends the call
        elif name == "menu":
            leg.say("conf-menu")
        elif name == "listen_mode":
            self.mode = min(3, pressed.presses)
            if self.mode == 1:
                for other in self.members:
                    other.self_unmuted = False
            self.refresh_talk()
            leg.say(f"conf-mode-{self.mode}")
        elif name == "mute":
            if not leg.host and self.mode == 2:
                return None  # listen-only: no unmuting
            leg.self_muted = not leg.self_muted
            if not leg.self_muted and self.mode == 1 and not leg.host:
                leg.self_unmuted = True
            self.refresh_talk()
            leg.say("conf-muted" if leg.self_muted else "conf-unmuted")
        elif name == "self_unmute":
            if self.mode != 1:
                return None
            leg.self_unmuted = True
            leg.self_muted = False
            self.refresh_talk()
            leg.say("conf-unmuted")
        elif name == "lock":
            self.locked = not self.locked
            leg.say("conf-lock" if self.locked else "conf-unlock")
        elif name == "tones":
            self.tones = min(4, pressed.presses)
            leg.say("conf-tones")
        elif name == "record":
            if self.recorder is None:
                self.start_recording()
                leg.say("conf-rec-start")
            else:
                self.stop_recording()
                leg.say("conf-rec-stop")
        log.info(
            "event=conference_command room=%s key=%s presses=%d host=%s",
            self.owner,
            command.key,
            pressed.presses,
            leg.host,
        )
        return name

    def start_recording(self) -> Path:
        private_dir(self.recordings)
        path = self.recordings / f"conf-{self.owner}-{time.strftime('%Y%m%d-%H%M%S')}.wav"
        self.recorder = Recorder(private_file(path), 8000)
        log.info("event=conference_recording room=%s file=%s", self.owner, path)
        return path

    def stop_recording(self) -> None:
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None

    # -- media -------------------------------------------------------------------------------

    def _columns(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        if self._rows is None:
            members = [m for m in self.members if m.mixer_row is not None and not m.closed]
            self._rows = np.array([m.row for m in members], dtype=np.int64)
            self._mrows = np.array([m.mixer_row for m in members], dtype=np.int64)
            self._by_row = {m.row: m for m in members}
            self._mixer_of = np.full(self.engine.capacity, -1, dtype=np.int64)
            self._mixer_of[self._rows] = self._mrows
        return self._rows, self._mrows

    def mix(self, tick: int) -> None:
        """This tick's frames of the members into the mixer (one copy per band), then mix."""
        mixer = self.mixer
        rows, mrows = self._columns()
        if len(rows):
            engine = self.engine
            heard = engine.heard[rows]
            wide = mixer.wide[mrows]
            narrow = heard & ~wide
            mixer.inputs[mrows[narrow]] = engine.frames[rows[narrow], :160]
            if (heard & wide).any():
                assert mixer.wide_inputs is not None
                both = heard & wide
                mixer.wide_inputs[mrows[both]] = engine.frames[rows[both], :320]
            mixer.has_input[mrows[heard]] = True
        out = mixer.mix()
        if self._overlay:
            tone = np.zeros(160, np.float32)
            tone_wide = np.zeros(320, np.float32)
            for pair in list(self._overlay):
                tone += pair[0].read()
                tone_wide += pair[1].read()
                if pair[0].done:
                    self._overlay.remove(pair)
            out.full = _clip(out.full + tone)
            if len(out.minus_one):
                out.minus_one = _clip(out.minus_one + tone)
            if out.full_wide is not None:
                out.full_wide = _clip(out.full_wide + tone_wide)
            if out.minus_one_wide is not None and len(out.minus_one_wide):
                out.minus_one_wide = _clip(out.minus_one_wide + tone_wide)
        if self.recorder is not None:
            self.recorder.write(out.full_for(self.recorder.rate))
        self.output = out

    def frame(self, leg: MediaLeg, tick: int) -> Samples | None:
        """What one member hears (the engine asks this only while a key is being played
        to it: otherwise :meth:`payloads` serves every member at once)."""
        member = self._by_row.get(leg.row)
        out = self.output
        if member is None or member.mixer_row is None or out is None:
            return None
        if out.is_talker(member.mixer_row):
            return out.frame_for(member.mixer_row)
        return out.full_for(leg.rate)

    def payloads(
        self, engine: MediaEngine, rows: npt.NDArray[np.int64], tick: int
    ) -> tuple[Groups, Singles]:
        """What the members hearing the room get this tick: groups of rows that get the
        same payload (the shared mix, once per stateless codec) and single rows with
        their own (talkers' N-1, G.722 and Opus encoders)."""
        groups: Groups = []
        singles: Singles = []
        out = self.output
        self._columns()
        if not len(rows) or out is None:
            return groups, singles
        if len(self._mixer_of) < self.engine.capacity:  # the engine's rows grew
            self._rows = None
            self._columns()
        mixer_rows = self._mixer_of[rows]
        known = mixer_rows >= 0
        rows, mixer_rows = rows[known], mixer_rows[known]
        talking = np.zeros(len(rows), dtype=bool)
        if len(out.talkers):  # a mask by mixer row: np.isin sorts both sides every tick
            is_talker = np.zeros(self.mixer.capacity, dtype=bool)
            is_talker[out.talkers] = True
            talking = is_talker[mixer_rows]
        codec = engine.codec_id[rows]
        for cid, name in ((PCMU_ID, "PCMU"), (PCMA_ID, "PCMA")):
            pick = rows[~talking & (codec == cid)]
            if len(pick):
                c = CODECS[name]
                encoder = self._encoders.get(name)
                if encoder is None:
                    encoder = self._encoders[name] = c.encoder()
                groups.append((pick, out.shared_payload(c, encoder, name)))
        alone = talking | ((codec != PCMU_ID) & (codec != PCMA_ID))
        for row in rows[alone].tolist():
            singles.append((row, self.payload_for(self._by_row[row])))
        return groups, singles

    def payload_for(self, member: Member) -> bytes | None:
        out = self.output
        leg = member.leg
        stream = leg.stream
        if out is None or member.mixer_row is None or stream is None:
            return None
        codec = stream.codec
        if out.is_talker(member.mixer_row):
            return stream.encoder.encode(out.frame_for(member.mixer_row))
        if not codec.stateless or stream.samples != leg.rate // 50:
            # G.722 and Opus keep their own encoder: the phone's decoder follows its state,
            # and a talker moving between its N-1 stream and a shared one would be garbled
            return stream.encoder.encode(out.full_for(leg.rate))
        # everyone else of a stateless codec hears the same mix: one encoding per codec
        key = codec.name
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = self._encoders[key] = codec.encoder()
        return out.shared_payload(codec, encoder, key)


def _clip(x: npt.NDArray[np.float32]) -> npt.NDArray[np.int16]:
    return np.asarray(np.clip(x, -32768, 32767), dtype=np.int16)


__all__ = ["COMMANDS", "Room"]
