"""Room persistence (stub until the MUC lands)."""


class RoomStore:
    def __init__(self, db, cfg):
        self.db = db
