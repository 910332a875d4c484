"""twistd plugin for xmppd-muc (the MUC as an XEP-0114 component). Imports stay lazy."""
from zope.interface import implementer
from twisted.plugin import IPlugin
from twisted.application.service import IServiceMaker


@implementer(IServiceMaker, IPlugin)
class _XmppdMucServiceMaker:
    tapname = "xmppd-muc"
    description = "xmppd's Multi-User Chat as an external component (XEP-0114) of any XMPP server"

    @property
    def options(self):
        from xmppd.muc.standalone import Options
        return Options

    def makeService(self, options):
        from xmppd.muc.standalone import makeService
        return makeService(options)


serviceMaker = _XmppdMucServiceMaker()
