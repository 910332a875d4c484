"""``python -m xmppd.testing FILE...``: the same as ``xmppd-scansion`` without installing."""
import sys

from xmppd.testing.cli import main

sys.exit(main())
