"""``/upload/<slot id>/<name>``: the PUT and GET side of XEP-0363.

PUT stores the body for a slot handed out by :mod:`xmppd.services.upload`
when the slot is valid and the request matches it (Content-Length equals
the slot's size; Content-Type, when the slot named one, equals it). GET
serves the file with ``X-Content-Type-Options: nosniff``, a sandboxing
Content-Security-Policy, and ``Content-Disposition: attachment`` for every
type a browser could run (HTML, SVG, XML, scripts...): only a short list of
passive types (images, audio, video, plain text, PDF) is shown inline. The
slot id is the only key; the name in the URL must match the stored one.
"""
import mimetypes
import os
import time
from urllib.parse import quote

from twisted.logger import Logger
from twisted.web import resource, static

log = Logger(namespace="xmppd.upload")

INLINE = frozenset(("image/png", "image/jpeg", "image/gif", "image/webp", "image/avif",
                    "audio/mpeg", "audio/ogg", "audio/mp4", "audio/webm", "audio/aac",
                    "video/mp4", "video/webm", "video/ogg", "text/plain", "application/pdf"))
CSP = b"default-src 'none'; img-src 'self'; media-src 'self'; sandbox"


def _served_type(stored):
    t = (stored or "").split(";", 1)[0].strip().lower()
    if not t or "/" not in t or any(c.isspace() for c in t):
        return "application/octet-stream"
    return t


class UploadResource(resource.Resource):
    isLeaf = True

    def __init__(self, service, files, cors):
        super().__init__()
        self.service = service
        self.files = files
        self.cors = cors

    def _target(self, request):
        """(slot id, name) from ``/upload/<id>/<name>``, or None."""
        parts = request.postpath        # twisted.web has percent-decoded each segment
        if len(parts) != 2:
            return None
        try:
            return parts[0].decode("ascii"), parts[1].decode("utf-8")
        except UnicodeDecodeError:
            return None

    def render_OPTIONS(self, request):
        return self.cors.preflight(request)

    def render_PUT(self, request):
        self.cors.apply(request)
        target = self._target(request)
        slot = self.service.pending.get(target[0]) if target else None
        if slot is None or slot.name != target[1]:
            return self._error(request, 404, "no such upload slot (or it was used already)")
        if slot.expires < time.time():
            self.service.pending.pop(slot.id, None)
            return self._error(request, 410, "the upload slot has expired")
        length = request.getHeader(b"content-length")
        if length is None or not length.isdigit() or int(length) != slot.size:
            return self._error(request, 400, f"Content-Length must be {slot.size}")
        ctype = (request.getHeader(b"content-type") or b"").decode("latin-1").strip()
        if slot.type and ctype != slot.type:
            return self._error(request, 400, f"Content-Type must be {slot.type}")
        request.content.seek(0, os.SEEK_END)
        if request.content.tell() != slot.size:
            return self._error(request, 400, "the body does not have the announced size")
        request.content.seek(0)
        if self.service.claim(slot.id) is None:
            return self._error(request, 410, "the upload slot has expired")
        try:
            self.files.store(slot.id, {"owner": slot.owner, "name": slot.name, "size": slot.size,
                                       "type": slot.type or ctype}, request.content)
        except OSError as e:
            log.error("upload: cannot store {name} for {owner}: {err}", name=slot.name,
                      owner=slot.owner, err=e)
            return self._error(request, 500, "cannot store the file")
        log.info("upload: {owner} stored {name} ({size} bytes)", owner=slot.owner, name=slot.name,
                 size=slot.size)
        request.setResponseCode(201)
        return b""

    def render_HEAD(self, request):
        return self.render_GET(request)

    def render_GET(self, request):
        self.cors.apply(request)
        target = self._target(request)
        meta = self.files.get(target[0]) if target else None
        if meta is None or meta["name"] != target[1]:
            return self._error(request, 404, "not found")
        path = self.files.path(target[0])
        if not os.path.isfile(path):
            self.files.delete(target[0])
            return self._error(request, 404, "not found")
        ctype = _served_type(meta.get("type") or mimetypes.guess_type(meta["name"])[0])
        disposition = "inline" if ctype in INLINE else "attachment"
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", CSP)
        request.setHeader(b"content-disposition",
                          f"{disposition}; filename*=UTF-8''{quote(meta['name'])}".encode("ascii"))
        request.setHeader(b"cache-control", b"private, max-age=86400")
        f = static.File(path, defaultType=ctype)
        f.type, f.encoding = (ctype + "; charset=utf-8" if ctype == "text/plain" else ctype), None
        return f.render(request)

    def _error(self, request, code, text):
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return (text + "\n").encode()
