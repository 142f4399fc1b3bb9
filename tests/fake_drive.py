"""A small local fake of the Google Drive v3 HTTP endpoints that `lakehouse.sources` calls, plus a token endpoint."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

FOLDER = "application/vnd.google-apps.folder"
DRIVE_SCOPE_PREFIX = "https://www.googleapis.com/auth/drive"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
DEFAULT_FIELDS = ("kind", "id", "name", "mimeType")


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


@dataclass
class Item:
    id: str
    name: str
    mime_type: str
    parents: list[str]
    modified: datetime
    data: bytes | None = None
    trashed: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def resource(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime_type,
            "parents": list(self.parents),
            "trashed": self.trashed,
            "modifiedTime": rfc3339(self.modified),
        }
        if self.data is not None:
            out["size"] = str(len(self.data))  # Drive sends int64 as a string
            out["md5Checksum"] = hashlib.md5(self.data).hexdigest()
        out.update(self.extra)
        return out


class FakeDrive:
    """Thread-served fake of `GET /drive/v3/files` (q on parents/trashed/name, paging), `GET /drive/v3/files/<id>`
    (metadata, or `?alt=media` with Range support) and `POST /token` (service-account JWT grant); checks bearers."""

    def __init__(self, page_size_cap: int = 1000) -> None:
        self.page_size_cap = page_size_cap
        self.items: dict[str, Item] = {}
        self.tokens: set[str] = set()
        self.public_keys: dict[str, bytes] = {}  # service-account email -> PEM public key
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (method, path?query, headers)
        self.lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None, "not started"
        host, port = self._server.server_address[:2]
        return f"http://{host.decode() if isinstance(host, bytes) else host}:{port}/"

    def start(self) -> FakeDrive:
        fake = self

        class Handler(_Handler):
            drive = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-drive", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeDrive:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- content ---------------------------------------------------------------------------------------------
    def _new_id(self) -> str:
        return f"id{next(self._ids):06d}{secrets.token_hex(4)}"

    def new_root(self, name: str = "root") -> str:
        """A new top-level folder; returns its id."""
        with self.lock:
            item = Item(self._new_id(), name, FOLDER, [], datetime.now(UTC))
            self.items[item.id] = item
            return item.id

    def mkdir(self, parent: str, name: str) -> str:
        """The id of folder `name` under `parent`, created when missing."""
        with self.lock:
            for item in self.children(parent):
                if item.name == name and item.mime_type == FOLDER:
                    return item.id
            item = Item(self._new_id(), name, FOLDER, [parent], datetime.now(UTC))
            self.items[item.id] = item
            return item.id

    def put(
        self, root: str, path: str, data: bytes, modified: datetime | None = None, mime_type: str = "application/json"
    ) -> str:
        """Create or overwrite the file at '/'-separated `path` under folder `root`; returns its id."""
        *folders, name = path.split("/")
        with self.lock:
            parent = root
            for folder in folders:
                parent = self.mkdir(parent, folder)
            modified = modified or datetime.now(UTC)
            for item in self.children(parent):
                if item.name == name and item.mime_type != FOLDER:
                    item.data, item.modified = data, modified
                    return item.id
            item = Item(self._new_id(), name, mime_type, [parent], modified, data)
            self.items[item.id] = item
            return item.id

    def children(self, parent: str, include_trashed: bool = False) -> Iterator[Item]:
        with self.lock:
            found = [i for i in self.items.values() if parent in i.parents and (include_trashed or not i.trashed)]
        return iter(sorted(found, key=lambda i: (i.name, i.id)))

    def resolve(self, root: str, path: str) -> Item:
        parent = root
        item = None
        for name in path.split("/"):
            item = next(i for i in self.children(parent) if i.name == name)
            parent = item.id
        assert item is not None
        return item

    # --- auth ------------------------------------------------------------------------------------------------
    def issue_token(self) -> str:
        token = "ya29.fake-" + secrets.token_urlsafe(16)
        with self.lock:
            self.tokens.add(token)
        return token

    def service_account_info(
        self, email: str = "lakehouse-test@fake-project.iam.gserviceaccount.com"
    ) -> dict[str, Any]:
        """A freshly generated service-account key whose `token_uri` points at this fake."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        self.public_keys[email] = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return {
            "type": "service_account",
            "project_id": "fake-project",
            "private_key_id": secrets.token_hex(20),
            "private_key": private_pem,
            "client_email": email,
            "client_id": "1234567890",
            "auth_uri": self.url + "auth",
            "token_uri": self.url + "token",
        }

    def authorized_user_info(self) -> dict[str, Any]:
        """An OAuth authorized-user token JSON with a far-future `expiry`, so the client never refreshes it
        (google-auth always refreshes authorized users at Google's own token endpoint, not at `token_uri`)."""
        return {
            "type": "authorized_user",
            "client_id": "fake-client.apps.googleusercontent.com",
            "client_secret": "fake-secret",
            "refresh_token": "1//fake-refresh-" + secrets.token_urlsafe(8),
            "token": self.issue_token(),
            "expiry": "2099-01-01T00:00:00Z",
            "scopes": [DRIVE_SCOPE_PREFIX + ".readonly"],
        }

    def count(self, method: str, path_prefix: str) -> int:
        with self.lock:
            return sum(1 for m, p, _ in self.requests if m == method and p.startswith(path_prefix))


