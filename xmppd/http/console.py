"""``/console``: a live developer console in the browser.

Shows the connected sessions (JID, transport, address, presence), the rooms
with their occupants, and the ``--trace`` stanza log as it happens (Server-
Sent Events from ``/console/events``), filterable by JID. Secrets are
redacted exactly as in the log (the trace lines are the log's own events).
While a console page is open, stanza tracing is on for every session, so
the page shows traffic even when the server was not started with
``--trace``; it goes back to the configured value when the last page
closes.

Served only when the HTTP listener is on a loopback address, or with
``web_console = true`` (``web_console = false`` turns it off everywhere).
"""
import json
import time

from twisted.logger import globalLogPublisher
from twisted.web import resource, server

MAX_QUEUE = 1000        # events buffered per slow viewer before it is dropped
LOOPBACK = ("127.0.0.1", "::1", "localhost")

PAGE = b"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>xmppd console</title>
<style>
body { font: 13px/1.4 system-ui, sans-serif; margin: 0; display: grid;
       grid-template-columns: 22em 1fr; height: 100vh; }
aside { border-right: 1px solid #ccc; padding: .5em 1em; overflow: auto; background: #fafafa; }
main { display: flex; flex-direction: column; min-width: 0; }
header { padding: .5em 1em; border-bottom: 1px solid #ccc; }
#log { flex: 1; overflow: auto; margin: 0; padding: .5em 1em; font: 12px/1.35 monospace; }
.IN { color: #05a; } .OUT { color: #070; } .meta { color: #888; }
h2 { font-size: 1em; margin: 1em 0 .3em; } ul { padding-left: 1.2em; margin: 0; }
code { font-size: 12px; }
</style></head>
<body>
<aside><h2>Sessions</h2><ul id="sessions"></ul><h2>Rooms</h2><ul id="rooms"></ul></aside>
<main>
<header>Trace, filtered by JID: <input id="jid" placeholder="alice@localhost" size="30">
<button id="clear">clear</button> <span class="meta" id="status"></span></header>
<pre id="log"></pre></main>
<script>
const log = document.getElementById("log"), jid = document.getElementById("jid");
let source = null;
function text(s) { return document.createTextNode(s); }
function connect() {
  if (source) source.close();
  source = new EventSource("console/events?jid=" + encodeURIComponent(jid.value.trim()));
  source.onopen = () => document.getElementById("status").textContent = "live";
  source.onerror = () => document.getElementById("status").textContent = "reconnecting...";
  source.onmessage = (m) => {
    const e = JSON.parse(m.data), line = document.createElement("div");
    const meta = document.createElement("span");
    meta.className = "meta";
    meta.appendChild(text(e.time + " " + e.cid + " " + (e.jid || "") + " "));
    line.className = e.dir;
    line.appendChild(meta);
    line.appendChild(text(e.dir + " " + e.xml));
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 5;
    log.appendChild(line);
    while (log.childNodes.length > 2000) log.removeChild(log.firstChild);
    if (stick) log.scrollTop = log.scrollHeight;
  };
}
async function refresh() {
  try {
    const s = await (await fetch("console/state")).json();
    const ul = document.getElementById("sessions"); ul.replaceChildren();
    for (const x of s.sessions) {
      const li = document.createElement("li");
      li.appendChild(text(`${x.jid} (${x.transport}, ${x.peer || "detached"}${x.available ? "" : ", unavailable"})`));
      ul.appendChild(li);
    }
    const rl = document.getElementById("rooms"); rl.replaceChildren();
    for (const r of s.rooms) {
      const li = document.createElement("li"); li.appendChild(text(r.jid));
      const sub = document.createElement("ul");
      for (const o of r.occupants) { const x = document.createElement("li");
        x.appendChild(text(`${o.nick} (${o.role}) ${o.jid}`)); sub.appendChild(x); }
      li.appendChild(sub); rl.appendChild(li);
    }
  } catch (e) {}
}
jid.addEventListener("change", connect);
document.getElementById("clear").onclick = () => log.replaceChildren();
connect(); refresh(); setInterval(refresh, 2000);
</script></body></html>
"""


def enabled(cfg):
    """``web_console``: "true", "false", or "auto" (on when the listener is on loopback)."""
    if cfg.web_console == "auto":
        return (cfg.http_interface or cfg.interface) in LOOPBACK
    return cfg.web_console == "true"


class Console(resource.Resource):
    def __init__(self, http):
        super().__init__()
        self.http = http
        self.putChild(b"events", Events(http))
        self.putChild(b"state", State(http))

    def getChild(self, name, request):
        if name == b"":
            return self
        return resource.NoResource()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy",
                          b"default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
        if not request.path.endswith(b"/"):
            request.redirect(request.path + b"/")
            return b""
        return PAGE


class State(resource.Resource):
    isLeaf = True

    def __init__(self, http):
        super().__init__()
        self.http = http

    def render_GET(self, request):
        manager = self.http.manager
        sessions = []
        for s in list(manager.router.sessions.full.values()):
            t = s.transport
            sessions.append({"jid": s.full, "peer": s.peer, "available": bool(s.available),
                             "transport": getattr(t, "kind", "?") if t is not None else "detached"})
        sessions.sort(key=lambda x: x["jid"])
        rooms = []
        muc = getattr(manager.router, "muc", None)
        for room in list(getattr(muc, "rooms", {}).values()):
            rooms.append({"jid": room.jid, "occupants": [
                {"nick": o.nick, "role": o.role, "jid": o.jid} for o in room.occupants.values()]})
        rooms.sort(key=lambda r: r["jid"])
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps({"sessions": sessions, "rooms": rooms}).encode()


class Events(resource.Resource):
    """``/console/events?jid=``: the trace as Server-Sent Events."""

    isLeaf = True

    def __init__(self, http):
        super().__init__()
        self.http = http
        self.viewers = []          # (request, jid filter)

    def render_GET(self, request):
        want = (request.args.get(b"jid") or [b""])[0].decode("utf-8", "replace").strip()
        request.setHeader(b"content-type", b"text/event-stream")
        request.setHeader(b"cache-control", b"no-store")
        request.write(b": xmppd trace\n\n")
        viewer = (request, want)
        if not self.viewers:
            globalLogPublisher.addObserver(self.observe)
            self._trace(True)
        self.viewers.append(viewer)
        request.notifyFinish().addBoth(lambda _: self._gone(viewer))
        return server.NOT_DONE_YET

    def _gone(self, viewer):
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        if not self.viewers:
            globalLogPublisher.removeObserver(self.observe)
            self._trace(False)

    def _trace(self, on):
        """Trace every session while a console is open (back to the config after)."""
        manager = self.http.manager
        cfg = manager.cfg
        if on:
            self._configured = cfg.trace
        value = True if on else getattr(self, "_configured", cfg.trace)
        cfg.trace = value
        manager.router.trace = value
        for s in list(manager.sessions):
            s.trace = value
            t = s.transport
            if t is not None and hasattr(t, "trace"):
                t.trace = value

    def observe(self, event):
        xml = event.get("xml")
        if xml is None or not str(event.get("log_namespace", "")).startswith("xmppd.c2s"):
            return
        fmt = event.get("log_format", "")
        direction = "IN" if " IN " in fmt else "OUT" if " OUT " in fmt else None
        if direction is None:
            return
        jid = event.get("jid") or ""
        data = None
        for viewer in list(self.viewers):
            request, want = viewer
            if want and want not in jid and want not in xml:
                continue
            if data is None:
                data = ("data: " + json.dumps({
                    "time": time.strftime("%H:%M:%S", time.localtime(event.get("log_time", 0))),
                    "cid": event.get("cid", ""), "jid": jid, "dir": direction,
                    "xml": xml}) + "\n\n").encode()
            transport = request.channel.transport if request.channel else None
            if transport is not None and len(getattr(transport, "dataBuffer", b"")) > MAX_QUEUE * 1024:
                request.loseConnection()        # a viewer that does not read is dropped
                continue
            request.write(data)
