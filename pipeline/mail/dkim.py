"""DKIM signing (RFC 6376) with dkimpy: one signature per message, added once it is built.

A receiver checks the signature against the public key published in DNS at
``<selector>._domainkey.<domain>`` (docs/deliverability.md shows the record). The key
file holds either an RSA private key (PEM, PKCS#1 or PKCS#8: ``rsa-sha256``) or an
Ed25519 one (RFC 8463 ``ed25519-sha256``: the base64 32-byte seed that dkimpy's
``dknewkey --ktype ed25519`` writes, or a PKCS#8 PEM from ``openssl genpkey``).

Canonicalisation is relaxed/relaxed, the usual choice for mail that relays may rewrap
(whitespace in headers and trailing whitespace in the body then do not break it). The
message is signed exactly as built: it is already CRLF, 7-bit, with lines far below
SMTP's limits, so no relay needs to re-encode it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass, field
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from pipeline.errors import PaperpostError

__all__ = ["DkimError", "DkimKey", "DkimSigner", "load_key", "parse_key"]

_PEM = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", re.DOTALL)
# PKCS#8 PrivateKeyInfo for Ed25519 (RFC 8410): this fixed prefix, then the 32-byte seed.
_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_MIN_RSA_BITS = 1024  # RFC 8301: verifiers must not accept shorter keys


class DkimError(PaperpostError):
    """The DKIM key cannot be read or used, or a message cannot be signed."""


@dataclass(frozen=True)
class DkimKey:
    """A private key as dkimpy takes it, and which algorithm it signs with."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes = field(repr=False)  # PEM for RSA, the base64 seed for Ed25519


def load_key(path: Path) -> DkimKey:
    """Read and parse the private key in ``path``; :class:`DkimError` naming the file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimError(f"DKIM key file {path}: cannot read it ({exc.strerror})") from exc
    try:
        return parse_key(data)
    except DkimError as exc:
        raise DkimError(f"DKIM key file {path}: {exc}") from exc


def parse_key(data: bytes) -> DkimKey:
    """The key in ``data``: an RSA PEM, an Ed25519 PKCS#8 PEM or an Ed25519 base64 seed."""
    data = data.replace(b"\r\n", b"\n")  # dkimpy's PEM reader wants LF line ends
    pem = _PEM.search(data)
    if pem is not None:
        kind = pem.group(1)
        if kind in (b"RSA PRIVATE KEY", b"PRIVATE KEY"):
            der = _b64(pem.group(2))
            if kind == b"PRIVATE KEY" and der.startswith(_ED25519_PKCS8_PREFIX) and len(der) == 48:
                return _ed25519(der[16:])
            try:
                rsa = parse_pem_private_key(data[pem.start() : pem.end()])
            except (UnparsableKeyError, ValueError, IndexError) as exc:
                raise DkimError(f"not a usable RSA private key ({exc})") from exc
            bits = int(rsa["modulus"]).bit_length()
            if bits < _MIN_RSA_BITS:
                raise DkimError(
                    f"the RSA key has {bits} bits; receivers ignore DKIM keys under "
                    f"{_MIN_RSA_BITS} bits (RFC 8301): make a 2048-bit one"
                )
            return DkimKey(b"rsa-sha256", data[pem.start() : pem.end()])
        raise DkimError(
            f"holds a {kind.decode('ascii', 'replace')}, not an RSA or Ed25519 private key"
        )
    seed = _b64(data.strip())
    if len(seed) != 32:
        raise DkimError(
            "not a PEM private key, nor an Ed25519 key as a base64 32-byte seed "
            f"(decoded {len(seed)} bytes)"
        )
    return _ed25519(seed)


def _b64(text: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DkimError(f"not a PEM private key or base64 key ({exc})") from exc


def _ed25519(seed: bytes) -> DkimKey:
    return DkimKey(b"ed25519-sha256", base64.b64encode(seed))


class DkimSigner:
    """Signs messages for one (domain, selector, key); the key is parsed once."""

    def __init__(self, *, domain: str, selector: str, key: DkimKey, headers: list[str]) -> None:
        self.domain = domain
        self.selector = selector
        self.key = key
        self._headers = [h.encode("ascii") for h in headers]

    def sign(self, message: bytes) -> bytes:
        """``message`` with its DKIM-Signature header in front."""
        try:
            signature = dkim.sign(
                message,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self.key.private,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=self.key.algorithm,
                include_headers=self._headers,
            )
        except dkim.DKIMException as exc:
            raise DkimError(
                f"DKIM signing as {self.selector}._domainkey.{self.domain} failed: {exc}"
            ) from exc
        return bytes(signature) + message
