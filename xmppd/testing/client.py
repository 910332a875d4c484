"""A minimal asyncio XMPP client for scripted conversations.

"Connecting" means exactly what scansion does: TCP, STARTTLS when offered (the certificate is not
verified: test servers use self-signed ones), SASL PLAIN, resource binding (the resource of the
configured JID is requested when there is one), the session IQ only when the server says it is
mandatory, and NOTHING else: no presence, no roster. After binding, every element the server sends
is queued for the script's ``receives`` steps, stream errors (``<error xmlns='http://etherx.jabber.org/streams'>``)
included, so a script can expect one.

This module deliberately depends on nothing but the standard library, so it can script any server.
"""
from __future__ import annotations

import asyncio
import base64
import ssl
import xml.etree.ElementTree as ET
from typing import Callable

from xmppd.testing.script import CLIENT_NS, SCANSION_NS

STREAM_NS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
XML_NS = "http://www.w3.org/XML/1998/namespace"


class ClientError(Exception):
    """Login failed or the connection broke; the message says at which stage and why."""


class StreamClosed(ClientError):
    """The server closed the stream or the TCP connection."""


class _Closed:
    """Queue sentinel: the stream ended (``reason`` says how)."""

    def __init__(self, reason: str):
        self.reason = reason


def split_jid(jid: str) -> tuple[str, str, str]:
    """(localpart, domain, resource); no stringprep: the server is the judge of validity."""
    bare, _, resource = jid.partition("/")
    if "@" in bare:
        local, _, domain = bare.partition("@")
    else:
        local, domain = "", bare
    return local, domain, resource


