"""The PubSub core (a subset of XEP-0060) that PEP (XEP-0163) is built on.

What lives here is protocol-level and storage-free: node configuration
(defaults, the ``pubsub#node_config`` form, publish-options preconditions),
the XEP-0060 error conditions, access checks and payload (de)serialisation.
:mod:`xmppd.pubsub.pep` serves it on every account's bare JID; the nodes
and items are stored by :mod:`xmppd.storage.personal`.

Node options supported (``pubsub#node_config`` and publish-options):
``access_model`` (open, presence, roster, whitelist), ``max_items`` (a
number or ``max`` = ``pep_max_items_per_node``), ``persist_items``,
``publish_model`` (publishers: the owner only), ``send_last_published_item``
(never, on_sub, on_sub_and_presence), ``deliver_notifications``,
``deliver_payloads``, ``notify_retract``, ``notify_delete``, ``title``.

Access models on a server without rosters (XEP-0060 §4.5): ``open`` lets
any entity read and subscribe; ``presence`` and ``roster`` would need a
presence subscription or roster group, which this server never has, so
they admit the owner's own account only, as ``whitelist`` does (the
whitelist is the owner alone: no affiliation management). Gajim's OMEMO and
the avatar nodes the server creates from a vCard use ``open``.
"""
import re

from twisted.words.protocols.jabber.error import StanzaError
from twisted.words.xish import domish
from wokkel import data_form

from xmppd.wire.serialize import parse_stored

NS_PUBSUB = "http://jabber.org/protocol/pubsub"
NS_PUBSUB_OWNER = "http://jabber.org/protocol/pubsub#owner"
NS_PUBSUB_EVENT = "http://jabber.org/protocol/pubsub#event"
NS_PUBSUB_ERRORS = "http://jabber.org/protocol/pubsub#errors"
NS_NODE_CONFIG = "http://jabber.org/protocol/pubsub#node_config"
NS_PUBLISH_OPTIONS = "http://jabber.org/protocol/pubsub#publish-options"

ACCESS_MODELS = ("open", "presence", "roster", "whitelist")
SEND_LAST = ("never", "on_sub", "on_sub_and_presence")
MAX_ID_BYTES = 1024   # node names and item ids (bookmark ids are room JIDs)
_CONTROL = re.compile("[\x00-\x1f\x7f]")

# option -> (form field type, label)
OPTIONS = {
    "access_model": ("list-single", "Who may subscribe and retrieve items"),
    "max_items": ("text-single", "Max # of items to persist (a number or 'max')"),
    "persist_items": ("boolean", "Persist items to storage"),
    "publish_model": ("list-single", "Who may publish items"),
    "send_last_published_item": ("list-single", "When to send the last published item"),
    "deliver_notifications": ("boolean", "Deliver event notifications"),
    "deliver_payloads": ("boolean", "Deliver payloads with event notifications"),
    "notify_retract": ("boolean", "Notify subscribers when items are removed"),
    "notify_delete": ("boolean", "Notify subscribers when the node is deleted"),
    "title": ("text-single", "A friendly name for the node"),
}
_BOOLEANS = {k for k, (t, _) in OPTIONS.items() if t == "boolean"}
_CHOICES = {"access_model": ACCESS_MODELS, "publish_model": ("publishers",),
            "send_last_published_item": SEND_LAST}


def default_config(cfg):
    """XEP-0163 §4 defaults: presence access, one item, last item on subscription and presence."""
    return {"access_model": "presence", "max_items": 1, "persist_items": True,
            "publish_model": "publishers", "send_last_published_item": "on_sub_and_presence",
            "deliver_notifications": True, "deliver_payloads": True, "notify_retract": True,
            "notify_delete": True, "title": ""}


def error(condition, pubsub_condition=None, etype=None, text=None, feature=None):
    """A StanzaError with an optional XEP-0060 application condition (pubsub#errors)."""
    app = None
    if pubsub_condition is not None:
        app = domish.Element((NS_PUBSUB_ERRORS, pubsub_condition))
        if feature is not None:
            app["feature"] = feature
    from xmppd.wire.errors import ERROR_TYPES
    return StanzaError(condition, type=etype or ERROR_TYPES.get(condition, "cancel"),
                       text=text, appCondition=app)


