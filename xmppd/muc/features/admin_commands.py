"""Service-administrator ad-hoc commands on the MUC service (XEP-0050), as Prosody offers them.

Two commands, listed (disco#items, node ``http://jabber.org/protocol/commands``)
and executable only by service admins (``cfg.admins``; others get
forbidden): *Destroy Rooms* (pick any rooms from a list-multi) and *Set
affiliation in room*. Both are one-step forms: ``execute`` returns the
form, a submission (``complete``/``execute``/``next`` with a submitted
form) runs it, ``cancel`` cancels. No per-session state is kept: the
submitted form carries everything.
"""
import uuid

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element
from wokkel import disco
from wokkel.data_form import Field, Form, Option
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xmppd import jid as jidlib
from xmppd.muc.errors import error_reply, stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS, NS_DATA

NS_COMMANDS = "http://jabber.org/protocol/commands"
NODE_DESTROY = "http://prosody.im/protocol/muc#destroy"
NODE_AFFILIATION = "http://prosody.im/protocol/muc#set-affiliation"

feature = Feature("admin_commands")


def _submitted_values(x):
    """var -> list of values of a submitted form (lenient: FORM_TYPE need not be hidden)."""
    values = {}
    for field in x.elements():
        if field.name == "field" and field.getAttribute("var"):
            values[field["var"]] = [str(v).strip() for v in field.elements() if v.name == "value"]
    return values


def _first(values, var):
    vals = values.get(var) or []
    return vals[0] if vals else None


class Command:
    def __init__(self, node, name, form_type):
        self.node, self.name, self.form_type = node, name, form_type

    def form(self, service):
        raise NotImplementedError

    def run(self, service, values, actor):
        """Return (status, note_type, note_text)."""
        raise NotImplementedError


class DestroyRooms(Command):
    def __init__(self):
        super().__init__(NODE_DESTROY, "Destroy Rooms", NODE_DESTROY)

    def form(self, service):
        form = Form("form", title="Destroy rooms", instructions=["Select the rooms to destroy"],
                    formNamespace=self.form_type)
        form.addField(Field("list-multi", var="rooms", label="Rooms to destroy:", required=True,
                            options=[Option(j, service.rooms[j].config.get("name") or j)
                                     for j in sorted(service.rooms)]))
        return form

    def run(self, service, values, actor):
        rooms = values.get("rooms") or []
        if not rooms:
            return "completed", "error", "rooms: Required value missing"
        destroyed = []
        for room_jid in rooms:
            room = service.rooms.get(room_jid)
            if room is not None and not room.destroying:
                room.destroy(actor=None)
                destroyed.append(room_jid)
        return "completed", "info", "The following rooms were destroyed:\n" + "\n".join(destroyed)


class SetAffiliation(Command):
    def __init__(self):
        super().__init__(NODE_AFFILIATION, "Set affiliation in room", NODE_AFFILIATION)

    def form(self, service):
        form = Form("form", title="Set affiliation", formNamespace=self.form_type)
        form.addField(Field("jid-single", var="room", label="Room", required=True))
        form.addField(Field("jid-single", var="jid", label="JID", required=True))
        form.addField(Field("list-single", var="affiliation", label="Affiliation", required=True,
                            options=[Option(a, a.capitalize()) for a in
                                     ("owner", "admin", "member", "none", "outcast")]))
        form.addField(Field("text-single", var="reason", label="Reason"))
        return form

    def run(self, service, values, actor):
        missing = [v for v in ("room", "jid", "affiliation") if not _first(values, v)]
        if missing:
            return "completed", "error", "\n".join(f"{v}: Required value missing" for v in missing)
        aff = _first(values, "affiliation")
        if aff not in AFFILIATIONS:
            return "completed", "error", "affiliation: Value is not one of the options"
        room_j = jidlib.parse_or_none(_first(values, "room"))
        room = service.rooms.get(room_j.userhost()) if room_j is not None else None
        if room is None:
            return "canceled", "error", "No such room"
        try:
            room.set_affiliation(None, _first(values, "jid"), aff, _first(values, "reason"))
        except StanzaError as e:
            return "canceled", "error", f"Affiliation change failed: {e.condition}"
        return "completed", "info", "Affiliation updated"


COMMANDS = {c.node: c for c in (DestroyRooms(), SetAffiliation())}


