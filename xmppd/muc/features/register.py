"""Reserved nicknames (XEP-0045 §7.10-7.12): the room side of registration.

The protocol itself is in :mod:`xmppd.muc.register`; this module keeps a
reserved nick for its owner (conflict for anyone else), answers the
``x-roomuser-item`` disco node, and advertises ``jabber:iq:register``.
"""
from twisted.words.xish.domish import Element

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"

feature = Feature("register", defaults={"allow_unaffiliated_register": False})


def _check(room, bare, nick):
    holder = room.registered_jid(nick)
    if holder is not None and holder != bare:
        raise stanza_error("conflict", "cancel", "That nickname is reserved")


@feature.hook("muc-occupant-pre-join")
def _pre_join(event):
    _check(event.room, event.occupant.bare, event.occupant.nick)


@feature.hook("muc-occupant-pre-change")
def _pre_change(event):
    if event.new_nick is not None:
        _check(event.room, event.occupant.bare, event.new_nick)


@feature.hook("muc-disco#info/x-roomuser-item")
def _roomuser_item(event):
    bare = event.requestor.split("/", 1)[0]
    nick = event.room.registered_nick(bare)
    if nick:
        ident = Element((NS_DISCO_INFO, "identity"))
        ident["category"] = "conference"
        ident["name"] = nick
        ident["type"] = "text"
        event.result.append(ident)
    return True


@feature.hook("muc-disco#info")
def _disco(event):
    event.features.add("jabber:iq:register")
