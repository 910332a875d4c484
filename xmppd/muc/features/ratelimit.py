"""Per-occupant message rate (``cfg.muc_message_rate``/s, bursts of ``cfg.muc_message_burst``).

One flooding occupant would otherwise cost every other occupant a delivery
per message. Over the limit, a groupchat or private message is refused with
``policy-violation`` of type ``wait`` (as Prosody's mod_muc_limits does)
and nothing is broadcast; the sender may retry once tokens refill. Service
admins are exempt. The buckets live on the room, keyed by the occupant's
real JID, and go away when the occupant leaves. Off (0) by default, as in
Prosody.
"""
from twisted.internet import reactor

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("ratelimit")

TEXT = "You are sending messages too fast; please wait a moment"


def _check(event):
    room = event.room
    cfg = room.service.cfg
    rate = getattr(cfg, "muc_message_rate", 0)
    if not rate:
        return
    occ = event.occupant
    if occ.bare in room.service.admins:
        return
    burst = max(1, getattr(cfg, "muc_message_burst", 10))
    buckets = room.__dict__.setdefault("_rate_buckets", {})
    now = reactor.seconds()
    tokens, stamp = buckets.get(occ.jid, (burst, now))
    tokens = min(burst, tokens + (now - stamp) * rate)
    if tokens < 1:
        buckets[occ.jid] = (tokens, now)
        raise stanza_error("policy-violation", "wait", TEXT)
    buckets[occ.jid] = (tokens - 1, now)


@feature.hook("muc-occupant-groupchat", priority=1000)
def _groupchat(event):
    _check(event)


@feature.hook("muc-private-message", priority=1000)
def _private(event):
    _check(event)


@feature.hook("muc-occupant-left")
def _left(event):
    buckets = event.room.__dict__.get("_rate_buckets")
    if buckets:
        buckets.pop(event.occupant.jid, None)
