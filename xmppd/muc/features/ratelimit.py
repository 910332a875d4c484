"""Per-occupant message rate (``cfg.muc_message_rate``/s, bursts of ``cfg.muc_message_burst``).

One flooding occupant would otherwise cost every other occupant a delivery
per message, and invitations are a way to spam anybody through the room.
Over the limit, a groupchat or private message, an invitation (one per
invitee), a decline or a voice request is refused with
``policy-violation`` of type ``wait`` (as Prosody's mod_muc_limits does)
and nothing is broadcast; the sender may retry once tokens refill. Service
admins are exempt. The buckets live on the room, keyed by the sender's
real JID, and go away when an occupant leaves (a non-occupant's bucket
stays until the room goes away). Off (0) by default, as in
Prosody.
"""
from twisted.internet import reactor

from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature

feature = Feature("ratelimit")

MAX_BUCKETS = 10000
TEXT = "You are sending messages too fast; please wait a moment"


def _check(event, jid=None, cost=1):
    room = event.room
    cfg = room.service.cfg
    rate = getattr(cfg, "muc_message_rate", 0)
    if not rate:
        return
    jid = jid or event.occupant.jid
    if jid.split("/", 1)[0] in room.service.admins:
        return
    burst = max(1, getattr(cfg, "muc_message_burst", 10))
    buckets = room.__dict__.setdefault("_rate_buckets", {})
    now = reactor.seconds()
    tokens, stamp = buckets.get(jid, (burst, now))
    tokens = min(burst, tokens + (now - stamp) * rate)
    if tokens < cost:
        buckets[jid] = (tokens, now)
        raise stanza_error("policy-violation", "wait", TEXT)
    buckets[jid] = (tokens - cost, now)
    if len(buckets) > MAX_BUCKETS:                 # non-occupants: bounded memory
        del buckets[next(iter(buckets))]


@feature.hook("muc-occupant-groupchat", priority=1000)
def _groupchat(event):
    _check(event)


@feature.hook("muc-private-message", priority=1000)
def _private(event):
    _check(event)


@feature.hook("muc-message-to-room", priority=1000)
def _to_room(event):
    """Invitations, declines and voice requests: each invitee costs one message."""
    invites = 0
    for x in event.stanza.elements():
        if x.name == "x":
            invites += sum(1 for c in x.elements() if c.name in ("invite", "decline"))
    occ = event.occupant
    _check(event, jid=occ.jid if occ is not None else event.jid, cost=max(1, invites))


@feature.hook("muc-occupant-left")
def _left(event):
    buckets = event.room.__dict__.get("_rate_buckets")
    if buckets:
        buckets.pop(event.occupant.jid, None)
