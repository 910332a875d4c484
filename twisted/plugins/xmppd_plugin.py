"""twistd plugin for xmppd. Imports stay lazy: twistd loads every plugin for --help."""
from zope.interface import implementer
from twisted.plugin import IPlugin
from twisted.application.service import IServiceMaker


@implementer(IServiceMaker, IPlugin)
class _XmppdServiceMaker:
    tapname = "xmppd"
    description = "XMPP server (c2s, roster-less routing) with a built-in Multi-User Chat service"

    @property
    def options(self):
        from xmppd.tap import Options
        return Options

    def makeService(self, options):
        from xmppd.tap import makeService
        return makeService(options)


serviceMaker = _XmppdServiceMaker()
