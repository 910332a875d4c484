"""XEP-0156: ``/.well-known/host-meta`` (XRD) and ``/.well-known/host-meta.json``.

The links name the WebSocket and BOSH endpoints at the address the client
used (its Host header), so discovery works behind a port mapping too.
"""
import json

from twisted.web import resource
from twisted.words.xish import domish

REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"


class HostMeta(resource.Resource):
    isLeaf = True

    def __init__(self, http, json):
        super().__init__()
        self.http = http
        self.json = json

    def links(self, request):
        base, ws = self.http.urls(request)
        out = [(REL_WEBSOCKET, ws + "/xmpp-websocket")]
        if getattr(self.http, "bosh", None) is not None:
            out.append((REL_BOSH, base + "/http-bind"))
        return out

    def render_OPTIONS(self, request):
        return self.http.cors.preflight(request)

    def render_GET(self, request):
        self.http.cors.apply(request)
        links = self.links(request)
        if self.json:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"links": [{"rel": r, "href": h} for r, h in links]}).encode()
        request.setHeader(b"content-type", b"application/xrd+xml")
        body = "".join(f"<Link rel='{r}' href='{domish.escapeToXml(h, 1)}'/>" for r, h in links)
        return (f"<?xml version='1.0' encoding='utf-8'?>"
                f"<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>{body}</XRD>").encode()
