"""Persistent rooms: configuration, affiliations (with reason and reserved nick).

Only persistent rooms are stored. The MUC calls ``save_room`` after every
change that must survive a restart (config submit, affiliation change,
registration, subject) and ``delete_room`` when a room is destroyed or
stops being persistent; ``load_all`` runs once at start-up. The server
uses :class:`AsyncRoomStore` (writes return Deferreds); ``RoomStore`` is
the same SQL, synchronous, for ``xmppdctl`` and tests.

Config is a JSON object (the room's ``config`` dict, whatever keys the
feature modules use); affiliation data (reason, nick, ...) is JSON too,
with ``nick`` also in its own column so reserved nicks can be queried.
"""
import json

# Tables: created and migrated by xmppd.storage.migrations (schema version 1).


class RoomStore:
    def __init__(self, db, cfg):
        self.db = db
        self.cfg = cfg

    def has_room(self, room_jid):
        return bool(self.db.query("SELECT 1 FROM muc_rooms WHERE jid = ?", (room_jid,)))

    def load_all(self):
        """Every stored room: dicts with jid, config, affiliations {bare: (aff, data)}."""
        rooms = {}
        for jid, config in self.db.query("SELECT jid, config FROM muc_rooms"):
            try:
                cfg = json.loads(config)
            except ValueError:
                cfg = {}
            rooms[jid] = {"jid": jid, "config": cfg, "affiliations": {}}
        for room, jid, aff, reason, nick, data in self.db.query(
                "SELECT room, jid, affiliation, reason, nick, data FROM muc_affiliations"):
            rec = rooms.get(room)
            if rec is None:
                continue
            try:
                d = json.loads(data) if data else {}
            except ValueError:
                d = {}
            if reason:
                d["reason"] = reason
            if nick:
                d["nick"] = nick
            rec["affiliations"][jid] = (aff, d)
        return list(rooms.values())

    def save_room(self, room_jid, config, affiliations, aff_data):
        """Replace the stored state of one room (a few rows; one transaction)."""
        write_room(self.db, *room_rows(room_jid, config, affiliations, aff_data))

    def delete_room(self, room_jid):
        delete_room(self.db, room_jid)

    def public_rooms(self):
        out = []
        for jid, config in self.db.query("SELECT jid, config FROM muc_rooms"):
            try:
                cfg = json.loads(config)
            except ValueError:
                continue
            if cfg.get("public"):
                out.append((jid, cfg.get("name") or ""))
        return out


def room_rows(room_jid, config, affiliations, aff_data):
    """A snapshot of a room's state as ``(jid, config_json, affiliation_rows)``."""
    rows = []
    for bare, aff in affiliations.items():
        data = dict(aff_data.get(bare) or {})
        reason = data.pop("reason", None)
        nick = data.pop("nick", None)
        rows.append((room_jid, bare, aff, reason, nick,
                     json.dumps(data, sort_keys=True) if data else None))
    return room_jid, json.dumps(config, sort_keys=True), rows


def write_room(db, room_jid, config_json, rows):
    with db.transaction() as conn:
        conn.execute("INSERT INTO muc_rooms (jid, config) VALUES (?, ?) "
                     "ON CONFLICT(jid) DO UPDATE SET config = excluded.config",
                     (room_jid, config_json))
        conn.execute("DELETE FROM muc_affiliations WHERE room = ?", (room_jid,))
        conn.executemany("INSERT INTO muc_affiliations (room, jid, affiliation, reason, nick, data)"
                         " VALUES (?, ?, ?, ?, ?, ?)", rows)


def delete_room(db, room_jid):
    with db.transaction() as conn:
        conn.execute("DELETE FROM muc_affiliations WHERE room = ?", (room_jid,))
        conn.execute("DELETE FROM muc_rooms WHERE jid = ?", (room_jid,))


class AsyncRoomStore(RoomStore):
    """The server's room store: reads on the reactor's connection, writes on the writer thread.

    ``save_room`` and ``delete_room`` return Deferreds that fire once the
    change is committed. ``save_room`` snapshots the room's dicts when it is
    called, so the caller may go on changing them; queued writes commit in
    call order, so the last one called wins.
    """

    def __init__(self, db, cfg, writer):
        super().__init__(db, cfg)
        self.writer = writer

    def save_room(self, room_jid, config, affiliations, aff_data):
        return self.writer.run(write_room, *room_rows(room_jid, config, affiliations, aff_data))

    def delete_room(self, room_jid):
        return self.writer.run(delete_room, room_jid)
