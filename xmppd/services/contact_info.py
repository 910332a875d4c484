"""Server information in disco#info: contact addresses (XEP-0157) and outage status (XEP-0455).

Both are XEP-0128 extended forms on the server's disco#info, built per
request from the live config (so a reload changes them):

* ``http://jabber.org/network/serverinfo`` (XEP-0157 §3): the
  ``<kind>-addresses`` fields, from ``contact_info`` entries ``"kind=uri"``
  with kind one of abuse, admin, feedback, sales, security, status, support.
  Without an ``admin`` entry the configured ``admins`` are listed as
  ``xmpp:`` URIs, as XEP-0157 suggests operators do.
* ``urn:xmpp:sos:0`` (XEP-0455 §3): ``external-status-addresses``, from
  ``contact_info`` entries ``"outage=https://..."``: where clients fetch the
  service's status document while the server itself is unreachable.
"""
from wokkel.data_form import Field, Form

NS_SERVERINFO = "http://jabber.org/network/serverinfo"
NS_SOS = "urn:xmpp:sos:0"
KINDS = ("abuse", "admin", "feedback", "sales", "security", "status", "support")
OUTAGE = "outage"


def parse(entries):
    """``["kind=uri", ...]`` -> {kind: [uri, ...]}; ValueError names a bad entry."""
    out = {}
    for entry in entries:
        kind, sep, uri = entry.partition("=")
        kind, uri = kind.strip(), uri.strip()
        if not sep or (kind not in KINDS and kind != OUTAGE):
            raise ValueError(f"{entry!r} is not 'kind=uri' with kind one of "
                             f"{', '.join(KINDS + (OUTAGE,))}")
        if ":" not in uri or uri.startswith(":") or any(c.isspace() for c in uri):
            raise ValueError(f"{entry!r}: {uri!r} is not a URI (e.g. mailto:, xmpp:, https:)")
        if kind == OUTAGE and not uri.startswith(("https:", "http:")):
            raise ValueError(f"{entry!r}: outage status addresses are http(s) URLs (XEP-0455)")
        out.setdefault(kind, []).append(uri)
    return out


def install(router, cfg):
    def serverinfo():
        contacts = parse(cfg.contact_info)
        if "admin" not in contacts and cfg.admins:
            contacts["admin"] = [f"xmpp:{a}" for a in cfg.admins]
        if not any(contacts.get(k) for k in KINDS):
            return None
        form = Form("result", formNamespace=NS_SERVERINFO)
        for kind in KINDS:
            if contacts.get(kind):
                form.addField(Field("list-multi", var=f"{kind}-addresses", values=contacts[kind]))
        return form.toElement()

    def outage():
        uris = parse(cfg.contact_info).get(OUTAGE)
        if not uris:
            return None
        form = Form("result", formNamespace=NS_SOS)
        form.addField(Field("list-multi", var="external-status-addresses", values=uris))
        return form.toElement()

    router.server_info_forms.extend((serverinfo, outage))
