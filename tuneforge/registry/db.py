"""The registry's database: engine, sessions and the declarative `Base` every table derives from.

SQLAlchemy over SQLite in `$TUNEFORGE_HOME/registry.db` by default; `TUNEFORGE_DATABASE_URL` (e.g.
`postgresql+psycopg://...`) points it elsewhere. The schema is the migrations' (migrate.py): the
first session of a process brings the database to the newest revision. The tables live in
store.py (runs and what they came from), jobs.py (files, jobs, events) and access.py (keys, logs,
feedback); schema.py gathers them.
"""

import os
from datetime import datetime, timezone
from functools import lru_cache

from sqlalchemy import JSON, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from tuneforge.registry.migrate import migrate
from tuneforge.settings import tuneforge_home


def now() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dict: JSON}


def database_url() -> str:
    return os.environ.get("TUNEFORGE_DATABASE_URL") or f"sqlite:///{tuneforge_home() / 'registry.db'}"


@lru_cache(maxsize=4)
def _sessionmaker(url: str) -> sessionmaker:
    engine = create_engine(url, connect_args={"timeout": 30} if url.startswith("sqlite") else {})
    if url.startswith("sqlite"):
        # The server and the worker are two processes on one file: WAL lets readers go on while one writes.
        event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA journal_mode=WAL"))
    migrate(engine)  # never create_all: it cannot alter a table that a user's registry.db already has
    return sessionmaker(engine, expire_on_commit=False)


def session() -> Session:
    return _sessionmaker(database_url())()
