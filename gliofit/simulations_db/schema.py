"""SQL tables of a database (SQLAlchemy 2.x Core) and their versioned migrations.

SQLite ``DB/gliofit.sqlite`` (WAL journal, busy timeout) by default; any
SQLAlchemy URL otherwise (PostgreSQL is tested). Migrations are a small
versioned list (:data:`MIGRATIONS`): ``schema_version`` holds the version a
database is at, :func:`migrate` applies the missing steps in order inside one
transaction each, and refuses a database newer than the code.

Tables
------
atlas          the simulation grid (name, shape, affine, checksum)
simulations    one row per design index: parameters, status, claim, runtime, error
entries        one row per stored snapshot: time, identifiable pair, volumes, array location, checksum, features
build_runs     one row per build command (host, pid, heartbeat): claims name their run
index_versions one row per FAISS index written (kind, entries, file, checksum)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from gliofit.common.errors import InputError

if TYPE_CHECKING:
    from gliofit.simulations_db.manifest import Manifest

__all__ = [
    "metadata",
    "atlas_t",
    "simulations_t",
    "entries_t",
    "build_runs_t",
    "index_versions_t",
    "SCHEMA_VERSION",
    "MIGRATIONS",
    "make_engine",
    "migrate",
    "schema_version",
    "check_schema",
    "sqlite_url",
    "database_url_for",
]

metadata = MetaData()

schema_version_t = Table("schema_version", metadata, Column("version", Integer, primary_key=True))

atlas_t = Table(
    "atlas",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("shape", String(100), nullable=False),  # JSON [X, Y, Z]
    Column("affine", Text, nullable=False),  # JSON 4x4
    Column("resolution_mm", Float, nullable=False),
    Column("checksum", String(64), nullable=False, unique=True),
)

simulations_t = Table(
    "simulations",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # = design index
    Column("D_mm2_per_day", Float, nullable=False),
    Column("rho_per_day", Float, nullable=False),
    Column("diffusivity_ratio", Float, nullable=False),
    Column("origin_x_mm", Float, nullable=False),
    Column("origin_y_mm", Float, nullable=False),
    Column("origin_z_mm", Float, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("status", String(16), nullable=False, index=True),  # pending | claimed | done | failed
    Column("claimed_by", Integer, ForeignKey("build_runs.id"), nullable=True),
    Column("claim_token", String(32), nullable=True),
    Column("claimed_at", Float, nullable=True),  # unix seconds
    Column("runtime_s", Float, nullable=True),
    Column("n_entries", Integer, nullable=True),
    Column("error", Text, nullable=True),
)

entries_t = Table(
    "entries",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),  # design index x K + snapshot
    Column("simulation_id", BigInteger, ForeignKey("simulations.id"), nullable=False, index=True),
    Column("snapshot", Integer, nullable=False),
    Column("T_days", Float, nullable=False),
    Column("mu_D_mm", Float, nullable=False),
    Column("mu_rho", Float, nullable=False),
    Column("wt_voxels", Integer, nullable=False),
    Column("core_voxels", Integer, nullable=False),
    Column("wt_cm3", Float, nullable=False),
    Column("core_cm3", Float, nullable=False),
    Column("shard", String(64), nullable=False, index=True),
    Column("offset", BigInteger, nullable=False),
    Column("length", BigInteger, nullable=False),
    Column("x0", Integer, nullable=False),
    Column("y0", Integer, nullable=False),
    Column("z0", Integer, nullable=False),
    Column("x1", Integer, nullable=False),
    Column("y1", Integer, nullable=False),
    Column("z1", Integer, nullable=False),
    Column("crc32", BigInteger, nullable=False),
    Column("features", LargeBinary, nullable=True),  # float32 (d,) little-endian
)

build_runs_t = Table(
    "build_runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("n_target", BigInteger, nullable=False),
    Column("executor", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # running | finished | failed
    Column("simulations_done", BigInteger, nullable=False, default=0),
)

index_versions_t = Table(
    "index_versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("entries", BigInteger, nullable=False),
    Column("path", String(500), nullable=False),
    Column("checksum", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)


def _v1(conn: Connection) -> None:
    """Version 1: every table above."""
    metadata.create_all(conn, tables=[t for t in metadata.sorted_tables if t.name != "schema_version"])


MIGRATIONS = [(1, _v1)]
"""(version, step) in order; a new schema appends a step, never edits an old one."""
SCHEMA_VERSION = MIGRATIONS[-1][0]


def sqlite_url(db_dir: str | Path) -> str:
    """The URL of the database's own SQLite file, ``DB/gliofit.sqlite``."""
    return f"sqlite:///{Path(db_dir).resolve() / 'gliofit.sqlite'}"


