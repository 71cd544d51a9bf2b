"""Who may call the server, and what its calls did: API keys per project, a log of every request,
the completions served, and the feedback users give on them.

A key is shown once, when created; only its sha256 is stored. Completions are kept with their
prompt so feedback on one (a rating, a corrected answer) can become training data later:
`tuneforge feedback export` writes corrections as SFT examples or as DPO pairs.
"""

import hashlib
import re
import secrets
from datetime import datetime

from sqlalchemy import JSON, DateTime, Float, Integer, String, Text, func, select
from sqlalchemy.orm import Mapped, mapped_column

from tuneforge.registry.db import Base, now, session

DEFAULT_PROJECT = "default"  # what `--no-auth` requests and CLI-trained models belong to
# Operator keys (`tuneforge keys create --operator`) read the server's /metrics and belong to no
# project; the colon keeps this name out of reach of project names (PROJECT_NAME).
OPERATOR = ":operator"
KEY_PREFIX_LENGTH = 10  # what `tuneforge keys list` shows of a key, and a signed link names it by
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # enough of the key to recognise it in a list
    project: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class RequestLog(Base):
    __tablename__ = "request_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str | None] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    status_code: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    completion_tokens: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Completion(Base):
    """A chat or text completion served, kept so that feedback can point at it."""

    __tablename__ = "completions"
    id: Mapped[str] = mapped_column(String(48), primary_key=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    model: Mapped[str] = mapped_column(Text)
    messages: Mapped[list | None] = mapped_column(JSON)  # chat prompt; None for a text completion
    prompt: Mapped[str | None] = mapped_column(Text)
    answer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Feedback(Base):
    __tablename__ = "feedback"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64), index=True)
    completion_id: Mapped[str] = mapped_column(String(48), index=True)
    rating: Mapped[int] = mapped_column(Integer)  # +1 good, -1 bad
    correction: Mapped[str | None] = mapped_column(Text)
    comment: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


def digest(key: str) -> str:
    """What the registry keeps of a key: its SHA-256, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()


# -------------------------------------------------------------------------------------- keys
def create_key(project: str) -> str:
    from tuneforge.errors import UsageError

    if project != OPERATOR and not PROJECT_NAME.match(project):
        raise UsageError(
            f"'{project}' is not a valid project name",
            fix="Use up to 64 letters, digits, '-', '_' or '.', starting with a letter or digit.",
        )
    key = "tf-" + secrets.token_urlsafe(32)
    with session() as db, db.begin():
        db.add(ApiKey(sha256=digest(key), prefix=key[:KEY_PREFIX_LENGTH], project=project))
    return key


def project_for_key(key: str) -> str | None:
    with session() as db:
        row = db.scalar(select(ApiKey).where(ApiKey.sha256 == digest(key), ApiKey.revoked_at.is_(None)))
        return row.project if row else None


def list_keys() -> list[ApiKey]:
    with session() as db:
        return list(db.scalars(select(ApiKey).order_by(ApiKey.id)))


def keys_with_prefix(prefix: str) -> list[ApiKey]:
    """The live keys that start with `prefix` (a signed link names its key so: web/links.py)."""
    with session() as db:
        return list(db.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))))


def revoke_key(prefix: str) -> int:
    with session() as db, db.begin():
        rows = list(db.scalars(select(ApiKey).where(ApiKey.prefix == prefix, ApiKey.revoked_at.is_(None))))
        for row in rows:
            row.revoked_at = now()
        return len(rows)


# ------------------------------------------------------------------------ monitoring, feedback
def log_request(**fields) -> None:
    with session() as db, db.begin():
        db.add(RequestLog(**fields))


def request_summary(project: str | None = None) -> list[dict]:
    """Per route and model: requests, errors, latency mean/p50/p95/max, tokens."""
    with session() as db:
        query = select(RequestLog)
        if project is not None:
            query = query.where(RequestLog.project == project)
        groups: dict[tuple, list[RequestLog]] = {}
        for row in db.scalars(query):
            groups.setdefault((row.method, row.route, row.model), []).append(row)
    return [
        {"method": method, "route": route, "model": model, **_aggregate(rows)}
        for (method, route, model), rows in sorted(groups.items(), key=lambda item: str(item[0]))
    ]


def _aggregate(rows: list[RequestLog]) -> dict:
    """What the request log says of some requests: counts, errors, latency mean/p50/p95/max, tokens."""
    latencies = sorted(r.latency_ms for r in rows)
    return {
        "requests": len(rows),
        "errors": sum(r.status_code >= 400 for r in rows),
        "latency_ms": {
            "mean": sum(latencies) / len(latencies),
            "p50": _quantile(latencies, 0.5),
            "p95": _quantile(latencies, 0.95),
            "max": latencies[-1],
        },
        "prompt_tokens": sum(r.prompt_tokens for r in rows),
        "completion_tokens": sum(r.completion_tokens for r in rows),
    }


def request_series(project: str, since: datetime, bucket_seconds: int) -> dict:
    """The project's generation requests (those that name a model) since `since`, per model and time
    bucket: what `_aggregate` says of each bucket's requests (as request_summary's rows). Buckets are
    `bucket_seconds` wide from `since`; a bucket without requests is absent."""
    with session() as db:
        rows = db.scalars(
            select(RequestLog)
            .where(RequestLog.project == project, RequestLog.model.is_not(None), RequestLog.created_at >= since)
            .order_by(RequestLog.created_at)
        ).all()
    start = since.timestamp()
    groups: dict[str, dict[int, list[RequestLog]]] = {}
    for row in rows:
        moment = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=since.tzinfo)
        bucket = int((moment.timestamp() - start) // bucket_seconds)
        groups.setdefault(row.model, {}).setdefault(bucket, []).append(row)
    return {
        model: [
            {"time": int(start + bucket * bucket_seconds), **_aggregate(members)}
            for bucket, members in sorted(buckets.items())
        ]
        for model, buckets in groups.items()
    }


def _quantile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def record_completion(
    completion_id: str, project: str, model: str, answer: str, messages: list | None = None, prompt: str | None = None
) -> None:
    with session() as db, db.begin():
        db.add(
            Completion(id=completion_id, project=project, model=model, messages=messages, prompt=prompt, answer=answer)
        )


def get_completion(project: str, completion_id: str) -> Completion | None:
    with session() as db:
        row = db.get(Completion, completion_id)
        return row if row is not None and row.project == project else None


def add_feedback(project: str, completion_id: str, rating: int, correction: str | None, comment: str | None) -> int:
    with session() as db, db.begin():
        row = Feedback(
            project=project, completion_id=completion_id, rating=rating, correction=correction, comment=comment
        )
        db.add(row)
        db.flush()
        return row.id


def feedback_with_completions(
    project: str | None = None, model: str | None = None
) -> list[tuple[Feedback, Completion]]:
    with session() as db:
        query = (
            select(Feedback, Completion)
            .join(Completion, Completion.id == Feedback.completion_id)
            .order_by(Feedback.id)
        )
        if project is not None:
            query = query.where(Feedback.project == project)
        if model is not None:
            query = query.where(Completion.model == model)
        return [(f, c) for f, c in db.execute(query)]


def feedback_count() -> int:
    with session() as db:
        return db.scalar(select(func.count()).select_from(Feedback)) or 0