class StreamParser:
    """Incremental parser for one XML stream; returns ('open', el) / ('element', el) / ('close', None)."""

    def __init__(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: ET.Element | None = None

    def feed(self, data: bytes) -> list[tuple[str, ET.Element | None]]:
        self._parser.feed(data)
        out: list[tuple[str, ET.Element | None]] = []
        for event, el in self._parser.read_events():
            if event == "start":
                if self._depth == 0:
                    self._root = el
                    out.append(("open", el))
                self._depth += 1
            else:
                self._depth -= 1
                if self._depth == 1:
                    out.append(("element", el))
                    if self._root is not None:
                        self._root.remove(el)
                elif self._depth == 0:
                    out.append(("close", None))
        return out


def to_wire(el: ET.Element, parent_ns: str = CLIENT_NS) -> str:
    """Compact serialization for sending; drops ``scansion:*`` directives and blank text."""
    ns, _, name = el.tag[1:].partition("}") if el.tag.startswith("{") else ("", "", el.tag)
    parts = [f"<{name}"]
    if ns != parent_ns:
        parts.append(f" xmlns='{_esc(ns, True)}'")
    extra_ns: dict[str, str] = {}
    for key, value in el.attrib.items():
        if key.startswith("{"):
            kns, kname = key[1:].split("}", 1)
            if kns == SCANSION_NS:
                continue
            if kns == XML_NS:
                key = f"xml:{kname}"
            else:
                prefix = extra_ns.setdefault(kns, f"ns{len(extra_ns)}")
                key = f"{prefix}:{kname}"
        parts.append(f" {key}='{_esc(value, True)}'")
    for kns, prefix in extra_ns.items():
        parts.append(f" xmlns:{prefix}='{_esc(kns, True)}'")
    children = list(el)
    text = el.text if el.text and el.text.strip() else ""
    if not children and not text:
        parts.append("/>")
        return "".join(parts)
    parts.append(">")
    parts.append(_esc(text))
    for child in children:
        parts.append(to_wire(child, ns))
        if child.tail and child.tail.strip():
            parts.append(_esc(child.tail))
    parts.append(f"</{name}>")
    return "".join(parts)


def _esc(s: str, attr: bool = False) -> str:
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return s.replace("'", "&apos;") if attr else s


class Client:
    """One scripted XMPP client connection."""

    def __init__(
        self,
        name: str,
        jid: str,
        password: str,
        host: str,
        port: int,
        timeout: float = 5.0,
        log: Callable[[str], None] | None = None,
    ):
        self.name = name
        self.jid = jid
        self.password = password
        self.host = host
        self.port = port
        self.timeout = timeout
        self.log = log
        self.local, self.domain, self.resource = split_jid(jid)
        self.full_jid: str | None = None
        self.connected = False
        self.queue: asyncio.Queue = asyncio.Queue()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = StreamParser()
        self._pending: list[tuple[str, ET.Element | None]] = []
        self._pump_task: asyncio.Task | None = None
        self.closed_reason: str | None = None

    # -- low level -------------------------------------------------------------------------

    def _trace(self, direction: str, data: str) -> None:
        if self.log:
            self.log(f"{self.name} {direction} {data}")

    def _write(self, data: str) -> None:
        assert self._writer is not None
        self._trace("->", data)
        self._writer.write(data.encode("utf-8"))

    def _open_stream(self) -> None:
        self._parser = StreamParser()
        self._pending = []
        self._write(
            "<?xml version='1.0'?>"
            f"<stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAM_NS}' "
            f"to='{_esc(self.domain, True)}' version='1.0' xml:lang='en'>"
        )

    async def _next_event(self, what: str) -> tuple[str, ET.Element | None]:
        assert self._reader is not None
        while not self._pending:
            try:
                data = await asyncio.wait_for(self._reader.read(65536), self.timeout)
            except asyncio.TimeoutError:
                raise ClientError(f"timed out waiting for {what}") from None
            except (ConnectionError, ssl.SSLError) as e:
                raise StreamClosed(f"connection lost waiting for {what}: {e}") from None
            if not data:
                raise StreamClosed(f"server closed the connection waiting for {what}")
            self._trace("<-", data.decode("utf-8", "replace"))
            try:
                self._pending.extend(self._parser.feed(data))
            except ET.ParseError as e:
                raise ClientError(f"server sent malformed XML waiting for {what}: {e}") from None
        return self._pending.pop(0)

    async def _next_element(self, what: str) -> ET.Element:
        while True:
            kind, el = await self._next_event(what)
            if kind == "close":
                raise StreamClosed(f"server closed the stream waiting for {what}")
            if kind == "open":
                continue
            assert el is not None
            if el.tag == f"{{{STREAM_NS}}}error":
                conds = [c.tag.rsplit("}", 1)[-1] for c in el]
                raise StreamClosed(f"stream error {conds} waiting for {what}")
            return el

    async def _features(self) -> ET.Element:
        el = await self._next_element("stream features")
        if el.tag != f"{{{STREAM_NS}}}features":
            raise ClientError(f"expected stream features, got {el.tag}")
        return el

    # -- login -----------------------------------------------------------------------------

    async def connect(self) -> str:
        """Log in; returns the bound full JID."""
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), self.timeout)
        except (OSError, asyncio.TimeoutError) as e:
            raise ClientError(f"cannot connect to {self.host}:{self.port}: {e!r}") from None
        self._open_stream()
        features = await self._features()

        if features.find(f"{{{TLS_NS}}}starttls") is not None:
            self._write(f"<starttls xmlns='{TLS_NS}'/>")
            answer = await self._next_element("STARTTLS proceed")
            if answer.tag != f"{{{TLS_NS}}}proceed":
                raise ClientError(f"STARTTLS refused: {answer.tag}")
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            try:
                await asyncio.wait_for(
                    self._writer.start_tls(ctx, server_hostname=self.domain or None), self.timeout)
            except (OSError, ssl.SSLError, asyncio.TimeoutError) as e:
                raise ClientError(f"TLS handshake failed: {e!r}") from None
            self._open_stream()
            features = await self._features()

        mechs = features.find(f"{{{SASL_NS}}}mechanisms")
        offered = [m.text.strip() for m in (mechs if mechs is not None else []) if m.text]
        if "PLAIN" not in offered:
            raise ClientError(f"SASL PLAIN not offered (mechanisms: {offered})")
        token = base64.b64encode(f"\0{self.local}\0{self.password}".encode("utf-8")).decode("ascii")
        auth = f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>"
        self._trace("->", f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>(credentials not shown)</auth>")
        assert self._writer is not None
        self._writer.write(auth.encode("utf-8"))
        answer = await self._next_element("SASL result")
        if answer.tag != f"{{{SASL_NS}}}success":
            conds = [c.tag.rsplit("}", 1)[-1] for c in answer]
            raise ClientError(f"authentication failed: {answer.tag.rsplit('}', 1)[-1]} {conds}")
        self._open_stream()
        features = await self._features()

        if features.find(f"{{{BIND_NS}}}bind") is None:
            raise ClientError("resource binding not offered")
        resource = f"<resource>{_esc(self.resource)}</resource>" if self.resource else ""
        self._write(f"<iq type='set' id='scansion-bind'><bind xmlns='{BIND_NS}'>{resource}</bind></iq>")
        answer = await self._next_element("bind result")
        jid_el = answer.find(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
        if answer.get("type") != "result" or jid_el is None or not (jid_el.text or "").strip():
            raise ClientError(f"bind failed: {ET.tostring(answer, encoding='unicode')}")
        self.full_jid = jid_el.text.strip()

        session = features.find(f"{{{SESSION_NS}}}session")
        if session is not None and session.find(f"{{{SESSION_NS}}}optional") is None:
            self._write(f"<iq type='set' id='scansion-session'><session xmlns='{SESSION_NS}'/></iq>")
            answer = await self._next_element("session result")
            if answer.get("type") != "result":
                raise ClientError(f"session failed: {ET.tostring(answer, encoding='unicode')}")

        self.connected = True
        for kind, el in self._pending:  # anything that arrived together with the bind result
            self._deliver(kind, el)
        self._pending = []
        self._pump_task = asyncio.ensure_future(self._pump())
        return self.full_jid

    # -- after login -----------------------------------------------------------------------

    def _deliver(self, kind: str, el: ET.Element | None) -> None:
        if kind == "element":
            self.queue.put_nowait(el)
        elif kind == "close":
            self._closed("server closed the stream")

    def _closed(self, reason: str) -> None:
        if self.closed_reason is None:
            self.closed_reason = reason
            self.connected = False
            self.queue.put_nowait(_Closed(reason))

    async def _pump(self) -> None:
        assert self._reader is not None
        try:
            while self.closed_reason is None:
                data = await self._reader.read(65536)
                if not data:
                    self._closed("server closed the connection")
                    break
                self._trace("<-", data.decode("utf-8", "replace"))
                for kind, el in self._parser.feed(data):
                    self._deliver(kind, el)
        except ET.ParseError as e:
            self._closed(f"server sent malformed XML: {e}")
        except (ConnectionError, ssl.SSLError, OSError) as e:
            self._closed(f"connection lost: {e!r}")
        except asyncio.CancelledError:
            self._closed("client closed")
            raise

    def send(self, el: ET.Element) -> None:
        if not self.connected or self._writer is None:
            raise ClientError(f"{self.name} is not connected ({self.closed_reason or 'never connected'})")
        self._write(to_wire(el))

    async def next_stanza(self, timeout: float) -> ET.Element | None:
        """The next queued element, or None after ``timeout`` seconds; raises StreamClosed at the end."""
        try:
            item = await asyncio.wait_for(self.queue.get(), timeout)
        except asyncio.TimeoutError:
            return None
        if isinstance(item, _Closed):
            self.queue.put_nowait(item)  # stay closed for later calls
            raise StreamClosed(item.reason)
        return item

    def drain(self) -> list[ET.Element]:
        """Everything queued right now (for ``receives: nothing``)."""
        items = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if isinstance(item, _Closed):
                self.queue.put_nowait(item)
                break
            items.append(item)
        return items

    async def disconnect(self) -> None:
        """Close the stream politely and wait (bounded) for the server to close its side."""
        if self._writer is None:
            return
        if self.closed_reason is None:
            try:
                self._write("</stream:stream>")
                await self._writer.drain()
            except (ConnectionError, OSError, RuntimeError):
                pass
            if self._pump_task is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(self._pump_task), self.timeout)
                except (asyncio.TimeoutError, Exception):
                    pass
        await self.abort()
        self.connected = False

    async def abort(self) -> None:
        """Drop the connection without closing the stream (also used for final cleanup)."""
        if self._pump_task is not None and not self._pump_task.done():
            self._pump_task.cancel()
            try:
                await self._pump_task
            except (asyncio.CancelledError, Exception):
                pass
        if self._writer is not None:
            try:
                self._writer.close()
                await asyncio.wait_for(self._writer.wait_closed(), 1.0)
            except (ConnectionError, OSError, asyncio.TimeoutError, ssl.SSLError, RuntimeError):
                pass
            self._writer = None
        self.connected = False
