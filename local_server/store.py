"""The server's state: SQLite (stdlib `sqlite3`) plus one folder of uploaded files and adapters.

Everything lives under one data directory:

    <data>/state.sqlite3      files, jobs, events, checkpoints, fine-tuned models
    <data>/files/<file-id>    uploaded JSONL and result CSVs (written to a temp name, then renamed)
    <data>/adapters/<job-id>/ LoRA adapters, one folder per checkpoint (written by the training worker)

The API process and the training worker process both open it; WAL mode lets one write while the
other reads. A row that points at a file or adapter is inserted only after that file is complete,
so a crash never leaves a job pointing at a missing adapter.
"""
from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
import threading
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, purpose TEXT NOT NULL, filename TEXT NOT NULL, bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL, path TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, seq INTEGER NOT NULL, created_at INTEGER NOT NULL, model TEXT NOT NULL,
    training_file TEXT NOT NULL, validation_file TEXT, suffix TEXT, seed INTEGER NOT NULL,
    status TEXT NOT NULL, hyperparameters TEXT NOT NULL, error TEXT, fine_tuned_model TEXT,
    finished_at INTEGER, trained_tokens INTEGER, result_files TEXT NOT NULL DEFAULT '[]',
    estimated_finish INTEGER, metadata TEXT);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL,
    created_at INTEGER NOT NULL, level TEXT NOT NULL, message TEXT NOT NULL, type TEXT NOT NULL, data TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    id TEXT PRIMARY KEY, job_id TEXT NOT NULL, created_at INTEGER NOT NULL, step INTEGER NOT NULL,
    model_id TEXT NOT NULL, metrics TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, job_id TEXT NOT NULL, kind TEXT NOT NULL,
    adapter_path TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_by_job ON events (job_id, seq);
"""
# SCHEMA is version 1, the tables of every store made before stores had a version. Each later version is the script
# that makes it from the one before; a new store runs them all. The data directory lives in the user's cache across
# course updates: an older version is migrated here (its rows kept), any other refused (IncompatibleStore).
MIGRATIONS = {
    # owner: the --keys name of the key that made a file, job or model (NULL: a server without --keys)
    2: """ALTER TABLE files ADD COLUMN owner TEXT;
          ALTER TABLE jobs ADD COLUMN owner TEXT;
          ALTER TABLE models ADD COLUMN owner TEXT;""",
}
SCHEMA_VERSION = max(MIGRATIONS)
WAITING_STATUSES = ("validating_files", "queued")
JOB_STARTED = "Fine-tuning job started"  # the event of a job's start, in the transaction that makes it "running"
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """An id shaped like OpenAI's (`file-…`, `ftjob-…`): a prefix and random letters and digits."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


def now() -> int:
    return int(time.time())


class IncompatibleStore(Exception):
    """A data directory this version of the server cannot use; the message says what to do (Korean)."""


def _tables(db: sqlite3.Connection) -> dict[str, list[str]]:
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
    return {name: [column[1] for column in db.execute(f"PRAGMA table_info({name})")] for name in names}


def _schema_only() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.executescript(SCHEMA)
    return db