def check_id(value, what):
    """Node names and item ids: present, bounded, no control characters (bad-request otherwise)."""
    if value is None or value == "":
        raise error("bad-request", "nodeid-required" if what == "node" else "item-required")
    if len(value.encode("utf-8")) > MAX_ID_BYTES or _CONTROL.search(value):
        raise error("bad-request", text=f"invalid {what} id")
    return value


def _parse_value(option, values, cfg):
    """Typed value of one option from form values; ValueError when it does not parse."""
    if len(values) != 1:
        raise ValueError(option)
    v = values[0].strip() if isinstance(values[0], str) else values[0]
    if option in _BOOLEANS:
        if isinstance(v, bool):
            return v
        if v in ("1", "true"):
            return True
        if v in ("0", "false"):
            return False
        raise ValueError(option)
    if option == "max_items":
        cap = cfg.pep_max_items_per_node
        if v == "max":
            return cap
        n = int(v)
        if n < 1:
            raise ValueError(option)
        return min(n, cap)
    if option in _CHOICES:
        if v not in _CHOICES[option]:
            raise ValueError(option)
        return v
    if option == "title" and len(v) > 1024:
        raise ValueError(option)
    return v


def parse_form(el, form_type, cfg, ignore_unknown=False):
    """{option: value} from a submitted pubsub#node_config / publish-options form.

    Raises bad-request for a form that does not parse (wrong FORM_TYPE,
    bad values); an unknown field is KeyError(field) unless ignored.
    """
    form_el = None
    for c in el.elements():
        if c.uri == data_form.NS_X_DATA and c.name == "x":
            if form_el is not None:
                raise error("bad-request", text="more than one form")
            form_el = c
    if form_el is None:
        return {}
    try:
        form = data_form.Form.fromElement(form_el)
    except Exception:
        raise error("bad-request", text="the form does not parse")
    namespace = form.formNamespace
    if namespace is None and "FORM_TYPE" in form.fields:   # some clients omit type='hidden'
        namespace = form.fields["FORM_TYPE"].value
    if form.formType not in ("submit", "result") or namespace != form_type:
        raise error("bad-request", text=f"FORM_TYPE must be {form_type}")
    out = {}
    prefix = "pubsub#"
    for var, field in form.fields.items():
        if var == "FORM_TYPE":
            continue
        name = var[len(prefix):] if var.startswith(prefix) else None
        if name not in OPTIONS:
            if ignore_unknown:
                continue
            raise KeyError(var)
        try:
            out[name] = _parse_value(name, list(field.values), cfg)
        except (ValueError, TypeError):
            raise error("bad-request", text=f"invalid value for {var}")
    return out


def config_form(config, cfg):
    """The ``pubsub#node_config`` form (type form) for a node's current configuration."""
    form = data_form.Form("form", formNamespace=NS_NODE_CONFIG)
    for name, (ftype, label) in OPTIONS.items():
        value = config.get(name)
        kwargs = {}
        if name in _CHOICES:
            kwargs["options"] = [data_form.Option(c) for c in _CHOICES[name]]
        if ftype == "boolean":
            field = data_form.Field(ftype, var="pubsub#" + name, label=label, value=bool(value),
                                    **kwargs)
        else:
            field = data_form.Field(ftype, var="pubsub#" + name, label=label,
                                    value=str(value) if value is not None else "", **kwargs)
        form.addField(field)
    return form.toElement()


def precondition_check(preconditions):
    """``check(config)`` raising conflict/precondition-not-met when a node's config differs."""
    def check(config):
        for name, want in preconditions.items():
            if config.get(name) != want:
                raise error("conflict", "precondition-not-met",
                            text=f"node has pubsub#{name} = {config.get(name)!r}")
    return check


def may_read(config, owner_bare, requester_bare):
    """XEP-0060 §6.1.3/§6.5.x access check; None when allowed, else the StanzaError."""
    if requester_bare == owner_bare:
        return None
    model = config.get("access_model", "presence")
    if model == "open":
        return None
    if model == "presence":
        return error("not-authorized", "presence-subscription-required", etype="auth")
    if model == "roster":
        return error("not-authorized", "not-in-roster-group", etype="auth")
    return error("not-allowed", "closed-node", etype="cancel")


def serialise(payload):
    return payload.toXml()


def parse_elements(text):
    """Re-read stored serialised elements (one or more, concatenated)."""
    return parse_stored(text)


def parse_payload(text):
    """Re-read one stored payload element."""
    out = parse_elements(text)
    if len(out) != 1:
        raise ValueError("stored payload is not one element")
    return out[0]