@implementer(disco.IDisco)
class AdminCommandsHandler(XMPPHandler):
    """XEP-0050 on the MUC service domain, for service admins."""

    def __init__(self, service):
        super().__init__()
        self.service = service

    def connectionInitialized(self):
        self.xmlstream.addObserver(
            f"/iq[@type='set']/command[@xmlns='{NS_COMMANDS}']", self.onCommand)

    def is_admin(self, requestor):
        j = jidlib.parse_or_none(requestor) if isinstance(requestor, str) else requestor
        return j is not None and j.userhost() in self.service.admins

    def onCommand(self, iq):
        if getattr(iq, "handled", False):
            return
        iq.handled = True
        to = jidlib.parse_or_none(iq.getAttribute("to") or "")
        if to is None or to.user is not None or to.resource is not None:
            self.service.send(error_reply(iq, "service-unavailable", "cancel"))
            return
        try:
            reply = self.execute(iq)
        except StanzaError as e:
            reply = error_reply(iq, e)
        self.service.send(reply)

    def execute(self, iq):
        cmd_el = iq.firstChildElement()
        command = COMMANDS.get(cmd_el.getAttribute("node"))
        if command is None:
            raise stanza_error("item-not-found", "cancel")
        if not self.is_admin(iq.getAttribute("from")):
            raise stanza_error("forbidden", "auth", "You don't have permission to execute this command")
        action = cmd_el.getAttribute("action") or "execute"
        if action not in ("execute", "next", "complete", "cancel", "prev"):
            raise stanza_error("bad-request", "modify")
        sessionid = cmd_el.getAttribute("sessionid") or uuid.uuid4().hex
        form = None
        for c in cmd_el.elements():
            if c.name == "x" and c.uri == NS_DATA:
                form = c
        result = Element((NS_COMMANDS, "command"))
        result["node"] = command.node
        result["sessionid"] = sessionid
        if action == "cancel":
            result["status"] = "canceled"
        elif form is None or form.getAttribute("type") != "submit":
            if action == "prev":
                raise stanza_error("bad-request", "modify")
            result["status"] = "executing"
            actions = result.addElement("actions")
            actions["execute"] = "complete"
            actions.addElement("next")
            actions.addElement("complete")
            result.addChild(command.form(self.service).toElement())
        else:
            values = _submitted_values(form)
            if _first(values, "FORM_TYPE") not in (None, command.form_type):
                raise stanza_error("bad-request", "modify", "Wrong form type")
            status, note_type, text = command.run(self.service, values, iq.getAttribute("from"))
            result["status"] = status
            note = result.addElement("note", content=text)
            note["type"] = note_type
        reply = Element((None, "iq"))
        reply["type"] = "result"
        reply["to"] = iq["from"]
        reply["from"] = iq["to"]
        if iq.getAttribute("id"):
            reply["id"] = iq["id"]
        reply.addChild(result)
        return reply

    # -- disco ----------------------------------------------------------------
    def getDiscoInfo(self, requestor, target, nodeIdentifier=""):
        if target.user is not None:
            return []
        if not nodeIdentifier:
            return [disco.DiscoFeature(NS_COMMANDS)]
        if nodeIdentifier == NS_COMMANDS:
            return [disco.DiscoIdentity("automation", "command-list", "Ad-hoc commands")]
        command = COMMANDS.get(nodeIdentifier)
        if command is None or not self.is_admin(requestor):
            return []
        return [disco.DiscoIdentity("automation", "command-node", command.name),
                disco.DiscoFeature(NS_COMMANDS), disco.DiscoFeature(NS_DATA)]

    def getDiscoItems(self, requestor, target, nodeIdentifier=""):
        if target.user is not None or nodeIdentifier != NS_COMMANDS or not self.is_admin(requestor):
            return []
        return [disco.DiscoItem(target, c.node, c.name) for c in COMMANDS.values()]


@feature.on_install
def _install(service):
    handler = AdminCommandsHandler(service)
    if service.parent is not None:
        handler.setHandlerParent(service.parent)
        return
    # install() runs inside MUCService.__init__, before make_component gives the
    # service its InternalComponent: join it as a sibling handler at that moment.
    attach = service.setHandlerParent

    def set_handler_parent(parent):
        attach(parent)
        handler.setHandlerParent(parent)
    service.setHandlerParent = set_handler_parent
