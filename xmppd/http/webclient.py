"""The built-in web client page: converse.js, pre-configured for this server, at ``/``.

converse.js is not part of xmppd: ``web_client_assets`` says where the page
loads it from. By default that is converse.js's own CDN (the URL of one
release's ``dist/`` folder, as Prosody's ``mod_conversejs`` does); set it to a
local directory (e.g. the ``dist`` folder ``npm install converse.js`` filled)
to work offline; xmppd then serves that folder at ``/converse.js/``.
The page connects over WebSocket to this listener (``?transport=bosh``
switches to BOSH), with the domain and MUC domain of this server;
``?room=name@conference.example`` joins that room after login (a link to
hand to a colleague).
"""
import json
import os

from twisted.web import resource, static


ASSET_PATH = b"converse.js"

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>xmppd web client</title>
<link rel="stylesheet" type="text/css" media="screen" href="{assets}/converse.min.css">
<script type="module" src="{assets}/converse.min.js" charset="utf-8"></script>
</head>
<body class="converse-fullscreen">
<noscript>The web client needs JavaScript.</noscript>
<script type="module">
const options = {options};
const params = new URLSearchParams(window.location.search);
const transport = params.get("transport");
if (params.get("room")) {{
  options.auto_join_rooms = [params.get("room")];
}}
const base = window.location.origin;
if (transport === "bosh") {{
  options.bosh_service_url = base + "/http-bind";
}} else {{
  options.websocket_url = base.replace(/^http/, "ws") + "/xmpp-websocket";
}}
converse.initialize(options);
</script>
</body>
</html>
"""


def is_local(assets):
    return not assets.startswith(("http://", "https://", "//"))


class WebClient(resource.Resource):
    """``/``: the page (anything else under ``/`` that is not mounted is 404)."""

    isLeaf = True

    def __init__(self, cfg):
        super().__init__()
        assets = cfg.web_client_assets.rstrip("/")
        self.local = is_local(assets)
        href = "/" + ASSET_PATH.decode() if self.local else assets
        options = {
            "assets_path": href + "/",
            "discover_connection_methods": False,
            "allow_non_roster_messaging": True,
            "view_mode": "fullscreen",
            "locked_domain": cfg.domain,
            "default_domain": cfg.domain,
            "muc_domain": cfg.muc_domain,
            "auto_join_rooms": [],
            "muc_nickname_from_jid": True,
            "show_client_info": False,
            "theme": "concord",
        }
        self.page = PAGE.format(assets=href, options=json.dumps(options)).encode()

    def render_GET(self, request):
        if request.postpath not in ([], [b""]):
            request.setResponseCode(404)
            return b"not found\n"
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"cache-control", b"no-cache")
        return self.page


def mount(root, cfg):
    """Put the page at ``/`` and, for local assets, the folder at ``/converse.js/``."""
    page = WebClient(cfg)
    if page.local:
        path = os.path.abspath(cfg.web_client_assets)
        files = static.File(path)
        files.indexNames = []
        files.childNotFound = resource.NoResource("not found")
        root.putChild(ASSET_PATH, files)
    return page
