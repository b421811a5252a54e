"""Join tokens: made by the operator, spent by nodes as they enrol.

Only a SHA-256 of each secret is kept (the secret is 256 random bits, so no slow hash is needed
to resist guessing), compared in constant time. A token may be limited in time (``ttl_s``) and
in uses; spending one use is a single conditional ``UPDATE … WHERE uses_left > 0`` inside the
enrolment's transaction, so two nodes racing for a token's last use cannot both win, on SQLite
or PostgreSQL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import Connection, delete, or_, select, update

from ukedge.controller._db import Database, join_tokens
from ukedge.controller._models import TokenCreated, TokenInfo
from ukedge.errors import ControllerError
from ukedge.host.link import JoinToken

__all__ = ["create_token", "delete_token", "hash_secret", "list_tokens", "spend_token"]


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(
    db: Database,
    *,
    fingerprint: str,
    description: str,
    ttl_s: float | None,
    uses: int | None,
    now: float,
) -> TokenCreated:
    token = JoinToken(fingerprint, secrets.token_hex(8), secrets.token_urlsafe(32))
    expires_at = now + ttl_s if ttl_s is not None else None
    with db.write() as connection:
        connection.execute(
            join_tokens.insert().values(
                id=token.token_id,
                secret_hash=hash_secret(token.secret),
                description=description,
                created_at=now,
                expires_at=expires_at,
                uses_left=uses,
                nodes_enrolled=0,
            )
        )
    return TokenCreated(
        id=token.token_id, token=token.encode(), expires_at=expires_at, uses_left=uses
    )


def list_tokens(db: Database) -> list[TokenInfo]:
    with db.read() as connection:
        rows = connection.execute(select(join_tokens).order_by(join_tokens.c.created_at)).all()
    return [
        TokenInfo(
            id=r.id,
            description=r.description,
            created_at=r.created_at,
            expires_at=r.expires_at,
            uses_left=r.uses_left,
            nodes_enrolled=r.nodes_enrolled,
        )
        for r in rows
    ]


def delete_token(db: Database, token_id: str) -> None:
    """Revoke a token (nodes it enrolled keep their own credentials)."""
    with db.write() as connection:
        if connection.execute(delete(join_tokens).where(join_tokens.c.id == token_id)).rowcount:
            return
    raise ControllerError(f"no join token {token_id!r} (see GET /v1/tokens)", status=404)


def spend_token(connection: Connection, credential: str, now: float) -> str:
    """Check ``id.secret`` and spend one use of the token; returns its id.

    Every refusal reads the same to the caller except expiry and exhaustion, which the operator
    can act on (make a new token); an unknown id and a wrong secret are not told apart.
    """
    token_id, _, secret = credential.partition(".")
    refused = ControllerError(
        "join token refused: unknown or revoked (make one with `ukedge controller token create`)",
        status=401,
    )
    row = connection.execute(select(join_tokens).where(join_tokens.c.id == token_id)).first()
    if row is None or not hmac.compare_digest(row.secret_hash, hash_secret(secret)):
        raise refused
    if row.expires_at is not None and row.expires_at <= now:
        raise ControllerError(
            f"join token {token_id} expired; make a new one with `ukedge controller token create`",
            status=401,
        )
    spent = connection.execute(
        update(join_tokens)
        .where(
            join_tokens.c.id == token_id,
            or_(join_tokens.c.uses_left.is_(None), join_tokens.c.uses_left > 0),
        )
        .values(
            uses_left=join_tokens.c.uses_left - 1,
            nodes_enrolled=join_tokens.c.nodes_enrolled + 1,
        )
    )
    if not spent.rowcount:
        raise ControllerError(
            f"join token {token_id} has no uses left; make a new one with "
            "`ukedge controller token create --uses N`",
            status=401,
        )
    return token_id
