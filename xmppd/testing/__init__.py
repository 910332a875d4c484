"""A scansion-compatible scenario runner (scansion = Prosody's text format for scripted XMPP
conversations; see ../shared/scansion/README.md for the format and the matching rules).

- ``script``: parse ``.scs`` files into clients and steps (errors carry file and line).
- ``matcher``: scansion's strict/non-strict stanza matching, ``{scansion:any}``, captures,
  ``${Name's JID}`` substitution, readable serialization for reports.
- ``client``: a stdlib-only asyncio XMPP client (STARTTLS without verification, SASL PLAIN, bind).
- ``runner``: run a script against host:port, returning a ``Result`` with the first ``Failure``.
- ``cli``: the ``xmppd-scansion`` command (also ``python -m xmppd.testing``).

Programmatic use::

    from xmppd.testing.runner import run_file
    result = run_file("tests/scenarios/c2s_disco.scs", port=5222)
    assert result.ok, result.failure.report()
"""
