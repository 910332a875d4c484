"""Log output for operators: plain text or JSON lines, and a level that SIGHUP can change.

Under ``twistd`` (the systemd unit) the server hands twistd its own log
observer (:func:`observer`): text like twistd's, or with ``log_format =
"json"`` one JSON object per event (twisted.logger's format, with the
event's fields such as ``jid``, ``ip``, ``mechanism``) for log shippers.
Both go through one level filter, set from ``log_level`` at start and on
every reload. ``python -m twisted`` (twist) keeps its own
``--log-format``/``--log-level`` options. A ``--logger`` given to twistd
wins over both keys. With both keys at their defaults twistd's own
observer (``-l FILE``) is left alone.
"""
import sys

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate,
                            jsonFileLogObserver, textFileLogObserver)

LEVELS = {"debug": LogLevel.debug, "info": LogLevel.info, "warn": LogLevel.warn,
          "error": LogLevel.error, "critical": LogLevel.critical}
PREDICATE = LogLevelFilterPredicate(defaultLogLevel=LogLevel.info)


def set_level(name):
    """Events below ``name`` are dropped from now on (``log_level``)."""
    PREDICATE.defaultLogLevel = LEVELS[name]
    PREDICATE.clearLogLevels()


def wanted(cfg):
    """Whether the server should replace twistd's default observer (an explicit choice)."""
    return cfg.log_format == "json" or cfg.log_level != "info"


def observer(fmt="text", out=None):
    out = out or sys.stdout
    inner = jsonFileLogObserver(out) if fmt == "json" else textFileLogObserver(out)
    return FilteringLogObserver(inner, [PREDICATE])
