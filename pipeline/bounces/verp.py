"""VERP return paths: ``<local>+<token>@<domain>``, one per digest.

A bounce goes back to the envelope sender (RFC 5321 §4.5.5), so when each digest carries
its own return path the bounce says which outbox row it answers, whatever the remote
server writes (or fails to write) in its report. The token is the outbox row's id and a
truncated HMAC-SHA256 of it, both in lower-case hex digits: safe in a local part, short
(an id below 65,536 makes a 16-character token), and unchanged by servers that fold the case
of local parts. A report sent to one of these addresses whose token does not verify is a
forgery (or from a key no longer listed) and records nothing; a report with no token at
all falls back to its Final-Recipient address unless ``[bounces] require_token`` is set.

The key is derived from the link-signing keys (``[web] secret_env``) with a purpose
string of its own, so a VERP token is never a valid link token or the other way round.
Rotation works as for links: the first key signs, every key verifies.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from typing import Final

_PURPOSE: Final = b"paperpost.verp.v1:"
_SIG_HEX: Final = 12  # 48 bits: forging one needs ~2^47 tries against a mailbox
_TOKEN_RE: Final = re.compile(rf"^([0-9a-f]{{1,16}})([0-9a-f]{{{_SIG_HEX}}})$")
LOCAL_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")


class VerpSigner:
    """Makes and reads the per-digest return path ``<local>+<token>@<domain>``."""

    def __init__(self, keys: Sequence[str], *, local: str, domain: str) -> None:
        if not keys:
            raise ValueError("VERP needs at least one signing key ([web] secret_env)")
        if not LOCAL_RE.match(local) or "+" in local:
            raise ValueError(f"VERP local part must be letters, digits, '.', '_' or '-': {local!r}")
        self._keys = [hmac.new(k.encode("utf-8"), _PURPOSE, hashlib.sha256).digest() for k in keys]
        self.local = local
        self.domain = domain.lower()

    def _sig(self, key: bytes, text: str) -> str:
        return hmac.new(key, text.encode("ascii"), hashlib.sha256).hexdigest()[:_SIG_HEX]

    def token(self, delivery_id: int) -> str:
        if delivery_id < 0:
            raise ValueError(f"delivery id must not be negative, found {delivery_id}")
        text = format(delivery_id, "x")
        # The id's length is fixed by the signature's: the id is everything before it.
        return text + self._sig(self._keys[0], text)

    def address(self, delivery_id: int) -> str:
        """The envelope sender of the digest in outbox row ``delivery_id``."""
        return f"{self.local}+{self.token(delivery_id)}@{self.domain}"

    def delivery_id(self, token: str) -> int | None:
        """The outbox row a token names, or None if it is not one of ours."""
        match = _TOKEN_RE.match(token.strip().lower())
        if match is None:
            return None
        text, sig = match.groups()
        if not any(hmac.compare_digest(self._sig(key, text), sig) for key in self._keys):
            return None
        return int(text, 16)

    def is_return_path(self, address: str) -> bool:
        """Whether ``address`` has the form of one of our return paths, token or not
        (``bounces+…@domain``): mail to it must carry a token that verifies."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        base, plus, _ = local.partition("+")
        return (
            bool(at and plus)
            and domain.lower() == self.domain
            and (base.lower() == self.local.lower())
        )

    def delivery_for_address(self, address: str) -> int | None:
        """The outbox row of a return path (``bounces+<token>@domain``), else None."""
        local, at, domain = address.strip().strip("<>").rpartition("@")
        if not at or domain.lower() != self.domain:
            return None
        base, plus, token = local.partition("+")
        if not plus or base.lower() != self.local.lower():
            return None
        return self.delivery_id(token)
