"""xmppd: an XMPP server with a built-in MUC service, on Twisted and wokkel."""
from xmppd import _compat  # noqa: F401  (must precede every wokkel import)

__version__ = "0.1.0"
