"""The file behind the running configuration: read, checked, written back, applied live.

One path serves the web console's edits and ``softswitch reload`` (or SIGHUP) after a
hand edit: the text is validated exactly as at start (the pydantic models, the audio
files, every destination resolved by building the feature registry), and only then is it
written (atomically: a temporary file renamed over the old one, the previous version kept
as ``office.toml.prev``) and applied to the running PBX (:meth:`softswitch.pbx.Pbx.apply`),
whose calls go on. Text that does not validate raises :class:`~softswitch.config.ConfigError`
naming the key, and neither the file nor the running configuration changes.

Options given on the command line (``--listen``, ``--data-dir``, ``--console-listen``)
override the file at every load, so an edit never writes them into it.

The embedded demo's edits are saved in its data directory (``DATA/office.toml``) with
``data_dir = "."``: relative to the file, the directory the file is in, so the saved file
names its data directory wherever it is read from (``softswitch status --config
data/office.toml``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from . import config as cfg
from .feature import FeatureType

PREVIOUS_SUFFIX = ".prev"
MAX_CONFIG_BYTES = 1024 * 1024  # a configuration file larger than this is refused


@dataclass
class ConfigFile:
    """``path``: the TOML file (None: the embedded demo, saved to ``save_to`` once edited).
    ``overrides``: [server] keys set on the command line, applied after every load;
    ``section_overrides``: the same for feature tables (``{"console": {"listen": ...}}``)."""

    path: Path | None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    section_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    save_to: Path | None = None  # where the demo's edits go (its data directory)
    features: Sequence[FeatureType] | None = None  # None: the built-in ones
    # feature sections in force when the file has none (the demo's web console)
    default_sections: Mapping[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> Path | None:
        """The file that edits are written to."""
        return self.path or self.save_to

    @property
    def demo(self) -> bool:
        """The embedded demo (its edits saved in its data directory)."""
        return self.path is None and self.save_to is not None

    def text(self) -> str:
        """The current text (the embedded demo's until an edit is saved)."""
        if self.path is not None:
            return read_text(self.path)  # a missing file is an error, never the demo
        if self.save_to is not None and self.save_to.exists():
            return read_text(self.save_to)
        return in_own_directory(cfg.DEMO) if self.demo else cfg.DEMO

    def repair(self) -> bool:
        """A demo file saved before ``data_dir = "."`` (its data directory was then
        DATA/data when read as a file) is corrected in place; True when it was."""
        target = self.save_to
        if not self.demo or target is None or not target.exists():
            return False
        text = read_text(target)
        fixed = in_own_directory(text)
        if fixed == text:
            return False
        self.write(fixed)
        return True

    def load(self) -> cfg.Config:
        """The configuration to run: the file (or the demo) and the command line's options."""
        return self.parse(self.text())

    def parse(self, text: str) -> cfg.Config:
        """``text`` validated as this file (models, audio files, destinations); raises
        ConfigError naming the key."""
        from .features import builtin, sections_of
        from .plugins import Registry

        target = self.target
        exists = target is not None and target.exists()
        name = str(target) if exists else "<embedded demo>"
        features = list(self.features) if self.features is not None else builtin()
        config = cfg.parse(text, name, sections_of(features))
        if self.default_sections:
            sections = {**self.default_sections, **config.sections}
            config = config.model_copy(update={"sections": sections})
        if target is not None and exists:
            config = cfg.resolve_paths(config, target.parent)
            config = config.model_copy(update={"source": target})
        cfg.check_audio(config, name)
        check_certificate(config.server, name)
        config = self._overridden(config, sections_of(features))
        Registry(config, features)  # numbers, codes and destinations resolve
        return config

    def _overridden(self, config: cfg.Config, kinds: Mapping[str, Any]) -> cfg.Config:
        """The command line's options over the file's values, validated by the same models
        (``--listen ws:...`` is refused here, naming the option's key)."""
        if self.overrides:
            values = {**config.server.model_dump(), **self.overrides}
            try:
                server = cfg.Server.model_validate(values)
            except ValidationError as exc:
                raise cfg.ConfigError(_option_errors(exc, ("server",))) from None
            config = config.model_copy(update={"server": server})
        if self.section_overrides:
            sections = dict(config.sections)
            for name, options in self.section_overrides.items():
                current = sections.get(name)
                dumped = current.model_dump() if current is not None else {}
                try:
                    sections[name] = TypeAdapter(kinds[name]).validate_python({**dumped, **options})
                except ValidationError as exc:
                    raise cfg.ConfigError(_option_errors(exc, (name,))) from None
            config = config.model_copy(update={"sections": sections})
        return config

    def write(self, text: str) -> cfg.Config:
        """Validate ``text``, then replace the file with it (the old one kept as
        ``.prev``); returns the new configuration. Nothing is written when it is invalid."""
        target = self.target
        if target is None:
            raise cfg.ConfigError("this configuration has no file to save to")
        if self.demo:
            text = in_own_directory(text)
        config = self.parse(text)
        mode = 0o600  # it holds the phones' passwords
        if target.exists():
            mode = target.stat().st_mode & 0o777
            previous = target.with_name(target.name + PREVIOUS_SUFFIX)
            atomic_write(previous, target.read_bytes(), mode=mode)
        atomic_write(target, text.encode("utf-8"), mode=mode)
        return self.parse(text) if self.path is None else config  # the demo's: now a file


# the options of `softswitch run` that override a key
OPTIONS = {
    "server.listen": "--listen",
    "server.data_dir": "--data-dir",
    "console.listen": "--console-listen",
}


def _option_errors(exc: ValidationError, prefix: tuple[str, ...]) -> str:
    lines = []
    for error in exc.errors():
        loc = prefix + tuple(str(part) for part in error["loc"] if isinstance(part, str))
        key = ".".join(loc)
        option = OPTIONS.get(key, "the command line")
        lines.append(f"{option}: {key}: {error['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def in_own_directory(text: str) -> str:
    """``text`` with ``[server] data_dir = "."``: the demo's file lives in its data
    directory, and a relative data_dir is read relative to the file. Text that is not TOML
    is returned as it is (validating it names the problem)."""
    import tomlkit
    from tomlkit.exceptions import TOMLKitError

    try:
        doc = tomlkit.parse(text)
    except TOMLKitError:
        return text
    server = doc.get("server")
    if server is None:
        server = tomlkit.table()
        doc["server"] = server
    if not isinstance(server, dict) or server.get("data_dir") == ".":
        return text
    server["data_dir"] = "."
    server["data_dir"].comment("the directory this file is in (the demo's data directory)")
    return tomlkit.dumps(doc)


def read_text(path: Path) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise cfg.ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise cfg.ConfigError(f"{path}: larger than {MAX_CONFIG_BYTES // 1024} KiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise cfg.ConfigError(f"{path}: not UTF-8 text") from None


def atomic_write(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """``path`` holds ``data`` entirely or keeps what it had: a temporary file in the same
    directory, flushed to disk, renamed over it."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


# [server] keys read once at start: a change to them waits for a restart
RESTART_KEYS = (
    "listen",
    "domain",
    "public_address",
    "rtp_ports",
    "data_dir",
    "country",
    "language",
    "sip_t1",
    "tcp_idle_timeout",
    "tcp_message_timeout",
    "tcp_max_connections",
    "tcp_max_per_address",
    "registration_min_expires",
    "registration_max_expires",
    "keepalive_interval",
)


def check_certificate(server: cfg.Server, source: str) -> None:
    """A configured TLS certificate must load with its key, and client CAs must load
    (``check``, ``run`` and a reload refuse them otherwise, naming the key)."""
    import ssl

    from .certificates import load_client_ca, server_context

    try:
        if server.tls_certificate is not None:
            server_context(server, [])
        load_client_ca(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), server)
    except cfg.ConfigError as exc:
        raise cfg.ConfigError(f"{source}: {exc}") from None


def needs_restart(old: cfg.Config, new: cfg.Config) -> list[str]:
    """The keys whose new value takes effect only after a restart."""
    return [
        f"server.{key}"
        for key in RESTART_KEYS
        if getattr(old.server, key) != getattr(new.server, key)
    ]