def _jwt_claims(assertion: str, public_key: bytes | None) -> dict[str, Any]:
    if public_key is None:
        raise ValueError("unknown issuer")
    from google.auth import jwt

    return jwt.decode(assertion, certs=public_key, verify=True)


class _Handler(BaseHTTPRequestHandler):
    drive: FakeDrive
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # --- plumbing --------------------------------------------------------------------------------------------
    def _send(
        self, status: int, body: bytes, content_type: str = "application/json", headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, status: int, reason: str, message: str) -> None:
        self._json(
            status,
            {
                "error": {
                    "code": status,
                    "message": message,
                    "errors": [{"domain": "global", "reason": reason, "message": message}],
                }
            },
        )

    def _record(self) -> tuple[str, dict[str, list[str]]]:
        with self.drive.lock:
            self.drive.requests.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
        parts = urlsplit(self.path)
        return parts.path, parse_qs(parts.query, keep_blank_values=True)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth[len("Bearer ") :] in self.drive.tokens:
            return True
        self._error(401, "authError", "Request had invalid authentication credentials.")
        return False

    # --- routes ----------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        path, query = self._record()
        if not path.startswith("/drive/v3/files"):
            return self._error(404, "notFound", f"no route {path}")
        if not self._authorized():
            return None
        if path == "/drive/v3/files":
            return self._list(query)
        match = re.fullmatch(r"/drive/v3/files/([^/]+)", path)
        if not match:
            return self._error(404, "notFound", f"no route {path}")
        item = self.drive.items.get(match.group(1))
        if item is None or item.trashed:
            return self._error(404, "notFound", f"File not found: {match.group(1)}.")
        if query.get("alt", [""])[0] == "media":
            return self._media(item)
        return self._json(200, _select(item.resource(), query.get("fields", [""])[0]))

    def do_POST(self) -> None:  # noqa: N802
        path, _ = self._record()
        length = int(self.headers.get("Content-Length") or 0)
        form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
        if path != "/token":
            return self._error(404, "notFound", f"no route {path}")
        grant = form.get("grant_type", [""])[0]
        if grant == JWT_GRANT:
            assertion = form.get("assertion", [""])[0]
            try:
                unverified = json.loads(base64.urlsafe_b64decode(assertion.split(".")[1] + "==="))
                claims = _jwt_claims(assertion, self.drive.public_keys.get(unverified.get("iss", "")))
            except Exception as e:  # noqa: BLE001
                return self._json(400, {"error": "invalid_grant", "error_description": f"bad assertion: {e}"})
            if claims.get("aud") not in (GOOGLE_TOKEN_URI, self.drive.url + "token"):  # google-auth signs for Google's
                return self._json(400, {"error": "invalid_grant", "error_description": "wrong audience"})
            if not any(s.startswith(DRIVE_SCOPE_PREFIX) for s in str(claims.get("scope", "")).split()):
                return self._json(400, {"error": "invalid_scope", "error_description": "no Drive scope"})
        else:
            return self._json(400, {"error": "unsupported_grant_type"})
        self._json(200, {"access_token": self.drive.issue_token(), "expires_in": 3600, "token_type": "Bearer"})

    def _list(self, query: dict[str, list[str]]) -> None:
        q = query.get("q", [""])[0]
        parent, trashed, name = None, None, None
        for clause in re.split(r"\s+and\s+", q.strip(), flags=re.I) if q.strip() else []:
            if m := re.fullmatch(r"'([^']+)'\s+in\s+parents", clause):
                parent = m.group(1)
            elif m := re.fullmatch(r"trashed\s*=\s*(true|false)", clause, flags=re.I):
                trashed = m.group(1).lower() == "true"
            elif m := re.fullmatch(r"name\s*=\s*'((?:[^'\\]|\\.)*)'", clause):
                name = re.sub(r"\\(.)", r"\1", m.group(1))
            else:
                return self._error(400, "invalid", f"Invalid Value: unsupported query clause {clause!r}")
        if parent is None:
            return self._error(400, "invalid", "fake supports only queries with '<id>' in parents")
        items = [
            i
            for i in self.drive.children(parent, include_trashed=True)
            if (trashed is None or i.trashed == trashed) and (name is None or i.name == name)
        ]
        size = min(int(query.get("pageSize", ["100"])[0]), 1000, self.drive.page_size_cap)
        token = query.get("pageToken", [""])[0]
        start = int(token[1:]) if token.startswith("p") else 0
        page = items[start : start + size]
        fields = query.get("fields", [""])[0]
        payload: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
        if start + size < len(items):
            payload["nextPageToken"] = f"p{start + size}"
        payload["files"] = [_select(i.resource(), _inner_fields(fields)) for i in page]
        if fields:
            top = {f.split("(")[0].strip() for f in _split_fields(fields)}
            payload = {k: v for k, v in payload.items() if k in top}
        self._json(200, payload)

    def _media(self, item: Item) -> None:
        if item.data is None:
            return self._error(403, "fileNotDownloadable", "Only files with binary content can be downloaded.")
        data, total = item.data, len(item.data)
        rng = self.headers.get("Range")
        if not rng:
            return self._send(200, data, "application/octet-stream")
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
        if not m:
            return self._error(400, "badRequest", f"bad Range {rng!r}")
        first = int(m.group(1))
        last = min(int(m.group(2)) if m.group(2) else total - 1, total - 1)
        if first >= total:
            return self._send(416, b"", "text/plain", {"Content-Range": f"bytes */{total}"})
        self._send(
            206, data[first : last + 1], "application/octet-stream", {"Content-Range": f"bytes {first}-{last}/{total}"}
        )


def _split_fields(fields: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in fields:
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
            continue
        depth += ch == "("
        depth -= ch == ")"
        cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


def _inner_fields(fields: str) -> str:
    m = re.search(r"files\(([^)]*)\)", fields)
    return m.group(1) if m else ""


def _select(resource: dict[str, Any], fields: str) -> dict[str, Any]:
    wanted = [f.strip() for f in fields.split(",") if f.strip()] or list(DEFAULT_FIELDS)
    return {k: resource[k] for k in wanted if k in resource}


@pytest.fixture(scope="session")
def fake_drive() -> Iterator[FakeDrive]:
    """One fake Drive server for the session; tests isolate themselves with `fake_drive.new_root()`."""
    with FakeDrive(page_size_cap=3) as drive:
        yield drive
