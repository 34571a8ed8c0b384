"""A content-addressed request cache in SQLite, shared by generation and judging.

The key is a hash of everything that determines an answer (model, revision, image, conversation,
decoding parameters), so a rerun, a second stage or a second experiment in the same run folder
never pays for the same request twice. Only successful answers are stored.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path


def request_key(**parts) -> str:
    """A stable hash of the JSON-serialisable parts of a request."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class RequestCache:
    def __init__(self, path: str | Path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit plus WAL: each put is durable at once and readers never block the writer.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, value TEXT NOT NULL)")

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, value: dict) -> None:
        self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?)", (key, json.dumps(value, ensure_ascii=False)))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