class Store:
    """Thread-safe access to the data directory; each thread (and process) gets its own connection."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self.files_dir = self.data_dir / "files"
        self.adapters_dir = self.data_dir / "adapters"
        for folder in (self.files_dir, self.adapters_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.db_path = self.data_dir / "state.sqlite3"
        self._local = threading.local()
        self._check_schema()

    def _check_schema(self) -> None:
        """Create a new store, migrate an older one (one made before stores had a version has SCHEMA's tables:
        version 1), refuse any other."""
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        tables = _tables(self.db)
        if version == 0 and not tables:
            scripts = [SCHEMA, *MIGRATIONS.values()]
        elif version == 0 and tables == _tables(_schema_only()) or 1 <= version < SCHEMA_VERSION:
            scripts = [MIGRATIONS[v] for v in range(max(version, 1) + 1, SCHEMA_VERSION + 1)]
        else:
            raise IncompatibleStore(
                f"데이터 폴더 {self.data_dir} 는 이 과정의 다른 버전이 만든 것이라 열 수 없습니다 (저장소 버전 "
                f"{version or '없음'}, 이 서버는 {SCHEMA_VERSION}). 그 폴더를 지우거나 다른 곳으로 옮긴 뒤 다시 켜세요 "
                "(그 안의 올린 파일, 작업, 미세 조정 모델은 이 서버에서 사라집니다). 또는 --data-dir 로 다른 폴더를 "
                "주세요 (incompatible data directory).")
        # executescript commits what is pending first, so BEGIN here makes the whole migration one transaction
        self.db.executescript("BEGIN IMMEDIATE;\n" + ";\n".join(scripts) + f";\nPRAGMA user_version = {SCHEMA_VERSION};"
                              "\nCOMMIT;")

    @property
    def db(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)
            connection.row_factory = sqlite3.Row
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=FULL")  # a committed row survives a power cut
            self._local.connection = connection
        return connection

    def transaction(self):
        return _Transaction(self.db)

    # ------------------------------------------------------------------ files
    def add_file(self, content: bytes, filename: str, purpose: str, owner: str | None = None) -> dict:
        file_id = new_id("file-")
        path = self.files_dir / file_id
        write_atomically(path, content)
        with self.transaction() as db:
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM files").fetchone()[0]
            db.execute("INSERT INTO files (id, purpose, filename, bytes, created_at, path, seq, owner)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (file_id, purpose, filename, len(content), now(), path.name, seq, owner))
        return self.file(file_id)

    def file(self, file_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return dict(row) if row else None

    def file_path(self, file: dict) -> Path:
        return self.files_dir / file["path"]

    def list_files(self, purpose: str | None, order: str) -> list[dict]:
        direction = "ASC" if order == "asc" else "DESC"
        query = "SELECT * FROM files" + (" WHERE purpose = ?" if purpose else "") + f" ORDER BY seq {direction}"
        return [dict(r) for r in self.db.execute(query, (purpose,) if purpose else ())]

    def delete_file(self, file_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM files WHERE id = ?", (file_id,))
        (self.files_dir / file_id).unlink(missing_ok=True)

    # ------------------------------------------------------------------ jobs
    def add_job(self, owner: str | None = None, waiting_limit: int | None = None, **fields) -> dict | None:
        """A new job of `owner`; None, and nothing added, when the owner already has `waiting_limit` jobs waiting
        (counted in the same transaction: two requests at once cannot both pass)."""
        job_id = new_id("ftjob-")
        with self.transaction() as db:
            if waiting_limit is not None and db.execute(
                    "SELECT COUNT(*) FROM jobs WHERE owner IS ? AND status IN (?, ?)",
                    (owner, *WAITING_STATUSES)).fetchone()[0] >= waiting_limit:
                return None
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            db.execute(
                "INSERT INTO jobs (id, seq, created_at, model, training_file, validation_file, suffix, seed, status,"
                " hyperparameters, metadata, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'validating_files', ?, ?, ?)",
                (job_id, seq, now(), fields["model"], fields["training_file"], fields.get("validation_file"),
                 fields.get("suffix"), fields["seed"], json.dumps(fields["hyperparameters"]),
                 json.dumps(fields.get("metadata")) if fields.get("metadata") is not None else None, owner))
            _insert_event(db, job_id, f"Created fine-tuning job: {job_id}")
            files = fields["training_file"] + (f" and validation file: {fields['validation_file']}"
                                               if fields.get("validation_file") else "")
            _insert_event(db, job_id, f"Validating training file: {files}")
        return self.job(job_id)

    def job(self, job_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = dict(row)
        for key in ("hyperparameters", "error", "result_files", "metadata"):
            job[key] = json.loads(job[key]) if job[key] is not None else None
        return job

    def list_jobs(self) -> list[dict]:
        return [self.job(r["id"]) for r in self.db.execute("SELECT id FROM jobs ORDER BY seq DESC")]

    def jobs_with_status(self, *statuses: str) -> list[dict]:
        marks = ", ".join("?" * len(statuses))
        rows = self.db.execute(f"SELECT id FROM jobs WHERE status IN ({marks}) ORDER BY seq", statuses)
        return [self.job(r["id"]) for r in rows]

    def update_job(self, job_id: str, only_if_status: tuple[str, ...] = (), event: str | None = None,
                   level: str = "info", **fields) -> bool:
        """Set fields; with `only_if_status`, only while the job is in one of those states. True if changed.

        An `event` is added in the same transaction, so whoever sees the new status also sees why.
        """
        encoded = {k: json.dumps(v) if k in ("hyperparameters", "error", "result_files") and v is not None else v
                   for k, v in fields.items()}
        sets = ", ".join(f"{k} = ?" for k in encoded)
        query, args = f"UPDATE jobs SET {sets} WHERE id = ?", [*encoded.values(), job_id]
        if only_if_status:
            query += f" AND status IN ({', '.join('?' * len(only_if_status))})"
            args += list(only_if_status)
        with self.transaction() as db:
            changed = db.execute(query, args).rowcount == 1
            if changed and event:
                _insert_event(db, job_id, event, level)
        return changed

    def last_start_by_owner(self) -> dict[str | None, int]:
        """When each owner's most recent job started, as the sequence number of its start event: a total order, where
        times in seconds would tie."""
        rows = self.db.execute("SELECT jobs.owner, MAX(events.seq) FROM events JOIN jobs ON jobs.id = events.job_id"
                               " WHERE events.message = ? GROUP BY jobs.owner", (JOB_STARTED,))
        return {owner: seq for owner, seq in rows}

    def average_job_seconds(self) -> float | None:
        """How long the jobs that succeeded on this server took from start to finish, on average (None: none yet)."""
        return self.db.execute("SELECT AVG(jobs.finished_at - events.created_at) FROM jobs JOIN events"
                               " ON events.job_id = jobs.id AND events.message = ? WHERE jobs.status = 'succeeded'",
                               (JOB_STARTED,)).fetchone()[0]

    # ------------------------------------------------------------------ events
    def add_event(self, job_id: str, message: str, level: str = "info", type: str = "message",
                  data: dict | None = None) -> None:
        with self.transaction() as db:
            _insert_event(db, job_id, message, level, type, data)

    def events(self, job_id: str) -> list[dict]:
        """Newest first, as the API lists them."""
        rows = self.db.execute("SELECT * FROM events WHERE job_id = ? ORDER BY seq DESC", (job_id,))
        return [{**dict(r), "data": json.loads(r["data"]) if r["data"] else None} for r in rows]

    # ------------------------------------------------------------------ checkpoints and models
    def add_checkpoint(self, job_id: str, step: int, model_id: str, adapter_path: Path, metrics: dict) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO checkpoints VALUES (?, ?, ?, ?, ?, ?)",
                       (new_id("ftckpt_"), job_id, now(), step, model_id, json.dumps(metrics)))
            db.execute("INSERT INTO models (id, created_at, job_id, kind, adapter_path, owner)"
                       " SELECT ?, ?, id, 'checkpoint', ?, owner FROM jobs WHERE id = ?",
                       (model_id, now(), str(adapter_path), job_id))

    def checkpoints(self, job_id: str) -> list[dict]:
        """Newest first."""
        rows = self.db.execute("SELECT * FROM checkpoints WHERE job_id = ? ORDER BY step DESC", (job_id,))
        return [{**dict(r), "metrics": json.loads(r["metrics"])} for r in rows]

    def finish_job(self, job_id: str, model_id: str, adapter_path: Path, result: bytes, trained_tokens: int) -> bool:
        """Mark a running job succeeded with its model, result file and closing events, all in one transaction."""
        result_id = new_id("file-")
        write_atomically(self.files_dir / result_id, result)
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE jobs SET status = 'succeeded', fine_tuned_model = ?, finished_at = ?, trained_tokens = ?,"
                " result_files = ?, estimated_finish = NULL WHERE id = ? AND status = 'running'",
                (model_id, now(), trained_tokens, json.dumps([result_id]), job_id)).rowcount == 1
            if changed:
                seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM files").fetchone()[0]
                # the result file and the model belong to the job's owner
                db.execute("INSERT INTO files (id, purpose, filename, bytes, created_at, path, seq, owner)"
                           " SELECT ?, 'fine-tune-results', 'step_metrics.csv', ?, ?, ?, ?, owner FROM jobs WHERE id = ?",
                           (result_id, len(result), now(), result_id, seq, job_id))
                db.execute("INSERT INTO models (id, created_at, job_id, kind, adapter_path, owner)"
                           " SELECT ?, ?, id, 'fine-tuned', ?, owner FROM jobs WHERE id = ?",
                           (model_id, now(), str(adapter_path), job_id))
                # in the same transaction: whoever sees "succeeded" also sees the closing events
                _insert_event(db, job_id, f"New fine-tuned model created: {model_id}")
                _insert_event(db, job_id, "The job has successfully completed")
        if not changed:  # cancelled meanwhile: the result file is not referenced by anything
            (self.files_dir / result_id).unlink(missing_ok=True)
        return changed

    def model(self, model_id: str) -> dict | None:
        row = self.db.execute("SELECT * FROM models WHERE id = ?", (model_id,)).fetchone()
        return dict(row) if row else None

    def list_models(self) -> list[dict]:
        return [dict(r) for r in self.db.execute("SELECT * FROM models ORDER BY created_at, id")]

    def delete_model(self, model_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM models WHERE id = ?", (model_id,))


def _insert_event(db: sqlite3.Connection, job_id: str, message: str, level: str = "info", type: str = "message",
                  data: dict | None = None) -> None:
    db.execute("INSERT INTO events (id, job_id, created_at, level, message, type, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
               (new_id("ftevent-"), job_id, now(), level, message, type, json.dumps(data) if data is not None else None))


class _Transaction:
    """`with store.transaction() as db:` — BEGIN IMMEDIATE … COMMIT, or ROLLBACK on an exception."""

    def __init__(self, db: sqlite3.Connection):
        self.db_ = db

    def __enter__(self) -> sqlite3.Connection:
        self.db_.execute("BEGIN IMMEDIATE")
        return self.db_

    def __exit__(self, kind, error, tb):
        self.db_.execute("COMMIT" if kind is None else "ROLLBACK")


def write_atomically(path: Path, content: bytes) -> None:
    """Write to a temp name in the same folder, flush to disk, then rename: never a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # e.g. a full disk: no partial file left behind, and its room given back
        tmp.unlink(missing_ok=True)
        raise
