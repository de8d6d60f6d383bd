"""Where the read model lives: embedded chDB (`make run`, tests) or a ClickHouse server, one interface.

Both speak the same SQL with the same server-side parameters (`{name:Type}` placeholders, bound
by ClickHouse itself, never spliced into the text) and take rows as JSONEachRow. Both clients
block, so the service calls them through `asyncio.to_thread`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

Row = dict[str, Any]
Params = Mapping[str, Any]


class StoreError(RuntimeError):
    """The store refused or failed a statement."""


class StoreInUseError(StoreError):
    """The embedded store's directory is held by another process (the running service)."""


class Store(Protocol):
    kind: str  # "embedded" or "server"
    database: str

    def command(self, sql: str, params: Params | None = None) -> None: ...

    def rows(self, sql: str, params: Params | None = None) -> list[Row]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None: ...

    def close(self) -> None: ...


def _json_lines(columns: Sequence[str], rows: Sequence[Row]) -> bytes:
    return "".join(json.dumps({c: r[c] for c in columns}, ensure_ascii=False) + "\n" for r in rows).encode()


class EmbeddedStore:
    """chDB: ClickHouse inside this process, its data in a directory (one process at a time).

    The session is one connection: chDB refuses a query while an insert streams on it, and the
    projection's inserts and the report API's queries run on different threads, so every call
    holds the session's lock.
    """

    kind = "embedded"

    def __init__(self, path: Path, database: str) -> None:
        from chdb import session as chdb_session

        session_type: Any = chdb_session.Session  # chDB's own functions carry no annotations
        path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self._session: Any = session_type(str(path))
        except RuntimeError as exc:
            if "Cannot lock file" in str(exc):
                raise StoreInUseError(
                    f"the embedded analytics store {path} is in use by another process (the analytics service?)"
                ) from exc
            raise StoreError(str(exc)) from exc
        self.database = database
        self.command(f"CREATE DATABASE IF NOT EXISTS {_ident(database)}")

    def command(self, sql: str, params: Params | None = None) -> None:
        try:
            with self._lock:
                self._session.query(sql, "Null", params=dict(params or {}))
        except RuntimeError as exc:
            raise StoreError(str(exc)) from exc

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            with self._lock:
                result = self._session.query(sql, "JSONEachRow", params=dict(params or {}))
        except RuntimeError as exc:
            raise StoreError(str(exc)) from exc
        text = result.bytes().decode() if hasattr(result, "bytes") else str(result)
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        statement = f"INSERT INTO {_ident(self.database)}.{_ident(table)} ({', '.join(map(_ident, columns))})"
        try:
            with self._lock, self._session.send_insert(statement, "JSONEachRow") as inserter:
                inserter.append(_json_lines(columns, rows))
                inserter.finish()
        except RuntimeError as exc:
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        with self._lock:
            self._session.close()


class ServerStore:
    """A ClickHouse server over HTTP (clickhouse-connect), e.g. in Kubernetes.

    The client is thread-safe without a session (its HTTP pool gives each statement its own
    connection), so concurrent inserts and queries need no lock here.
    """

    kind = "server"

    def __init__(self, url: str) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors: tuple[type[Exception], ...] = (ClickHouseError, OSError)
        parts = urlsplit(url)
        self.database = parts.path.strip("/") or "wxbot"
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname or "127.0.0.1",
                port=parts.port or (8443 if parts.scheme == "https" else 8123),
                username=parts.username or "default",
                password=parts.password or "",
                secure=parts.scheme == "https",
                database="default",
                # no session: the projection inserts and the report API queries from different
                # threads at once, which ClickHouse refuses within one session
                autogenerate_session_id=False,
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {_ident(self.database)}")
        except self._errors as exc:
            raise StoreError(f"ClickHouse at {parts.hostname}:{parts.port}: {exc}") from exc

    def command(self, sql: str, params: Params | None = None) -> None:
        try:
            self._client.command(sql, parameters=dict(params or {}))
        except self._errors as exc:
            raise StoreError(str(exc)) from exc

    def rows(self, sql: str, params: Params | None = None) -> list[Row]:
        try:
            result = self._client.raw_query(sql, parameters=dict(params or {}), fmt="JSONEachRow")
        except self._errors as exc:
            raise StoreError(str(exc)) from exc
        return [json.loads(line) for line in result.decode().splitlines() if line.strip()]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Row]) -> None:
        if not rows:
            return
        try:
            self._client.raw_insert(
                f"{_ident(self.database)}.{_ident(table)}",
                list(columns),
                insert_block=_json_lines(columns, rows),
                fmt="JSONEachRow",
            )
        except self._errors as exc:
            raise StoreError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()


def _ident(name: str) -> str:
    """An identifier from our own constants or settings, checked rather than trusted."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"not a plain identifier: {name!r}")
    return name


def open_store(clickhouse_url: str, data_dir: Path, database: str) -> Store:
    """The server when a URL is configured, else the embedded store in `data_dir`."""
    if clickhouse_url:
        return ServerStore(clickhouse_url)
    return EmbeddedStore(data_dir, database)
