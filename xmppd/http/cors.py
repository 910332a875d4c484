"""Cross-origin settings for browser clients (``http_cors_origins``).

``["*"]`` (the default) lets any page use the server (XMPP logins carry no
cookie, so a foreign page gains nothing a client of its own would not);
a list of origins (``"https://chat.example.org"``) allows those only. The
same list is the WebSocket handshake's allowed ``Origin`` values.
"""
METHODS = b"GET, POST, PUT, OPTIONS"
HEADERS = b"Content-Type, Authorization"
MAX_AGE = b"7200"


class Policy:
    def __init__(self, origins):
        self.origins = list(origins)
        self.any = "*" in self.origins

    def allows(self, origin):
        return self.any or origin in self.origins

    def apply(self, request):
        """Add the CORS headers to ``request``'s response; False if its Origin is not allowed."""
        origin = request.getHeader(b"origin")
        if origin is None:
            return True          # not a cross-origin browser request
        origin = origin.decode("latin-1")
        if not self.allows(origin):
            return False
        request.setHeader(b"access-control-allow-origin", b"*" if self.any else origin.encode("latin-1"))
        if not self.any:
            request.setHeader(b"vary", b"Origin")
        request.setHeader(b"access-control-allow-methods", METHODS)
        request.setHeader(b"access-control-allow-headers", HEADERS)
        request.setHeader(b"access-control-max-age", MAX_AGE)
        return True

    def preflight(self, request):
        """Answer an OPTIONS preflight."""
        if not self.apply(request):
            request.setResponseCode(403)
            return b""
        request.setResponseCode(204)
        return b""
