"""Voicemail to e-mail: each new message mailed to its user, the WAV attached.

Per user (``[users.email]``): the address, whether the recording is attached or only
announced, and whether the message is deleted once the mail is accepted. Mail goes through
``[smtp]`` with aiosmtplib (STARTTLS or TLS, authentication). A server that is down or
refuses is retried with backoff, forever, and the message never leaves the mailbox until
its mail is accepted; mails still owed are picked up again after a restart (the mailbox
remembers which were sent).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path

import aiosmtplib
from pydantic import Field

from ..config import User
from ..feature import BaseFeature, CallListener
from ..model import Strict
from ..services import Services
from .voicemail import Voicemail

log = logging.getLogger("softswitch")


class SmtpSettings(Strict):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(25, ge=1, le=65535)
    starttls: bool = False  # upgrade with STARTTLS (port 587)
    tls: bool = False  # TLS from the start (port 465)
    username: str | None = None
    password: str | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$")  # the From address
    timeout: float = Field(30.0, ge=1.0, le=300.0)
    retry_first: float = Field(5.0, ge=0.1, le=600.0)  # first retry after, seconds
    retry_max: float = Field(600.0, ge=1.0, le=86400.0)  # backoff ceiling, seconds


class VoicemailEmail(BaseFeature, CallListener):
    name = "voicemail_email"
    state = ("sending",)
    section = "smtp"
    config_model = SmtpSettings

    def __post_init__(self) -> None:
        self.smtp: SmtpSettings | None = self.settings()
        self.sending: set[str] = set()
        for i, user in enumerate(self.config.users):
            if user.email is not None and self.smtp is None:
                raise ValueError(f"users[{i}].email: needs an [smtp] table to send through")

    def listeners(self) -> Iterable[CallListener]:
        return (self,)

    def voicemail(self) -> Voicemail | None:
        feature = self.services.registry.feature("voicemail")
        return feature if isinstance(feature, Voicemail) else None

    async def start(self, svc: Services) -> None:
        await super().start(svc)
        svc.counters.setdefault("emails", 0)
        vm = self.voicemail()
        if self.smtp is None or vm is None or vm.store is None:
            return
        for user in self.config.users:  # mails owed from before a restart
            if user.email is not None:
                for message_id in vm.store.not_emailed(user.extension):
                    self.voicemail_left(user.extension, message_id)

    def voicemail_left(self, mailbox: str, message_id: str) -> None:
        user = self.services.user(mailbox)
        if user is not None and user.email is not None and message_id not in self.sending:
            self.sending.add(message_id)
            self.services.spawn(self.deliver(user, message_id))

    async def deliver(self, user: User, message_id: str) -> None:
        """Mail one message, retrying with backoff until the server accepts it."""
        assert self.smtp is not None and user.email is not None
        delay = self.smtp.retry_first
        try:
            while True:
                vm = self.voicemail()
                message = vm.store.message(message_id) if vm and vm.store else None
                if vm is None or vm.store is None or message is None:
                    return  # deleted meanwhile (by phone)
                try:
                    await self.send(user, message.caller, message.seconds, message.path)
                    break
                except (aiosmtplib.SMTPException, OSError) as exc:
                    log.warning(
                        "event=voicemail_email_failed mailbox=%s to=%s retry_in=%.0fs error=%s",
                        user.extension,
                        user.email.address,
                        delay,
                        exc,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.smtp.retry_max)
            vm.store.mark_emailed(message_id)
            self.services.counters["emails"] += 1
            log.info("event=voicemail_emailed mailbox=%s to=%s", user.extension, user.email.address)
            if user.email.delete_after:
                vm.store.delete(message_id)
                self.services.spawn(vm.notify(user.extension))
        finally:
            self.sending.discard(message_id)

    async def send(self, user: User, caller: str, seconds: float, path: Path) -> None:
        assert self.smtp is not None and user.email is not None
        smtp = self.smtp
        mail = EmailMessage()
        mail["From"] = smtp.sender
        mail["To"] = user.email.address
        mail["Subject"] = f"Voicemail from {caller} ({seconds:.0f} s)"
        mail["Date"] = formatdate(localtime=True)
        mail["Message-ID"] = make_msgid(domain=self.config.server.domain)
        mail.set_content(
            f"{user.name}, {caller} left you a message of {seconds:.0f} seconds.\n"
            f"Dial {self.config.features.voicemail_access} to listen to it.\n"
        )
        if user.email.attach:
            data = await asyncio.to_thread(path.read_bytes)
            mail.add_attachment(data, maintype="audio", subtype="wav", filename="message.wav")
        await aiosmtplib.send(
            mail,
            hostname=smtp.host,
            port=smtp.port,
            start_tls=smtp.starttls,
            use_tls=smtp.tls,
            username=smtp.username,
            password=smtp.password,
            timeout=smtp.timeout,
        )
