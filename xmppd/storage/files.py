"""Uploaded files (XEP-0363) in the data directory: ``<data_dir>/uploads/<id>/``.

Each upload is a folder named by its random slot id holding the file (under
the name the client gave, made safe) and ``meta.json`` (owner, size,
content type, time). The folder name is the only key a URL carries, so a
crafted path cannot reach anything else. An in-memory index (built from
the folders at start) answers quota questions without touching the disk.
"""
import json
import os
import re
import shutil
import time

META = "meta.json"
_ID = re.compile(r"^[0-9a-f]{32}$")
_UNSAFE = re.compile(r"[^\w.\- ()+,=@]", re.UNICODE)


def safe_name(name):
    """A file name that cannot climb out of its folder or hide (None if nothing is left)."""
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = _UNSAFE.sub("_", name).strip(" .")
    if not name or name in (".", "..") or len(name.encode("utf-8")) > 200 or name == META:
        return None
    return name


def valid_id(slot_id):
    return bool(_ID.match(slot_id))


class FileStore:
    def __init__(self, data_dir):
        self.root = os.path.join(data_dir, "uploads")
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.index = {}                      # id -> meta dict
        for slot_id in os.listdir(self.root):
            meta = self._read_meta(slot_id)
            if meta is not None:
                self.index[slot_id] = meta

    def _read_meta(self, slot_id):
        if not valid_id(slot_id):
            return None
        try:
            with open(os.path.join(self.root, slot_id, META)) as f:
                meta = json.load(f)
        except (OSError, ValueError):
            return None
        return meta if isinstance(meta, dict) and "name" in meta else None

    def usage(self, owner):
        return sum(m["size"] for m in self.index.values() if m["owner"] == owner)

    def get(self, slot_id):
        return self.index.get(slot_id) if valid_id(slot_id) else None

    def path(self, slot_id):
        meta = self.get(slot_id)
        return os.path.join(self.root, slot_id, meta["name"]) if meta else None

    def store(self, slot_id, meta, src):
        """Write the upload from file object ``src``; ``meta``: owner, name, size, type."""
        folder = os.path.join(self.root, slot_id)
        os.makedirs(folder, mode=0o700)
        try:
            with open(os.path.join(folder, meta["name"]), "xb") as out:
                shutil.copyfileobj(src, out)
            meta = dict(meta, time=time.time())
            with open(os.path.join(folder, META), "w") as f:
                json.dump(meta, f)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self.index[slot_id] = meta

    def delete(self, slot_id):
        self.index.pop(slot_id, None)
        if valid_id(slot_id):
            shutil.rmtree(os.path.join(self.root, slot_id), ignore_errors=True)

    def expire(self, max_age, now=None):
        """Delete uploads older than ``max_age`` seconds; returns how many."""
        now = time.time() if now is None else now
        old = [i for i, m in self.index.items() if now - m.get("time", now) > max_age]
        for slot_id in old:
            self.delete(slot_id)
        return len(old)

    def delete_owner(self, owner):
        for slot_id in [i for i, m in self.index.items() if m["owner"] == owner]:
            self.delete(slot_id)


def delete_owner(data_dir, owner):
    """Delete every upload of ``owner`` (bare JID) from ``data_dir`` (account deletion)."""
    if os.path.isdir(os.path.join(data_dir, "uploads")):
        FileStore(data_dir).delete_owner(owner)
