"""Authentication: SASL mechanisms, channel binding and stored credentials, in one place.

* :mod:`xmppd.auth.credentials` -- SCRAM keys (salt, iterations, StoredKey and
  ServerKey for SHA-1 and SHA-256), derived once when a password is set;
  the server secret behind fake salts for unknown users.
* :mod:`xmppd.auth.scram` -- SCRAM-SHA-1/-256 (+PLUS) exchanges (RFC 5802, RFC 7677).
* :mod:`xmppd.auth.plain` -- PLAIN (RFC 4616) checked against the stored keys.
* :mod:`xmppd.auth.channel_binding` -- tls-exporter, tls-server-end-point,
  tls-unique data and the XEP-0440 advert.
* :mod:`xmppd.auth.throttle` -- failed logins per account and per IP address.
* :mod:`xmppd.auth.sasl` -- the per-server :class:`AuthService` and the
  per-stream :class:`Exchange` every transport's stream calls into.

Used by the session's SASL step (:mod:`xmppd.session.sasl`, for every transport), ``xmppdctl`` (adduser/passwd) and in-band registration.
"""
