"""Deleting an account on the live server, the same way from every entry point.

In-band ``<remove/>`` (XEP-0077 §3.2), the XEP-0133 "Delete User" command and
``xmppdctl deluser`` (through the admin socket when the server runs) all come
here, so that nothing of the account outlives it:

1. its data goes in one transaction on the writer thread
   (:func:`xmppd.storage.delete_account_data`);
2. ``user-deleted`` fires on ``router.hooks`` (``Event(username, bare)``):
   the services drop what they keep in memory for the account (blocklist,
   avatar hash, archive preferences, open upload slots), so a new account
   of the same name starts clean;
3. its sessions end with ``not-authorized``, hibernated (XEP-0198) ones
   included, on the next reactor turn so that a reply to the request that
   deleted the account still goes out first.

Messages a session leaves unacknowledged are not stored offline for the
deleted account: the router's ``user_exists`` is false by then, so they bounce.
"""
from twisted.internet import reactor
from twisted.logger import Logger

from xmppd import storage
from xmppd.events import Event

log = Logger(namespace="xmppd.accounts")

USER_DELETED = "user-deleted"


def delete_account(router, store, cfg, username, reason="the account was deleted"):
    """Delete ``username`` everywhere; a Deferred firing with the number of sessions ended."""
    d = store.write(storage.delete_account_data, cfg, username)

    def deleted(_):
        bare = f"{username}@{cfg.domain}"
        router.hooks.fire(USER_DELETED, Event(username=username, bare=bare))
        sessions = list(router.sessions.resources(bare).values())
        if sessions:
            reactor.callLater(0, _end, sessions, reason)
        return len(sessions)
    return d.addCallback(deleted)


def _end(sessions, reason):
    for s in sessions:
        try:
            s.close_with_error("not-authorized", reason)
        except Exception:
            log.failure("accounts: ending a session of a deleted account failed")
