"""The platform's login, where services may listen, and secret files that are private from their first byte."""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
import stat
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lakehouse.config import Settings

ADMIN_USER = "admin"
ADMIN_PASSWORD_FILE = "admin-password"  # under the data folder, mode 0600, when LAKEHOUSE_ADMIN_PASSWORD is unset


class BindRefused(RuntimeError):
    """A service was asked to listen beyond loopback without a login."""


def secure_dir(path: Path) -> Path:
    """Create `path` (and parents) with mode 0700; tighten it to 0700 when it exists, is ours and is looser."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) & 0o077:
        path.chmod(0o700)
    return path


def secure_data_dir(settings: Settings) -> Path:
    """The project data folder, and a local lake wherever it lives (both hold learners' data and secrets), created or
    tightened to mode 0700."""
    if settings.lake_is_local:
        secure_dir(Path(settings.lake_url))
    return secure_dir(Path(settings.data_dir))


def write_secret(path: Path, text: str, replace: bool = False) -> Path:
    """Write a secret file created with mode 0600 (O_EXCL: never through an existing file or link); `replace`
    writes a fresh file beside it and renames it over the old one."""
    path = Path(path)
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if replace else path
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    if replace:
        os.replace(target, path)
    return path


def open_beneath(base: Path, relative: str | Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """A file descriptor of `base/relative`, opened without following a symbolic link at any component below
    `base` (each folder opened in turn, O_NOFOLLOW): a link swapped in after a check fails with OSError instead of
    leading elsewhere. `base` itself is trusted."""
    parts = Path(relative).parts
    if not parts or any(p in ("", ".", "..") or "/" in p for p in parts):
        raise ValueError(f"not a path below {base}: {relative!r}")
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    folder = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(parts[-1], flags | nofollow, mode, dir_fd=folder)
    finally:
        os.close(folder)


def write_beneath(base: Path, relative: str | Path, text: str, append: bool = False) -> None:
    """Write (or append to) `base/relative` without following a symbolic link below `base` (open_beneath)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    with os.fdopen(open_beneath(base, relative, flags), "w") as out:
        out.write(text)


def read_beneath(base: Path, relative: str | Path) -> str:
    """Read `base/relative` without following a symbolic link below `base` (open_beneath)."""
    with os.fdopen(open_beneath(base, relative), "r") as f:
        return f.read()


REQUESTS = "requests"  # under the data folder: private files handing a request to a flow


@contextmanager
def request_file(settings: Settings, kind: str, text: str) -> Iterator[Path]:
    """A 0600 file under the data folder holding `text` while the block runs (what a flow must read but Prefect
    must never store as a parameter); it is deleted afterwards, and leftovers of killed runs at the next one."""
    folder = secure_dir(Path(settings.data_dir).resolve() / REQUESTS)
    for stale in folder.glob(f"{kind}-*"):
        stale.unlink(missing_ok=True)
    path = write_secret(folder / f"{kind}-{uuid.uuid4().hex}", text)
    try:
        yield path
    finally:
        path.unlink(missing_ok=True)


def admin_password_file(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve() / ADMIN_PASSWORD_FILE


def admin_password(settings: Settings, create: bool = False) -> tuple[str | None, Path | None]:
    """(password, file it was read from) of the `admin` login: LAKEHOUSE_ADMIN_PASSWORD, else the stored one, else
    (with `create`) a new random one stored 0600 under the data folder. (None, None): no login configured."""
    if settings.admin_password is not None and settings.admin_password.get_secret_value():
        return settings.admin_password.get_secret_value(), None
    path = admin_password_file(settings)
    try:
        return path.read_text().strip(), path
    except FileNotFoundError:
        if not create:
            return None, None
    secure_data_dir(settings)
    try:
        write_secret(path, secrets.token_urlsafe(24))
    except FileExistsError:  # another process made it meanwhile
        pass
    return path.read_text().strip(), path


def login_set(settings: Settings) -> bool:
    """True when LAKEHOUSE_ADMIN_PASSWORD is set (a generated password guards loopback only)."""
    return settings.admin_password is not None and bool(settings.admin_password.get_secret_value())


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, login: bool, what: str = "`lakehouse up`") -> None:
    """Refuse to listen beyond loopback without a login (BindRefused, one line naming the fix)."""
    if not is_loopback(host) and not login:
        raise BindRefused(
            f"{what} would listen on {host}, beyond this machine, without a login: set "
            "LAKEHOUSE_ADMIN_PASSWORD (user admin) first, or keep LAKEHOUSE_BIND=127.0.0.1"
        )


def _every_interface(bind: str) -> bool:
    """Whether `bind` is the unspecified address (0.0.0.0 or ::); a host name is not."""
    try:
        return ipaddress.ip_address(bind.strip("[]")).is_unspecified
    except ValueError:  # a host name
        return False


def connect_host(bind: str) -> str:
    """The address local clients use to reach a service listening on `bind`."""
    if _every_interface(bind):
        return "127.0.0.1" if ":" not in bind else "::1"
    return bind


def public_host(bind: str) -> str:
    """The host name people use for a service listening on `bind` (this machine's name for every interface)."""
    import socket

    if _every_interface(bind):
        return socket.getfqdn()
    return f"[{bind}]" if ":" in bind and not bind.startswith("[") else bind


def free_port() -> int:
    """A TCP port free on loopback now (a server started next binds it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float, name: str = "the server") -> None:
    """Wait until `proc` accepts connections on loopback `port`: RuntimeError when it exits first, TimeoutError when
    the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode} before listening on port {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"{name} did not listen on port {port} within {timeout:.0f} s")
