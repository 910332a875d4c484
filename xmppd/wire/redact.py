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
# a field whose var names a password or secret, unless the var is a flag about one
# (muc#roomconfig_passwordprotectedroom says *whether* there is a password: shown)
_SECRET_FIELD = re.compile(r"(<((?:[\w.-]+:)?field)\b[^>]*var=['\"](?![^'\"]*protected)[^'\"]*"
                           r"(?:secret|password|passwd)[^'\"]*['\"][^>]*(?<!/)>)(.*?)(</\2>)",
                           re.S | re.I)
_REDACTED = "[redacted]"


def one_line(text):
    """``text`` on one log line: backslash, CR and LF escaped (so grep finds whole stanzas)."""
    if "\n" in text or "\r" in text:
        text = text.replace("\\", "\\\\").replace("\r", "\\r").replace("\n", "\\n")
    return text


def for_trace(text):
    """What ``--trace`` logs for a stanza: secrets redacted, on one line."""
    return one_line(redact(text))


def redact(text):
    """``text`` (serialised XML) with every secret replaced by ``[redacted]``."""
    if "<" not in text:
        return text
    for rx in (_SASL, _PASSWORD, _SECRET_FIELD):
        text = rx.sub(lambda m: m.group(1) + (_REDACTED if m.group(3) else "") + m.group(4), text)
    return text
