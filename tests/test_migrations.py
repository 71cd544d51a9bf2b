"""Schema migrations (tuneforge/registry/migrate.py): homes made before migrations keep their rows,
fresh homes end at head, and the models never drift from the migrations unnoticed.

Run: `pytest tests/test_migrations.py`. Each test has its own home, so `store._sessionmaker` (cached
by URL) migrates it anew.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from tuneforge.errors import TuneforgeError
from tuneforge.registry import access, jobs, migrate, schema, store

# The registry exactly as `Base.metadata.create_all` wrote it before migrations existed (SQLite's own
# copy of the DDL, whitespace collapsed). Frozen here, not made by create_all, so that it stays the
# schema users' homes have after the models move on.
LEGACY_SCHEMA = [
    "CREATE TABLE api_keys ( id INTEGER NOT NULL, sha256 VARCHAR(64) NOT NULL, prefix VARCHAR(16) NOT NULL, project VARCHAR(64) NOT NULL, created_at DATETIME NOT NULL, revoked_at DATETIME, PRIMARY KEY (id), UNIQUE (sha256) )",
    "CREATE TABLE checkpoints ( id INTEGER NOT NULL, run_id VARCHAR(64) NOT NULL, step INTEGER NOT NULL, epoch FLOAT NOT NULL, path TEXT NOT NULL, metrics JSON, created_at DATETIME NOT NULL, PRIMARY KEY (id), FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE )",
    "CREATE TABLE completions ( id VARCHAR(48) NOT NULL, project VARCHAR(64) NOT NULL, model TEXT NOT NULL, messages JSON, prompt TEXT, answer TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE datasets ( sha256 VARCHAR(64) NOT NULL, path TEXT NOT NULL, kind VARCHAR(16), examples INTEGER, manifest JSON, created_at DATETIME NOT NULL, PRIMARY KEY (sha256) )",
    "CREATE TABLE evaluations ( id INTEGER NOT NULL, model TEXT NOT NULL, against TEXT, run_id VARCHAR(64), data_sha256 VARCHAR(64) NOT NULL, task VARCHAR(32) NOT NULL, metrics JSON NOT NULL, report_dir TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE feedback ( id INTEGER NOT NULL, project VARCHAR(64) NOT NULL, completion_id VARCHAR(48) NOT NULL, rating INTEGER NOT NULL, correction TEXT, comment TEXT, created_at DATETIME NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE files ( seq INTEGER NOT NULL, id VARCHAR(40) NOT NULL, project VARCHAR(64) NOT NULL, filename TEXT NOT NULL, purpose VARCHAR(32) NOT NULL, bytes INTEGER NOT NULL, path TEXT NOT NULL, sha256 VARCHAR(64), status VARCHAR(16) NOT NULL, status_details TEXT, report JSON, created_at DATETIME NOT NULL, PRIMARY KEY (seq) )",
    "CREATE TABLE human_ratings ( id INTEGER NOT NULL, model TEXT NOT NULL, against TEXT NOT NULL, run_id VARCHAR(64), data_sha256 VARCHAR(64) NOT NULL, eval_dir TEXT NOT NULL, sheet TEXT NOT NULL, rated INTEGER NOT NULL, wins INTEGER NOT NULL, ties INTEGER NOT NULL, losses INTEGER NOT NULL, unrated INTEGER NOT NULL, win_rate FLOAT NOT NULL, ci_low FLOAT NOT NULL, ci_high FLOAT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (id) )",
    "CREATE INDEX ix_api_keys_project ON api_keys (project)",
    "CREATE INDEX ix_completions_project ON completions (project)",
    "CREATE INDEX ix_feedback_completion_id ON feedback (completion_id)",
    "CREATE INDEX ix_feedback_project ON feedback (project)",
    "CREATE UNIQUE INDEX ix_files_id ON files (id)",
    "CREATE INDEX ix_files_project ON files (project)",
    "CREATE INDEX ix_job_events_job_id ON job_events (job_id)",
    "CREATE UNIQUE INDEX ix_jobs_id ON jobs (id)",
    "CREATE INDEX ix_jobs_project ON jobs (project)",
    "CREATE INDEX ix_jobs_status ON jobs (status)",
    "CREATE TABLE job_events ( seq INTEGER NOT NULL, id VARCHAR(40) NOT NULL, job_id VARCHAR(40) NOT NULL, level VARCHAR(8) NOT NULL, type VARCHAR(16) NOT NULL, message TEXT NOT NULL, data JSON, created_at DATETIME NOT NULL, PRIMARY KEY (seq), UNIQUE (id), FOREIGN KEY(job_id) REFERENCES jobs (id) ON DELETE CASCADE )",
    "CREATE TABLE jobs ( seq INTEGER NOT NULL, id VARCHAR(40) NOT NULL, project VARCHAR(64) NOT NULL, model TEXT NOT NULL, training_file VARCHAR(40) NOT NULL, validation_file VARCHAR(40), suffix VARCHAR(64), seed INTEGER NOT NULL, method JSON NOT NULL, extra JSON NOT NULL, metadata JSON, status VARCHAR(20) NOT NULL, error JSON, resolved JSON, run_id VARCHAR(64), fine_tuned_model TEXT, trained_tokens INTEGER, result_files JSON NOT NULL, estimated_finish DATETIME, worker_pid INTEGER, resume BOOLEAN NOT NULL, created_at DATETIME NOT NULL, finished_at DATETIME, PRIMARY KEY (seq) )",
    "CREATE TABLE models ( name VARCHAR(255) NOT NULL, run_id VARCHAR(64) NOT NULL, base_model TEXT NOT NULL, kind VARCHAR(16) NOT NULL, path TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (name), FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE )",
    "CREATE TABLE request_log ( id INTEGER NOT NULL, project VARCHAR(64), method VARCHAR(8) NOT NULL, route TEXT NOT NULL, model TEXT, status_code INTEGER NOT NULL, latency_ms FLOAT NOT NULL, prompt_tokens INTEGER NOT NULL, completion_tokens INTEGER NOT NULL, error TEXT, created_at DATETIME NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE runs ( id VARCHAR(64) NOT NULL, status VARCHAR(16) NOT NULL, method VARCHAR(16) NOT NULL, base_model TEXT NOT NULL, suffix VARCHAR(64), run_dir TEXT NOT NULL, config JSON NOT NULL, train_dataset VARCHAR(64), validation_dataset VARCHAR(64), trained_tokens INTEGER NOT NULL, metrics JSON, error TEXT, created_at DATETIME NOT NULL, finished_at DATETIME, PRIMARY KEY (id), FOREIGN KEY(train_dataset) REFERENCES datasets (sha256), FOREIGN KEY(validation_dataset) REFERENCES datasets (sha256) )",
]
WHEN = "2025-06-01 12:00:00.000000"  # how SQLAlchemy stores a DateTime in SQLite
LEGACY_ROWS = [
    f"INSERT INTO datasets VALUES ('{'d' * 64}', '/data/train.jsonl', 'chat', 12, NULL, '{WHEN}')",
    f"INSERT INTO runs VALUES ('run-legacy', 'succeeded', 'lora', 'smollm2-135m-instruct', 'old', '/runs/run-legacy', "
    f"'{{\"method\": \"lora\"}}', '{'d' * 64}', NULL, 3456, '{{\"loss\": 1.5}}', NULL, '{WHEN}', '{WHEN}')",
    f"INSERT INTO checkpoints VALUES (1, 'run-legacy', 20, 1.0, '/runs/run-legacy/checkpoints/step-20', NULL, '{WHEN}')",
    f"INSERT INTO models VALUES ('ft:smollm2-135m-instruct:old:run-legacy', 'run-legacy', 'smollm2-135m-instruct', "
    f"'adapter', '/runs/run-legacy/adapter', '{WHEN}')",
    f"INSERT INTO files VALUES (1, 'file-legacy', 'acme', 'train.jsonl', 'fine-tune', 2048, '/files/file-legacy', "
    f"'{'d' * 64}', 'processed', NULL, NULL, '{WHEN}')",
    f"INSERT INTO jobs (id, project, model, training_file, seed, method, extra, status, result_files, resume, created_at, run_id) "
    f"VALUES ('ftjob-legacy', 'acme', 'smollm2-135m-instruct', 'file-legacy', 7, '{{\"type\": \"supervised\"}}', '{{}}', "
    f"'succeeded', '[]', 0, '{WHEN}', 'run-legacy')",
    f"INSERT INTO job_events (id, job_id, level, type, message, created_at) "
    f"VALUES ('ftevent-legacy', 'ftjob-legacy', 'info', 'message', 'Job succeeded', '{WHEN}')",
    f"INSERT INTO evaluations VALUES (1, 'ft:smollm2-135m-instruct:old:run-legacy', 'smollm2-135m-instruct', "
    f"'run-legacy', '{'d' * 64}', 'chat', '{{}}', '/evals/1', '{WHEN}')",
    f"INSERT INTO evaluations VALUES (2, 'smollm2-135m-instruct', NULL, NULL, '{'d' * 64}', 'chat', '{{}}', "
    f"'/evals/2', '{WHEN}')",
    f"INSERT INTO api_keys (sha256, prefix, project, created_at) "
    f"VALUES ('{hashlib.sha256(b'tf-legacy-key').hexdigest()}', 'tf-legacy', 'acme', '{WHEN}')",
]


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A home of its own: a new registry URL, so `_sessionmaker` migrates it instead of reusing a cached one."""
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path))
    monkeypatch.delenv("TUNEFORGE_DATABASE_URL", raising=False)
    return tmp_path


