"""Schema migrations: every registry database is brought to the newest schema when it is opened.

`store._sessionmaker` calls `migrate(engine)` once per process. The revisions live in
`migrations/versions/` (Alembic, configured here in code: there is no alembic.ini). A home made
before migrations existed has the tables `create_all` made but no `alembic_version`. Stamping it at
the baseline would leave out the tables it is too old to have (`human_ratings`, `jobs`...), so it
is upgraded like a fresh database instead: the baseline creates only the tables a database lacks,
and the revisions after it run as on any other.

To add a column: edit the model, write `migrations/versions/000N_<what>.py` (its revision id is
its file name), and run `pytest tests/test_migrations.py`: it fails until the models and the
migrations agree. Alembic is imported only when a database is behind: importing it (and Mako, and
Pygments through Mako) costs ~150 ms, which every CLI command would otherwise pay.
"""

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from tuneforge.errors import TuneforgeError

MIGRATIONS = Path(__file__).with_name("migrations")
BASELINE = "0001_baseline"
# History is a line and each revision id is its file's name, so the newest file is the head
# (tests/test_migrations.py holds Alembic to that).
REVISIONS = sorted(path.stem for path in (MIGRATIONS / "versions").glob("[0-9]*.py"))
HEAD = REVISIONS[-1]
# Any fixed 64-bit number: PostgreSQL's advisory lock key for "a registry migration is running".
POSTGRES_LOCK_KEY = 7_301_942_118


def alembic_config(connection: Connection | None = None):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        # ConfigParser reads "%" as interpolation, and a password may hold one.
        url = connection.engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        config.attributes["connection"] = connection  # env.py migrates on this connection, inside our lock
    return config


@contextmanager
def _file_lock(engine: Engine):
    """For a SQLite file, an exclusive lock on `<name>.migrate.lock` beside it: the server and its
    worker open the same file at once, and SQLite's DDL is not transactional under pysqlite."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    descriptor = os.open(Path(database).with_suffix(".migrate.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def migrate(engine: Engine) -> None:
    """Bring the database to the newest revision, from nothing, from a home made before
    migrations, or from any revision since."""
    with engine.connect() as connection:
        revision = _revision(connection)
    if revision == HEAD:
        return  # the usual case: a few milliseconds, no lock, no Alembic
    if revision is not None and revision not in REVISIONS:
        raise TuneforgeError(
            f"The registry {engine.url.render_as_string()} is at schema revision {revision}, "
            f"which this Tuneforge does not know (it knows up to {HEAD}): a newer one upgraded it.",
            fix="Install that newer Tuneforge again, or point TUNEFORGE_HOME at another home.",
        )
    from alembic import command

    with _file_lock(engine), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # PostgreSQL's DDL is transactional, but two first starts would both try CREATE TABLE.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": POSTGRES_LOCK_KEY})
        # A pre-migrations home (tables, no alembic_version) needs no stamp: see the baseline.
        command.upgrade(alembic_config(connection), "head")


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return _revision(connection)


def check_models_match_migrations(engine: Engine, metadata) -> list:
    """What differs between the models (`registry.schema.metadata`) and a database the migrations
    made: Alembic's list of differences (added/removed tables, columns, indexes, types...); empty
    when they agree. The caller passes the metadata, so this module imports no table."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, metadata)
