"""The warehouse's read-only BI role: `bi_reader` reads `dw` and writes nothing; `bi_user` is its login."""

from __future__ import annotations

import logging
import time

import psycopg2
import psycopg2.errors

from lakehouse.config import Settings, get_settings

log = logging.getLogger(__name__)

BI_GROUP, BI_LOGIN = "bi_reader", "bi_user"
# What a BI session gets by default: read-only transactions, no query past the timeout; at most so many sessions.
BI_LOGIN_SETTINGS = {"default_transaction_read_only": "on", "statement_timeout": "5min"}
BI_CONNECTION_LIMIT = 10


def ensure_bi_login(dsn: str, settings: Settings | None = None) -> bool:
    """Create or update the BI login `bi_user` (member of bi_reader) with the password from the environment, sent
    as a SCRAM verifier computed here; the login defaults to read-only transactions, with BI_LOGIN_SETTINGS."""
    settings = settings or get_settings()
    password = settings.bi_password.get_secret_value() if settings.bi_password else ""
    if not password:
        log.warning("LAKEHOUSE_BI_PASSWORD is unset: role %s exists, no BI login (%s) was created", BI_GROUP, BI_LOGIN)
        return False
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    try:
        for attempt in range(5):
            try:
                with conn.cursor() as cur:
                    cur.execute(
                        "select rolsuper, rolcreatedb, rolcreaterole, rolreplication from pg_roles where rolname = %s",
                        (BI_LOGIN,),
                    )
                    found = cur.fetchone()
                    if found is None:
                        cur.execute(f"create role {BI_LOGIN} login in role {BI_GROUP}")
                    elif any(found):  # only a superuser may change these; a mirror role with CREATEROLE need not
                        cur.execute(f"alter role {BI_LOGIN} with nosuperuser nocreatedb nocreaterole noreplication")
                    verifier = psycopg2.extensions.encrypt_password(password, BI_LOGIN, conn, "scram-sha-256")
                    cur.execute(
                        f"alter role {BI_LOGIN} with login connection limit {BI_CONNECTION_LIMIT} password %s",
                        (verifier,),
                    )
                    for name, value in BI_LOGIN_SETTINGS.items():
                        cur.execute(f"alter role {BI_LOGIN} set {name} = %s", (value,))
                    cur.execute(f"grant {BI_GROUP} to {BI_LOGIN}")
                return True
            except (psycopg2.errors.DuplicateObject, psycopg2.errors.UniqueViolation, psycopg2.errors.InternalError):
                if attempt == 4:  # roles are cluster-wide: another database's mirror may be doing the same
                    raise
                time.sleep(0.1 * (attempt + 1))
    finally:
        conn.close()
    return True