def head_revision() -> str:
    return ScriptDirectory.from_config(migrate.alembic_config()).get_current_head()


def sqlite_schema(engine) -> list[str]:
    with engine.connect() as connection:
        rows = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name != 'alembic_version' ORDER BY name")
        )
        return [" ".join(sql.split()) for (sql,) in rows]


def test_baseline_is_the_schema_homes_already_have(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    with engine.begin() as connection:
        command.upgrade(migrate.alembic_config(connection), migrate.BASELINE)
    assert sqlite_schema(engine) == LEGACY_SCHEMA


def test_home_made_before_migrations_keeps_its_rows_and_ends_at_head(home):
    legacy = create_engine(f"sqlite:///{home / 'registry.db'}")
    with legacy.begin() as connection:
        tables_first = sorted(LEGACY_SCHEMA, key=lambda sql: not sql.startswith("CREATE TABLE"))
        for statement in tables_first + LEGACY_ROWS:
            connection.exec_driver_sql(statement)
    legacy.dispose()

    store.session().close()  # opening the registry migrates it

    engine = store._sessionmaker(store.database_url()).kw["bind"]
    assert migrate.current_revision(engine) == head_revision()
    assert migrate.check_models_match_migrations(engine, schema.metadata) == []
    run = store.get_run("run-legacy")
    assert (run.status, run.trained_tokens, run.metrics, run.config) == (
        "succeeded",
        3456,
        {"loss": 1.5},
        {"method": "lora"},
    )
    assert [(c.step, c.epoch) for c in run.checkpoints] == [(20, 1.0)]
    assert run.project == "acme"  # 0002: the project of the job that trained it
    assert [m.name for m in run.models] == ["ft:smollm2-135m-instruct:old:run-legacy"]
    assert store.find_model("ft:smollm2-135m-instruct:old:run-legacy").kind == "adapter"
    assert store.session().get(store.Dataset, "d" * 64).examples == 12
    assert jobs.get_file("acme", "file-legacy").bytes == 2048
    job = jobs.get_job("acme", "ftjob-legacy")
    assert (job.status, job.seed, job.method, job.resume) == ("succeeded", 7, {"type": "supervised"}, False)
    events, _ = jobs.list_events("ftjob-legacy", None, 10)
    assert [event.message for event in events] == ["Job succeeded"]
    assert access.project_for_key("tf-legacy-key") == "acme"
    # 0003: an evaluation is its run's project's, or the default project's for base models alone; done
    evaluations = {e.id: (e.project, e.status) for e in store.list_evaluations()}
    assert evaluations == {1: ("acme", "succeeded"), 2: ("default", "succeeded")}
    # and it still takes new rows
    store.record_dataset(home / "more.jsonl", "e" * 64, "chat", 3, None)
    assert len(access.create_key("acme")) > 10


def test_home_from_before_the_server_gains_the_tables_it_lacks(home):
    """create_all added whole tables to old homes (jobs, keys, rating sheets...): the baseline must too."""
    training_tables = (
        "CREATE TABLE datasets",
        "CREATE TABLE runs",
        "CREATE TABLE checkpoints",
        "CREATE TABLE models",
        "CREATE TABLE evaluations",
    )
    legacy = create_engine(f"sqlite:///{home / 'registry.db'}")
    with legacy.begin() as connection:
        for statement in LEGACY_SCHEMA:
            if statement.startswith(training_tables):
                connection.exec_driver_sql(statement)
        for statement in LEGACY_ROWS[:4]:  # a dataset, a run, its checkpoint and its model
            connection.exec_driver_sql(statement)
    legacy.dispose()

    store.session().close()

    engine = store._sessionmaker(store.database_url()).kw["bind"]
    assert set(inspect(engine).get_table_names()) == set(store.Base.metadata.tables) | {"alembic_version"}
    assert migrate.check_models_match_migrations(engine, schema.metadata) == []
    assert [c.step for c in store.get_run("run-legacy").checkpoints] == [20]
    assert store.get_run("run-legacy").project == "default"  # no job trained it: `tuneforge train`'s
    assert access.project_for_key(access.create_key("acme")) == "acme"


def test_fresh_home_is_built_to_head_with_every_table(home):
    store.session().close()
    engine = store._sessionmaker(store.database_url()).kw["bind"]
    assert set(inspect(engine).get_table_names()) == set(store.Base.metadata.tables) | {"alembic_version"}
    assert migrate.current_revision(engine) == head_revision()
    assert (home / "registry.migrate.lock").exists()


def test_head_is_the_newest_file_and_each_revision_is_named_by_its_file():
    """`migrate` skips Alembic when a database is at `HEAD`, which it reads off the file names."""
    scripts = ScriptDirectory.from_config(migrate.alembic_config())
    assert migrate.HEAD == scripts.get_current_head()  # one head: history is a line
    for script in scripts.walk_revisions():
        assert script.revision == Path(script.path).stem
    assert [script.revision for script in scripts.walk_revisions()][::-1] == migrate.REVISIONS


def test_a_registry_from_a_newer_tuneforge_is_refused_with_a_fix(home):
    engine = create_engine(f"sqlite:///{home / 'registry.db'}")
    migrate.migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(TuneforgeError, match="9999_from_the_future") as raised:
        store.session()
    assert raised.value.fix


def test_models_agree_with_migrations(tmp_path):
    """Fails when a model gains (or loses) a column, index or table that no migration makes: write
    `tuneforge/registry/migrations/versions/000N_<what>.py` (see docs/ARCHITECTURE.md, Migrations)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.migrate(engine)
    assert migrate.check_models_match_migrations(engine, schema.metadata) == []


def test_the_check_names_a_column_no_migration_made(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    migrate.migrate(engine)
    with engine.begin() as connection:
        connection.exec_driver_sql("ALTER TABLE jobs DROP COLUMN worker_pid")  # as if the model had gained it
    differences = migrate.check_models_match_migrations(engine, schema.metadata)
    assert [(kind, table, column.name) for kind, _, table, column in differences] == [
        ("add_column", "jobs", "worker_pid")
    ]


def test_postgresql_is_built_to_head_and_agrees_with_the_models(postgres):
    """The same migrations on PostgreSQL (TUNEFORGE_DATABASE_URL): every table, at head, no drift
    (JSON, timestamps with time zone and booleans are types of their own there)."""
    engine = create_engine(postgres.create_database("migrations_fresh"))
    migrate.migrate(engine)
    assert set(inspect(engine).get_table_names()) == set(store.Base.metadata.tables) | {"alembic_version"}
    assert migrate.current_revision(engine) == head_revision()
    assert migrate.check_models_match_migrations(engine, schema.metadata) == []
    engine.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_processes_opening_a_fresh_registry_at_once_all_succeed_quietly(backend, tmp_path, request):
    """The server and its workers start together on one new registry: one migrates (a file lock beside
    a SQLite file, an advisory lock on PostgreSQL), the others wait."""
    environment = {**os.environ, "TUNEFORGE_HOME": str(tmp_path)}
    environment.pop("TUNEFORGE_DATABASE_URL", None)
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    if backend == "postgresql":
        url = environment["TUNEFORGE_DATABASE_URL"] = request.getfixturevalue("postgres").create_database("race")
    opener = "from tuneforge.registry import store; store.session().close()"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", opener], env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0] * 3, outputs
    assert outputs == [("", "")] * 3  # Alembic's INFO lines stay out of the CLI's output
    engine = create_engine(url)
    assert migrate.current_revision(engine) == head_revision()
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() == 1
    engine.dispose()
