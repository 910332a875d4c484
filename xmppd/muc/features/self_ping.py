"""XEP-0410 MUC self-ping: a client checks it is still joined by pinging its own occupant JID.

The room answers for the occupant (§3.2): a result when the sender is
joined under that nick (any of its sessions), ``not-acceptable`` when it
is not joined at all (the core says so before any IQ to an occupant is
relayed; that is the "you were removed, rejoin" signal). A ping to
someone else's nick is relayed like any IQ. The service advertises
``muc#self-ping-optimization`` (§4) in the room's disco#info.
"""
from twisted.words.xish.domish import Element

from xmppd.muc.hooks import Feature

NS_PING = "urn:xmpp:ping"

feature = Feature("self_ping")


@feature.hook("muc-occupant-iq", priority=100)
def _self_ping(event):
    q = event.query
    if event.target is not event.occupant or q is None or q.name != "ping" or q.uri != NS_PING \
            or event.stanza.getAttribute("type") != "get":
        return None
    reply = Element((None, "iq"))
    reply["type"] = "result"
    reply["from"] = event.occupant.room_jid
    reply["to"] = event.jid
    if event.stanza.getAttribute("id"):
        reply["id"] = event.stanza["id"]
    event.room.route(reply)
    return True


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("http://jabber.org/protocol/muc#self-ping-optimization")