def database_url_for(db_dir: str | Path, manifest: Manifest | None, database_url: str | None) -> str:
    """The SQL URL: the one given, else the manifest's, else ``DB/gliofit.sqlite``."""
    return database_url or (manifest.database_url if manifest else None) or sqlite_url(db_dir)


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=120000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _sqlite_reader_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=120000")
    cur.execute("PRAGMA query_only=ON")
    cur.close()


def _sqlite_reader_url(url: str) -> str:
    """``url`` opened read-only (``mode=ro``); also ``immutable`` when its folder or file cannot be written
    (a read-only mount: SQLite then needs no lock or shared-memory file beside it) and no write-ahead log
    holds commits that are not in the file yet."""
    from urllib.parse import quote

    from sqlalchemy.engine import make_url

    path = make_url(url).database
    if not path or path == ":memory:":
        return url
    p = Path(path).resolve()
    wal, shm = p.with_name(p.name + "-wal"), p.with_name(p.name + "-shm")
    writable = os.access(p.parent, os.W_OK) and os.access(p, os.W_OK)
    pending = wal.is_file() and wal.stat().st_size > 0
    if not writable and pending and not shm.is_file():
        raise InputError(
            f"{p}: its write-ahead log ({wal.name}) holds commits and the folder is read-only; "
            f"run `gliofit db migrate` on it once where it is writable"
        )
    immutable = not writable and not pending
    return f"sqlite:///file:{quote(str(p))}?mode=ro{'&immutable=1' if immutable else ''}&uri=true"


def make_engine(url: str, *, check: bool = True, read_only: bool = False) -> Engine:
    """An engine for ``url`` (WAL + busy timeout for SQLite); InputError if the server does not answer.

    ``read_only``: the engine never writes (SQLite: opened with ``mode=ro``, ``immutable`` on a read-only
    mount, no journal-mode change); used by :func:`~gliofit.simulations_db.database.open_database`.
    """
    try:
        if url.startswith("sqlite") and read_only:
            engine = create_engine(_sqlite_reader_url(url), connect_args={"timeout": 120})
            event.listen(engine, "connect", _sqlite_reader_pragmas)
        elif url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 120})
            event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = create_engine(url, pool_pre_ping=True, connect_args=_connect_args(url))
        if check:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
    except (OperationalError, SQLAlchemyError, ModuleNotFoundError, ValueError) as exc:
        reason = (
            str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        )
        raise InputError(f"database {_redacted(url)} does not answer: {reason}") from None
    return engine


def _connect_args(url: str) -> dict:
    return {"connect_timeout": 5} if url.startswith("postgresql") else {}


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as given
        return url


def schema_version(engine: Engine) -> int:
    """The schema version a database holds (0 when it holds none), read without writing."""
    with engine.connect() as conn:
        if not inspect(conn).has_table("schema_version"):
            return 0
        return conn.execute(select(schema_version_t.c.version)).scalar() or 0


def check_schema(engine: Engine, where: str | Path) -> None:
    """InputError naming ``where`` unless the database holds this gliofit's schema version (never writes)."""
    found = schema_version(engine)
    if found > SCHEMA_VERSION:
        raise InputError(f"{where}: database schema version {found} is newer than this gliofit ({SCHEMA_VERSION})")
    if found < SCHEMA_VERSION:
        raise InputError(
            f"{where}: database schema version {found} is older than this gliofit ({SCHEMA_VERSION}); "
            f"run `gliofit db migrate {where}`"
        )


def migrate(engine: Engine) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`; returns the version found before."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":  # serialise concurrent creators of one schema
            conn.execute(text("SELECT pg_advisory_xact_lock(74011)"))
        schema_version_t.create(conn, checkfirst=True)
        found = conn.execute(select(schema_version_t.c.version)).scalar() or 0
        if found > SCHEMA_VERSION:
            raise InputError(f"database schema version {found} is newer than this gliofit ({SCHEMA_VERSION})")
        if found == 0 and inspect(conn).has_table("simulations"):
            raise InputError("database has gliofit tables but no schema version; refusing to touch it")
        for version, step in MIGRATIONS:
            if version > found:
                step(conn)
        if found == 0:
            conn.execute(schema_version_t.insert().values(version=SCHEMA_VERSION))
        elif found < SCHEMA_VERSION:
            conn.execute(schema_version_t.update().values(version=SCHEMA_VERSION))
    return found
