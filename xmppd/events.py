"""Named events with ordered handlers: the one hook mechanism of xmppd.

The MUC fires room events on it (:mod:`xmppd.muc.hooks` documents them) and
the router fires stanza events that the server's own feature modules
(``xmppd/services/*.py``: carbons, blocking, archives, vCard avatars ...)
hook, the way Prosody's modules hook "message/bare" or "pre-presence/full".
The rules are Prosody's: handlers run by descending priority (ties in
registration order); the first one that returns something other than
``None`` stops the chain and its value is what :meth:`Hooks.fire` returns.
"""


class Event:
    """A bag of named attributes handed to every handler of one firing."""

    def __init__(self, **kw):
        self.__dict__.update(kw)

    def __repr__(self):
        return f"<Event {sorted(self.__dict__)}>"


class Hooks:
    """Named event handlers with Prosody's ordering and stop rules."""

    def __init__(self):
        self._handlers = {}   # name -> [(priority, seq, fn)] sorted
        self._seq = 0

    def add(self, name, fn, priority=0):
        self._seq += 1
        lst = self._handlers.setdefault(name, [])
        lst.append((-priority, self._seq, fn))
        lst.sort(key=lambda t: (t[0], t[1]))

    def remove(self, name, fn):
        # ``!=``, not ``is not``: ``self.method`` is a new bound-method object on every
        # access, and equal ones must match or the handler would never go.
        lst = [h for h in self._handlers.get(name, ()) if h[2] != fn]
        if lst:
            self._handlers[name] = lst
        else:
            self._handlers.pop(name, None)

    def has(self, name):
        return name in self._handlers

    def fire(self, name, event):
        """Run the handlers of ``name``; return the first non-None result."""
        handlers = self._handlers.get(name)
        if not handlers:
            return None
        for _, _, fn in handlers:
            result = fn(event)
            if result is not None:
                return result
        return None
