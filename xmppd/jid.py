"""JID parsing with a bounded cache and the checks Twisted's parser skips.

``twisted.words.protocols.jabber.jid.JID`` costs ~100 µs and its
``internJID`` cache grows without bound on attacker-chosen values, so every
JID that enters the server goes through :func:`parse` instead. Tables
elsewhere are keyed by the *string* forms (``full()``/``userhost()``),
which are 5x faster dict keys than JID objects.
"""
from functools import lru_cache

from twisted.words.protocols.jabber.jid import JID, InvalidFormat

__all__ = ["JID", "InvalidJID", "parse", "parse_or_none", "MAX_PART_BYTES"]

MAX_PART_BYTES = 1023  # RFC 6122/7622: each part at most 1023 octets


class InvalidJID(ValueError):
    """The string is not a valid JID (answer with jid-malformed)."""


@lru_cache(maxsize=65536)
def _parse(text):
    if not text or len(text) > 3071:
        raise InvalidJID(text)
    # Twisted accepts these forms silently; RFC 7622 forbids them.
    at = text.find("@")
    slash = text.find("/")
    if at == 0 and (slash == -1 or slash > at):
        raise InvalidJID(text)
    if text.endswith("/"):
        raise InvalidJID(text)
    if at > 0 and (slash == -1 or at < slash) and text[at + 1:at + 2] in ("", "/"):
        raise InvalidJID(text)
    try:
        j = JID(text)
    except (InvalidFormat, IndexError, RuntimeError, UnicodeError, ValueError) as e:
        raise InvalidJID(text) from e
    for part in (j.user, j.host, j.resource):
        if part is not None and (not part or len(part.encode("utf-8")) > MAX_PART_BYTES):
            raise InvalidJID(text)
    host = j.host
    if host.endswith(".") or ".." in host:
        raise InvalidJID(text)
    return j


def parse(text):
    """Return the (shared, immutable) JID for ``text`` or raise InvalidJID."""
    return _parse(text)


def parse_or_none(text):
    """Like :func:`parse` but returns None for missing or invalid input."""
    if not text:
        return None
    try:
        return _parse(text)
    except InvalidJID:
        return None
