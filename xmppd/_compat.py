"""Make wokkel 18.0.0 importable on modern Twisted (>= 23).

wokkel still imports ``twisted.python.compat._PY3`` (data_form, hence disco,
muc, pubsub) and ``twisted.python.constants`` (muc); both were removed from
Twisted. It also calls the deprecated py2 aliases (``iteritems``...), which
warn on every call. This module restores the two names and replaces the
aliases with plain functions. It must run before any wokkel import, which is
why ``xmppd/__init__.py`` imports it first and nothing else imports wokkel
without going through the ``xmppd`` package.
"""
import sys

import constantly
import twisted.python.compat as _tpcompat

_tpcompat._PY3 = True
sys.modules.setdefault("twisted.python.constants", constantly)

try:  # Twisted wraps the module in a proxy that warns on deprecated names.
    _deprecated = object.__getattribute__(_tpcompat, "_deprecatedAttributes")
    for _name in ("unicode", "StringType", "iteritems", "itervalues"):
        _deprecated.pop(_name, None)
except AttributeError:
    pass
_tpcompat.unicode = _tpcompat.StringType = str
_tpcompat.iteritems = lambda d: d.items()
_tpcompat.itervalues = lambda d: d.values()
