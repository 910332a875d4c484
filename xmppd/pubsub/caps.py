"""Entity capabilities (XEP-0115) as PEP needs them: which nodes a resource wants (+notify).

A client's presence carries ``<c hash node ver/>``. An unknown ``ver`` is
resolved once with a disco#info query to that resource (XEP-0115 §6.2),
the answer is checked against the verification string (§5.1, §5.4: a ver
that does not match is used for that resource only, never cached), and
the feature set is cached under (hash, ver), bounded by
``caps_cache_size`` (least recently used go first). Legacy caps without a
``hash`` attribute are ignored (no +notify from them).
"""
import base64
import hashlib
from collections import OrderedDict

NS_CAPS = "http://jabber.org/protocol/caps"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"
NS_X_DATA = "jabber:x:data"
HASHES = {"sha-1": hashlib.sha1, "sha-224": hashlib.sha224, "sha-256": hashlib.sha256,
          "sha-384": hashlib.sha384, "sha-512": hashlib.sha512}


def caps_of(presence):
    """(hash, node, ver) of a presence's <c/>, or None."""
    for c in presence.elements():
        if c.name == "c" and c.uri == NS_CAPS:
            h, ver = c.getAttribute("hash"), c.getAttribute("ver")
            if h in HASHES and ver and len(ver) <= 256:
                return h, c.getAttribute("node") or "", ver
            return None
    return None


def verification_string(query):
    """XEP-0115 §5.1 string S of a disco#info ``<query/>``; ValueError when the result is ill-formed (§5.4)."""
    identities = []
    features = []
    forms = []
    for c in query.elements():
        if c.uri == NS_DISCO_INFO and c.name == "identity":
            lang = c.getAttribute(("http://www.w3.org/XML/1998/namespace", "lang")) or ""
            identities.append("/".join((c.getAttribute("category") or "", c.getAttribute("type") or "",
                                        lang, c.getAttribute("name") or "")))
        elif c.uri == NS_DISCO_INFO and c.name == "feature":
            features.append(c.getAttribute("var") or "")
        elif c.uri == NS_X_DATA and c.name == "x":
            fields = {}
            form_type = None
            for f in c.elements():
                if f.name != "field":
                    continue
                var = f.getAttribute("var") or ""
                values = sorted(str(v) for v in f.elements() if v.name == "value")
                if var == "FORM_TYPE":
                    if form_type is not None or len(values) != 1:
                        raise ValueError("bad FORM_TYPE")
                    form_type = values[0]
                else:
                    fields[var] = values
            if form_type is None:
                continue        # §5.4: forms without FORM_TYPE are ignored
            forms.append((form_type, fields))
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        raise ValueError("duplicate identity or feature")
    if len({f for f, _ in forms}) != len(forms):
        raise ValueError("duplicate FORM_TYPE")
    s = "".join(i + "<" for i in sorted(identities))
    s += "".join(f + "<" for f in sorted(features))
    for form_type, fields in sorted(forms):
        s += form_type + "<"
        for var in sorted(fields):
            s += var + "<" + "".join(v + "<" for v in fields[var])
    return s, features


def verify(hash_name, ver, query):
    """(matches, features) for a disco#info answer to a caps query."""
    s, features = verification_string(query)
    digest = HASHES[hash_name](s.encode("utf-8")).digest()
    return base64.b64encode(digest).decode("ascii") == ver, features


def notify_nodes(features):
    """The nodes a feature list asks notifications for (``<node>+notify``)."""
    return frozenset(f[:-7] for f in features if f.endswith("+notify") and len(f) > 7)


class CapsCache:
    """(hash, ver) -> frozenset of +notify nodes, least recently used evicted past ``size``."""

    def __init__(self, size):
        self.size = size
        self._d = OrderedDict()

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, nodes):
        if self.size <= 0:
            return
        self._d[key] = nodes
        self._d.move_to_end(key)
        while len(self._d) > self.size:
            self._d.popitem(last=False)

    def __len__(self):
        return len(self._d)
