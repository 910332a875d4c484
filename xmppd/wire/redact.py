"""Trace-log redaction: secrets never reach the log, even with ``--trace``.

Applied to the text of every traced stanza (in and out) only when tracing
is on, so it costs nothing otherwise. Redacts SASL payloads, any
``<password>`` element (legacy jabber:iq:auth, in-band registration, MUC
room passwords in joins, invitations and destroy notices) and data-form
fields whose ``var`` names a secret or password (e.g.
``muc#roomconfig_roomsecret``). Self-closing tags never start a match, so
the cost stays linear in the stanza size.
"""
import re

_SASL = re.compile(r"(<(?:[\w.-]+:)?(auth|response|challenge|success)\b[^>]*xmlns=['\"]urn:ietf:params:"
                   r"xml:ns:xmpp-sasl['\"][^>]*(?<!/)>)(.*?)(</(?:[\w.-]+:)?\2>)", re.S)
_PASSWORD = re.compile(r"(<((?:[\w.-]+:)?password)\b[^>]*(?<!/)>)(.*?)(</\2>)", re.S)
_SECRET_FIELD = re.compile(r"(<((?:[\w.-]+:)?field)\b[^>]*var=['\"][^'\"]*(?:secret|password|passwd)"
                           r"[^'\"]*['\"][^>]*(?<!/)>)(.*?)(</\2>)", re.S | re.I)
_REDACTED = "[redacted]"


def redact(text):
    """``text`` (serialised XML) with every secret replaced by ``[redacted]``."""
    if "<" not in text:
        return text
    for rx in (_SASL, _PASSWORD, _SECRET_FIELD):
        text = rx.sub(lambda m: m.group(1) + (_REDACTED if m.group(3) else "") + m.group(4), text)
    return text
