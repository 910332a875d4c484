"""Registration approval (XEP-0045 §9.9): admins approve registrations from non-members.

With the room option on, an unaffiliated user who submits the
``muc#register`` form (§7.10) is not refused with registration-required:
the request is kept (in memory, at most ``muc_max_registration_requests``
per room; resource-constraint beyond) and every admin and owner of the
room gets a message from the room with the approval form of §9.9 (the
user's answers, ``muc#register_allow`` unchecked, and ``muc#jid`` naming
the user). An admin or owner who sends that form back (type submit, to the
bare room JID) with ``muc#register_allow`` true makes the user a member
with the requested nick reserved (the usual affiliation notifications
follow); false drops the request. Others get forbidden; an unknown or
already handled request is item-not-found. The requester learns the
outcome from the affiliation change (or by asking again).
"""
from twisted.words.xish.domish import Element
from wokkel.data_form import Field, Form

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Feature
from xmppd.muc.room import AFFILIATIONS, NS_DATA

NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
F_APPROVAL = "x-xmppd-registration-approval"

feature = Feature("registration_approval", defaults={"registration_approval": False})


@feature.hook("muc-config-form", priority=56)
def _form(event):
    event.form.append(Field(
        "boolean", var=F_APPROVAL, label="Non-members may ask to register; admins approve",
        desc="Registration requests from users without an affiliation are sent to the room's "
             "admins and owners for approval (XEP-0045 9.9)",
        value=bool(event.room.config.get("registration_approval"))))


@feature.hook("muc-config-submitted/" + F_APPROVAL)
def _set(event):
    if event.room.set_config("registration_approval", bool(event.value)):
        event.status_codes.add("104")

LABELS = {"muc#register_first": "Given Name", "muc#register_last": "Family Name",
          "muc#register_roomnick": "Desired Nickname", "muc#register_url": "User URL",
          "muc#register_email": "Email Address", "muc#register_faqentry": "FAQ Entry"}


def _requests(room):
    reqs = getattr(room, "registration_requests", None)
    if reqs is None:
        reqs = room.registration_requests = {}
    return reqs


def approval_form(bare, nick, values):
    form = Form("form", title="Registration request", formNamespace=NS_MUC_REGISTER,
                instructions=["To approve this registration request, select the \"Allow this "
                              "person to register with the room?\" checkbox and submit the form."])
    form.addField(Field("jid-single", var="muc#jid", label="User ID", value=bare))
    for var, label in LABELS.items():
        given = values.get(var) or []
        if var == "muc#register_roomnick":
            given = [nick]
        if not given:
            continue
        if var == "muc#register_faqentry":
            form.addField(Field("text-multi", var=var, label=label, values=given[:20]))
        else:
            form.addField(Field("text-single", var=var, label=label, value=given[0][:1000]))
    form.addField(Field("boolean", var="muc#register_allow",
                        label="Allow this person to register with the room?", value=False))
    return form.toElement()


@feature.hook("muc-registration-request")
def _request(event):
    room = event.room
    reqs = _requests(room)
    limit = int(getattr(room.service.cfg, "muc_max_registration_requests", 100))
    if event.jid not in reqs and len(reqs) >= limit:
        raise stanza_error("resource-constraint", "wait", "Too many pending registration requests")
    reqs[event.jid] = event.nick
    msg = Element((None, "message"))
    msg["from"] = room.jid
    msg.addChild(approval_form(event.jid, event.nick, event.form))
    # admins and owners in the room get it in their room sessions; the others at their
    # bare JID (available resources, or offline storage)
    in_room = {}
    for occ in room.occupants.values():
        in_room.setdefault(occ.bare, []).extend(occ.sessions)
    targets = []
    for bare, aff in list(room.affiliations.items()):
        if aff in ("admin", "owner") and "@" in bare:
            targets.extend(in_room.get(bare) or [bare])
    for to in targets:
        m = _copy(msg)
        m["to"] = to
        room.route(m)
    return True


def _copy(msg):
    m = Element((None, "message"))
    m["from"] = msg["from"]
    for c in msg.elements():
        m.addChild(c)
    return m


def _submitted(stanza):
    for x in stanza.elements():
        if x.name == "x" and x.uri == NS_DATA and x.getAttribute("type") == "submit":
            values = {}
            for f in x.elements():
                if f.name == "field" and f.getAttribute("var"):
                    vals = [str(v).strip() for v in f.elements() if v.name == "value"]
                    values[f["var"]] = vals[0] if vals else None
            if values.get("FORM_TYPE") == NS_MUC_REGISTER:
                return values
    return None


@feature.hook("muc-message-to-room")
def _decision(event):
    stanza = event.stanza
    if stanza.getAttribute("type") not in (None, "normal"):
        return None
    values = _submitted(stanza)
    if values is None:
        return None
    room = event.room
    if AFFILIATIONS[room.get_affiliation(event.jid)] < AFFILIATIONS["admin"]:
        raise stanza_error("forbidden", "auth", "Only admins and owners approve registrations")
    j = jidlib.parse_or_none(values.get("muc#jid") or "")
    bare = j.userhost() if j is not None else None
    reqs = _requests(room)
    nick = reqs.pop(bare, None) if bare else None
    if nick is None:
        raise stanza_error("item-not-found", "cancel", "No such registration request")
    if values.get("muc#register_allow") not in ("1", "true"):
        return True
    holder = room.registered_jid(nick)
    if holder is not None and holder != bare:
        raise stanza_error("conflict", "cancel", "The nickname was reserved meanwhile")
    if room.get_affiliation(bare) == "none":
        data = dict(room.aff_data.get(bare) or {})
        data["nick"] = nick
        room.set_affiliation(None, bare, "member", None, data)
    return True
