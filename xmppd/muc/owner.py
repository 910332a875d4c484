"""muc#owner (XEP-0045 §10): the room configuration form and room destruction.

The form is assembled from the ``muc-config-form`` event (each feature
appends its fields); a submission is type-checked against those same
fields, then ``muc-config-submitted`` and ``muc-config-submitted/<var>``
fire, and changed options are announced with status codes (104, 170-174).
"""
from twisted.words.xish.domish import Element
from wokkel import data_form

from xmppd import jid as jidlib
from xmppd.muc.errors import stanza_error
from xmppd.muc.hooks import Event
from xmppd.muc.room import NS_DATA, NS_OWNER, NS_USER

NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"


def handle(room, iq, query, frm, itype):
    if room.get_affiliation(frm) != "owner":
        raise stanza_error("forbidden", "auth", "Only owners can configure rooms")
    if itype == "get":
        result = Element((NS_OWNER, "query"))
        result.addChild(config_form(room, frm).toElement())
        return result
    child = query.firstChildElement()
    if child is None:
        raise stanza_error("bad-request", "cancel")
    if child.name == "destroy":
        alt = child.getAttribute("jid")
        if alt is not None:
            j = jidlib.parse_or_none(alt)
            if j is None:
                raise stanza_error("jid-malformed", "modify")
            alt = j.full()
        reason = password = None
        for c in child.elements():
            if c.name == "reason":
                reason = str(c)
            elif c.name == "password":
                password = str(c)
        room.destroy(reason=reason, alternate=alt, password=password, actor=frm)
        return None
    if child.name == "x" and child.uri == NS_DATA:
        ftype = child.getAttribute("type")
        if ftype == "cancel":
            room.hooks.fire("muc-config-cancelled", Event(room=room, actor=frm))
            if room.config.get("locked"):
                # §10.1.3: cancelling the initial configuration destroys the room
                room.service.after_reply(lambda: room.destroy(actor=frm))
            return None
        if ftype != "submit":
            raise stanza_error("bad-request", "cancel", "Not a submitted form")
        submit(room, child, frm)
        return None
    raise stanza_error("bad-request", "cancel")


def form_fields(room, actor):
    ev = Event(room=room, form=[], actor=actor)
    room.hooks.fire("muc-config-form", ev)
    return ev.form


def config_form(room, actor):
    form = data_form.Form("form", title=f"Configuration for {room.jid}",
                          instructions=["Complete and submit this form to configure the room."],
                          formNamespace=NS_ROOMCONFIG)
    for f in form_fields(room, actor):
        form.addField(f)
    return form


def _field_defs(fields):
    defs = {}
    for f in fields:
        if not f.var:
            continue
        d = {"type": f.fieldType}
        if f.options:
            d["options"] = {o.value: o.label for o in f.options}
        defs[f.var] = d
    return defs


def submit(room, x, actor):
    fields = [c for c in x.elements() if c.name == "field"]
    values = {}
    present = []
    form_type = None
    if fields:
        for c in fields:
            if c.getAttribute("var") == "FORM_TYPE":
                for v in c.elements():
                    if v.name == "value":
                        form_type = str(v).strip()
        if form_type != NS_ROOMCONFIG:
            raise stanza_error("bad-request", "cancel", "Form is not of type room configuration")
        defs = _field_defs(form_fields(room, actor))
        try:
            form = data_form.Form.fromElement(x)
            form.formNamespace = NS_ROOMCONFIG
            form.fields.pop("FORM_TYPE", None)
            form.fieldList = [f for f in form.fieldList if f.var != "FORM_TYPE"]
            form.typeCheck(defs, filterUnknown=True)
        except Exception as e:
            raise stanza_error("not-acceptable", "modify", f"Invalid form: {e}")
        for f in form.fieldList:
            if f.var in defs:
                ftype = defs[f.var]["type"]
                if ftype in ("list-multi", "jid-multi", "text-multi"):
                    val = [v.full() if hasattr(v, "full") else v for v in f.values]
                else:
                    val = f.value
                    if hasattr(val, "full"):
                        val = val.full()
                    opts = defs[f.var].get("options")
                    if ftype == "list-single" and opts and val is not None and val not in opts:
                        raise stanza_error("not-acceptable", "modify",
                                           f"Invalid value for {f.var}")
                if ftype == "list-multi" and defs[f.var].get("options"):
                    bad = [v for v in val if v not in defs[f.var]["options"]]
                    if bad:
                        raise stanza_error("not-acceptable", "modify", f"Invalid value for {f.var}")
                values[f.var] = val
                present.append(f.var)
    codes = set()
    before = dict(room.config)
    ev = Event(room=room, form=values, status_codes=codes, actor=actor, field=None, value=None)
    room.hooks.fire("muc-config-submitted", ev)
    for var in present:
        ev.field, ev.value = var, values[var]
        room.hooks.fire(f"muc-config-submitted/{var}", ev)
    ev.field = ev.value = None
    room.hooks.fire("muc-config-applied", ev)
    def rollback():
        room.config.clear()         # not stored: not applied either (as far as config goes)
        room.config.update(before)

    try:
        d = room.save()
    except Exception:
        rollback()
        raise
    if d is not None:               # the reply waits for the commit; undo if it fails
        d.addErrback(lambda f: (rollback(), f)[1])
    # an owner may configure from outside: an empty room that is no longer persistent goes
    room.service.after_reply(lambda: room.service.room_maybe_empty(room))
    if codes:
        msg = Element((None, "message"))
        msg["type"] = "groupchat"
        msg["from"] = room.jid
        xs = msg.addElement((NS_USER, "x"))
        for code in sorted({str(c) for c in codes}, key=int):
            xs.addElement("status")["code"] = code
        # after the IQ result: the service replies first (see service.handle_room_iq)
        room.service.after_reply(lambda: room.broadcast_message(msg))
