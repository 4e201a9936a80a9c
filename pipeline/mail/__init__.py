"""Message building and transports: the only place outside data meets email headers.

``safe_header_value`` is the one gate every outside value passes on its way into
a header; ``build_message`` turns a rendered digest into bytes; ``SmtpMailer``
and ``MaildirMailer`` implement :class:`pipeline.domain.Mailer`.
"""

from __future__ import annotations

from pipeline.mail.headers import make_message_id, safe_header_value
from pipeline.mail.maildir import MaildirMailer
from pipeline.mail.message import build_message
from pipeline.mail.smtp import SmtpMailer, SmtpSettings, SmtpStats

__all__ = [
    "MaildirMailer",
    "SmtpMailer",
    "SmtpSettings",
    "SmtpStats",
    "build_message",
    "make_message_id",
    "safe_header_value",
]
