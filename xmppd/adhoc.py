"""XEP-0050 ad-hoc commands: the parts every command set shares.

Used by the MUC's service-admin commands (:mod:`xmppd.muc.features.admin_commands`)
and the server's XEP-0133 service administration (:mod:`xmppd.services.admin`).

A :class:`Command` has a ``node``, a human ``name`` and a ``form_type``
(the FORM_TYPE it accepts). Its ``form(ctx)`` is the form shown on
``execute`` (None: the command runs at once, e.g. "get the user count");
``run(ctx, values, actor)`` handles a submitted form and returns a
:class:`Outcome` (or a Deferred of one). Commands keep no per-session state
between steps: the submitted form carries everything, so a client may send
the submission with any ``sessionid`` it was given (XEP-0050 §3.4 only asks
the responder to echo it).
"""
import secrets

from twisted.internet import defer
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element

NS_COMMANDS = "http://jabber.org/protocol/commands"
NS_DATA = "jabber:x:data"
ACTIONS = ("execute", "next", "complete", "cancel", "prev")
MAX_SESSIONID = 128


class Outcome:
    """What a command did: status, an optional note (type, text) and an optional result form."""

    __slots__ = ("status", "note_type", "note", "form")

    def __init__(self, status="completed", note_type=None, note=None, form=None):
        self.status, self.note_type, self.note, self.form = status, note_type, note, form

    @classmethod
    def info(cls, text, form=None):
        return cls("completed", "info", text, form)

    @classmethod
    def error(cls, text, status="completed"):
        return cls(status, "error", text)


class Command:
    """One command node; subclasses set ``node``/``name``/``form_type`` and implement run()."""

    node = name = form_type = None

    def form(self, ctx):
        return None

    def run(self, ctx, values, actor):
        raise NotImplementedError


def submitted_values(x):
    """var -> list of values of a submitted form (lenient: FORM_TYPE need not be hidden)."""
    values = {}
    for field in x.elements():
        if field.name == "field" and field.getAttribute("var"):
            values[field["var"]] = [str(v).strip() if field.getAttribute("type") != "text-multi"
                                    else str(v) for v in field.elements() if v.name == "value"]
    return values


def first(values, var):
    vals = values.get(var) or []
    return vals[0] if vals else None


def _stanza_error(condition, etype, text=None):
    return StanzaError(condition, type=etype, text=text)


def execute(commands, cmd_el, ctx, actor, allowed):
    """Answer one ``<command/>`` request: a Deferred firing with the result ``<command/>``.

    ``commands`` maps node -> Command; ``allowed`` says whether ``actor`` may
    run commands at all (checked after the node, so unknown nodes stay
    item-not-found for everyone). Errors are StanzaErrors (failing the Deferred).
    """
    try:
        command = commands.get(cmd_el.getAttribute("node"))
        if command is None:
            raise _stanza_error("item-not-found", "cancel")
        if not allowed:
            raise _stanza_error("forbidden", "auth",
                                "You don't have permission to execute this command")
        action = cmd_el.getAttribute("action") or "execute"
        if action not in ACTIONS:
            raise _stanza_error("bad-request", "modify")
        sessionid = cmd_el.getAttribute("sessionid") or secrets.token_hex(8)
        if len(sessionid) > MAX_SESSIONID:
            raise _stanza_error("bad-request", "modify", "sessionid too long")
        form = None
        for c in cmd_el.elements():
            if c.name == "x" and c.uri == NS_DATA:
                form = c
        result = Element((NS_COMMANDS, "command"))
        result["node"] = command.node
        result["sessionid"] = sessionid
        if action == "cancel":
            result["status"] = "canceled"
            return defer.succeed(result)
        if form is None or form.getAttribute("type") != "submit":
            if action == "prev":
                raise _stanza_error("bad-request", "modify")
            shown = command.form(ctx)
            if shown is not None:
                result["status"] = "executing"
                actions = result.addElement("actions")
                actions["execute"] = "complete"
                actions.addElement("complete")
                result.addChild(shown.toElement())
                return defer.succeed(result)
            values = {}
        else:
            values = submitted_values(form)
            if first(values, "FORM_TYPE") not in (None, command.form_type):
                raise _stanza_error("bad-request", "modify", "Wrong form type")
        d = defer.maybeDeferred(command.run, ctx, values, actor)
    except StanzaError as e:
        return defer.fail(e)

    def done(outcome):
        result["status"] = outcome.status
        if outcome.note is not None:
            note = result.addElement("note", content=outcome.note)
            note["type"] = outcome.note_type or "info"
        if outcome.form is not None:
            result.addChild(outcome.form.toElement())
        return result
    return d.addCallback(done)
