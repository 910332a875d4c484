"""Raw-socket helpers shared by the personal-data tests (PEP, vCard, private storage, bookmarks)."""
import itertools
import xml.etree.ElementTree as ET

from test_c2s_raw import C, Raw

PS = "{http://jabber.org/protocol/pubsub}"
PSO = "{http://jabber.org/protocol/pubsub#owner}"
EV = "{http://jabber.org/protocol/pubsub#event}"
PSE = "{http://jabber.org/protocol/pubsub#errors}"
STANZAS = "{urn:ietf:params:xml:ns:xmpp-stanzas}"
_ids = itertools.count()


def login(server, user, presence=None, resource="r"):
    c = Raw(server.port)
    c.login(user, "pw", resource=resource)
    if presence is not None:
        c.send(presence)
    return c


def iq(c, body, type="set", to=None, skip=()):
    """Send an IQ and return the answer with the same id (other stanzas are kept in ``c.other``)."""
    iq_id = f"q{next(_ids)}"
    to_attr = f" to='{to}'" if to else ""
    c.send(f"<iq type='{type}' id='{iq_id}'{to_attr}>{body}</iq>")
    while True:
        el = c.next()
        if el.tag == f"{C}iq" and el.get("id") == iq_id:
            return el
        if not hasattr(c, "other"):
            c.other = []
        c.other.append(el)


def error_of(el):
    """(type, condition, pubsub condition or None) of an error IQ."""
    assert el.get("type") == "error", ET.tostring(el)
    err = el.find(f"{C}error")
    cond = app = None
    for child in err:
        if child.tag.startswith(STANZAS) and child.tag != f"{STANZAS}text":
            cond = child.tag[len(STANZAS):]
        elif child.tag.startswith(PSE):
            app = child.tag[len(PSE):]
    return err.get("type"), cond, app


def ok(el):
    assert el.get("type") == "result", ET.tostring(el)
    return el


def publish(c, node, item_id, payload, options=None, to=None):
    opts = ""
    if options:
        fields = "".join(f"<field var='pubsub#{k}'><value>{v}</value></field>" for k, v in options.items())
        opts = ("<publish-options><x xmlns='jabber:x:data' type='submit'>"
                "<field var='FORM_TYPE' type='hidden'>"
                "<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
                f"{fields}</x></publish-options>")
    item = f"<item id='{item_id}'>{payload}</item>" if item_id is not None else f"<item>{payload}</item>"
    return iq(c, f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><publish node='{node}'>"
                 f"{item}</publish>{opts}</pubsub>", to=to)


def items(c, owner, node, extra=""):
    return iq(c, f"<pubsub xmlns='http://jabber.org/protocol/pubsub'><items node='{node}'{extra}/></pubsub>",
              type="get", to=owner)


def events(c, wait=0.5):
    """Every pubsub event message that arrives within ``wait`` seconds (plus ones already seen)."""
    out = [e for e in getattr(c, "other", []) if e.find(f"{EV}event") is not None]
    c.other = [e for e in getattr(c, "other", []) if e.find(f"{EV}event") is None]
    try:
        while True:
            el = c.next(wait)
            if el.tag == f"{C}message" and el.find(f"{EV}event") is not None:
                out.append(el)
            else:
                c.other.append(el)
    except AssertionError:
        return out


def sync(c):
    iq(c, "<ping xmlns='urn:xmpp:ping'/>", type="get")
