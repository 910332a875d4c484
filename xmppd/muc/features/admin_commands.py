"""Service-administrator ad-hoc commands on the MUC service (XEP-0050), as Prosody offers them.

Two commands, listed (disco#items, node ``http://jabber.org/protocol/commands``)
and executable only by service admins (``cfg.admins``; others get
forbidden): *Destroy Rooms* (pick any rooms from a list-multi) and *Set
affiliation in room*. Both are one-step forms: ``execute`` returns the
form, a submission (``complete``/``execute``/``next`` with a submitted
form) runs it, ``cancel`` cancels. No per-session state is kept: the
submitted form carries everything.
"""
from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish.domish import Element
from wokkel import disco
from wokkel.data_form import Field, Form, Option
from wokkel.subprotocols import XMPPHandler
from zope.interface import implementer

from xmppd import adhoc, jid as jidlib
from xmppd.adhoc import NS_COMMANDS, Outcome, first as _first
from xmppd.muc.errors import error_reply
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS, NS_DATA

NODE_DESTROY = "http://prosody.im/protocol/muc#destroy"
NODE_AFFILIATION = "http://prosody.im/protocol/muc#set-affiliation"

feature = Feature("admin_commands")


class DestroyRooms(adhoc.Command):
    node = form_type = NODE_DESTROY
    name = "Destroy Rooms"

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
            return Outcome.error("rooms: Required value missing")
        destroyed = []
        for room_jid in rooms:
            room = service.rooms.get(room_jid)
            if room is not None and not room.destroying:
                room.destroy(actor=None)
                destroyed.append(room_jid)
        return Outcome.info("The following rooms were destroyed:\n" + "\n".join(destroyed))


class SetAffiliation(adhoc.Command):
    node = form_type = NODE_AFFILIATION
    name = "Set affiliation in room"

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
            return Outcome.error("\n".join(f"{v}: Required value missing" for v in missing))
        aff = _first(values, "affiliation")
        if aff not in AFFILIATIONS:
            return Outcome.error("affiliation: Value is not one of the options")
        room_j = jidlib.parse_or_none(_first(values, "room"))
        room = service.rooms.get(room_j.userhost()) if room_j is not None else None
        if room is None:
            return Outcome.error("No such room", "canceled")
        try:
            room.set_affiliation(None, _first(values, "jid"), aff, _first(values, "reason"))
        except StanzaError as e:
            return Outcome.error(f"Affiliation change failed: {e.condition}", "canceled")
        return Outcome.info("Affiliation updated")


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
        d = adhoc.execute(COMMANDS, iq.firstChildElement(), self.service,
                          iq.getAttribute("from"), self.is_admin(iq.getAttribute("from")))

        def answer(result):
            reply = Element((None, "iq"))
            reply["type"] = "result"
            reply["to"] = iq["from"]
            reply["from"] = iq["to"]
            if iq.getAttribute("id"):
                reply["id"] = iq["id"]
            reply.addChild(result)
            self.service.send(reply)

        def failed(f):
            f.trap(StanzaError)
            self.service.send(error_reply(iq, f.value))
        d.addCallbacks(answer, failed)

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
