"""What the bounce processing needs from the configuration: the VERP signer, the rules,
and the mailbox to read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from pipeline.bounces.verp import VerpSigner
from pipeline.config import Config
from pipeline.errors import PaperpostError

if TYPE_CHECKING:  # delivery imports this module for VERP alone: no IMAP, no parser
    from pipeline.bounces.mailbox import BounceMailbox


@dataclass(frozen=True, slots=True)
class BounceSettings:
    soft_limit: int  # this many soft bounces ...
    soft_days: int  # ... within this many days suppress the address
    unsubscribe_address: str | None  # [mail] unsubscribe_mailto
    verp: VerpSigner | None
    require_token: bool = False  # ignore DSNs and complaints without a valid VERP token


def _from_domain(config: Config) -> str:
    address = config.file.mail.from_.rsplit("<", 1)[-1].rstrip(">").strip()
    return address.rsplit("@", 1)[-1].lower()


def verp_signer(config: Config) -> VerpSigner | None:
    """The digests' return-path maker, when ``[bounces]`` asks for VERP (and the link keys
    it is derived from were read: read-only commands do without)."""
    bounces = config.file.bounces
    if bounces is None or not bounces.verp or not config.secrets.link_keys:
        return None
    return VerpSigner(
        config.secrets.link_keys,
        local=bounces.verp_local,
        domain=bounces.verp_domain or _from_domain(config),
    )


def bounce_settings(config: Config) -> BounceSettings:
    bounces = config.file.bounces
    if bounces is None:
        raise PaperpostError(f"{config.path}: no [bounces] table: there is no bounce mailbox")
    return BounceSettings(
        soft_limit=bounces.soft_bounce_limit,
        soft_days=bounces.soft_bounce_days,
        unsubscribe_address=config.file.mail.unsubscribe_mailto,
        verp=verp_signer(config),
        require_token=bounces.require_token,
    )


def open_mailbox(config: Config) -> BounceMailbox:
    """The configured bounce mailbox, opened (IMAP: connected, logged in, folder selected)."""
    from pipeline.bounces.mailbox import ImapBox, ImapSettings, MaildirBox

    bounces = config.file.bounces
    if bounces is None:
        raise PaperpostError(f"{config.path}: no [bounces] table: there is no bounce mailbox")
    base = config.path.parent
    if bounces.maildir is not None:
        return MaildirBox(base / bounces.maildir)
    imap = bounces.imap
    assert imap is not None  # the model requires one of the two
    if config.secrets.imap_password is None:
        raise PaperpostError(
            f"{config.path}: [bounces.imap] password_env: {imap.password_env} is not set"
        )
    return ImapBox(
        ImapSettings(
            host=imap.host,
            port=imap.port,
            user=imap.user,
            password=config.secrets.imap_password,
            folder=imap.folder,
            security=imap.tls,
            timeout=imap.timeout_seconds,
            ca_file=base / imap.ca_file if imap.ca_file else None,
        )
    )
