"""`lakehouse up`: a local Prefect server, a worker serving `prefect.yaml`, and the dashboard, as one supervised group,
behind one login (user `admin`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlsplit

import psutil

from lakehouse import engine
from lakehouse.config import PROJECT_ROOT, Settings
from lakehouse.prefect_server import auth_env, home_env, prefect_home
from lakehouse.runs import WRITER_LIMIT
from lakehouse.security import (
    ADMIN_USER,
    admin_password,
    check_bind,
    connect_host,
    is_loopback,
    login_set,
    public_host,
    write_secret,
)
from lakehouse.spark import SCRATCH, connect_server_command, jvm_environment

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

WORK_POOL = "lakehouse"


class PlatformError(RuntimeError):
    """The running platform cannot be used (one line naming the fix)."""


def _state_file(settings: Settings) -> Path:
    return prefect_home(settings) / "up.json"


def public_url(settings: Settings, port: int, configured: str | None) -> str:
    """The URL people open a service at: the configured one (e.g. a TLS proxy's), else this machine's address."""
    return configured.rstrip("/") if configured else f"http://{public_host(settings.bind)}:{port}"


def local_names(bind: str) -> list[str]:
    """The host names and addresses a browser may use for a service listening on `bind`."""
    import ipaddress

    if is_loopback(bind):
        return ["127.0.0.1", "localhost"]
    if connect_host(bind) == bind:
        return [public_host(bind)]
    names = ["127.0.0.1", "localhost", socket.getfqdn(), socket.gethostname()]
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not ipaddress.ip_address(address.address).is_loopback:
                names.append(address.address)
    return list(dict.fromkeys(names))


def origins(settings: Settings, port: int, public: str) -> list[str]:
    """The browser origins of a service listening on `settings.bind`:`port` whose public URL is `public`."""
    from urllib.parse import urlsplit

    parts = urlsplit(public)
    found = [f"{parts.scheme}://{parts.netloc}"] + [f"http://{name}:{port}" for name in local_names(settings.bind)]
    return list(dict.fromkeys(found))


def prefect_env(settings: Settings, port: int | None = None) -> dict[str, str]:
    """Prefect settings that keep its state in the project's data folder (and, with `port`, that serve and talk to
    the platform's server: CSRF protection on, CORS limited to the UI's own origins)."""
    env = home_env(settings)
    if port is not None:
        public = public_url(settings, port, settings.prefect_url)
        env.update(
            {
                "PREFECT_API_URL": f"http://{connect_host(settings.bind)}:{port}/api",
                "PREFECT_UI_API_URL": f"{public}/api",
                "PREFECT_UI_URL": public,
                "PREFECT_SERVER_API_HOST": settings.bind,
                "PREFECT_SERVER_API_PORT": str(port),
                "PREFECT_SERVER_CORS_ALLOWED_ORIGINS": ",".join(origins(settings, port, public)),
                "PREFECT_WORKER_QUERY_SECONDS": "5",
                "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            }
        )
    return env


def api_session(api_url: str, credentials: str | None, timeout: float = 30) -> httpx.Client:
    """An httpx client of a Prefect REST API: basic auth, and the CSRF token that changes need."""
    import uuid

    import httpx

    auth = httpx.BasicAuth(*credentials.split(":", 1)) if credentials else None
    client = httpx.Client(base_url=api_url, auth=auth, timeout=timeout)
    client_id = str(uuid.uuid4())
    got = client.get("/csrf-token", params={"client": client_id})
    if got.status_code == 200:
        client.headers.update({"Prefect-Csrf-Token": got.json()["token"], "Prefect-Csrf-Client": client_id})
    elif got.status_code == 401:
        client.close()
        raise PlatformError(
            f"the Prefect API at {api_url} refused the admin login: set LAKEHOUSE_ADMIN_PASSWORD to the"
            " password `lakehouse up` printed (or the one in its password file)"
        )
    return client


def _healthy(api_url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{api_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _ours(state: dict) -> bool:
    """Whether the process the state names is the `lakehouse up` that wrote it (same start time, this program) and
    its Prefect server is what listens on the recorded API port: only then may it be sent the admin login."""
    try:
        proc = psutil.Process(state["pid"])
        args = proc.cmdline()
        command = any(a in ("lakehouse", "lakehouse.cli") or a.endswith("/lakehouse") for a in args) and "up" in args
        if abs(proc.create_time() - float(state["started"])) > 1 or not command:
            return False
        family = {proc.pid, *(c.pid for c in proc.children(recursive=True))}
        port = urlsplit(state["api_url"]).port
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr.port == port and c.pid in family
            for c in psutil.net_connections("tcp")
        )
    except (psutil.Error, KeyError, ValueError, TypeError):
        return False


def running_platform(settings: Settings) -> dict | None:
    """The state of a `lakehouse up` serving this data folder, if one answers and is ours."""
    path = _state_file(settings)
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return state if _ours(state) and _healthy(state["api_url"]) else None


def client_env(settings: Settings) -> dict[str, str]:
    """Environment for a local flow run: the running platform's API with the admin login, else the data folder's
    warm engines (lakehouse.engine), else (LAKEHOUSE_ENGINE_IDLE=0) Prefect's temporary server on our database, behind
    a login made for this process only."""
    if os.environ.get("PREFECT_API_URL"):
        return {}
    state = running_platform(settings)
    if state:
        password, _ = admin_password(settings)
        if password is None:
            raise PlatformError(
                f"`lakehouse up` serves this data folder at {state['ui_url']} and asks for the admin"
                " login: set LAKEHOUSE_ADMIN_PASSWORD to its password"
            )
        credentials = f"{ADMIN_USER}:{password}"
        api_session(state["api_url"], credentials).close()  # PlatformError, in one line, on a wrong password
        env = {
            "PREFECT_API_URL": state["api_url"],
            "PREFECT_UI_URL": state["ui_url"],
            "PREFECT_API_AUTH_STRING": credentials,
        }
        token = spark_token_file(settings)
        if state.get("spark_url") and "spark_master" not in settings.model_fields_set and token.exists():
            env.update(spark_env(state["spark_url"], token.read_text()))  # the platform's warm Spark
        return env
    if settings.engine_idle_seconds > 0:  # the data folder's warm engines, started in the background when not running
        return engine_env(settings)
    return {**prefect_env(settings), **auth_env(f"{ADMIN_USER}:{secrets.token_urlsafe(24)}")}


def engine_env(settings: Settings) -> dict[str, str]:
    """Environment for a command on the data folder's warm engines: Prefect's, and Spark's unless the settings name a
    master of their own (a cluster, a Connect server); both started side by side when they are not running."""
    kinds = ["prefect"]
    if "spark_master" not in settings.model_fields_set and settings.spark_master.startswith("local"):
        kinds.append("spark")
    with ThreadPoolExecutor(len(kinds), thread_name_prefix="engine-start") as pool:
        running = dict(zip(kinds, pool.map(lambda kind: engine.ensure(settings, kind), kinds)))
    return {k: v for kind, found in running.items() for k, v in engine.client_env(settings, kind, found).items()}


def spark_token_file(settings: Settings) -> Path:
    """The running platform's Spark Connect token (mode 0600), for `lakehouse run` on the same data folder."""
    return prefect_home(settings) / "spark-connect.token"


def spark_env(url: str, token: str) -> dict[str, str]:
    """Environment that points this project's Spark sessions at a Spark Connect server."""
    return {"LAKEHOUSE_SPARK_MASTER": url, "SPARK_CONNECT_AUTHENTICATE_TOKEN": token}


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class Child:
    """One supervised process (its own process group), logging to a file."""

    name: str
    proc: subprocess.Popen
    log: Path
    essential: bool = True

    def tail(self, lines: int = 5) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Platform:
    """Starts and stops the platform's processes; `stop()` ends every process it started and their children."""

    settings: Settings
    prefect_port: int = 4200
    dashboard_port: int = 5006
    dashboard: bool = True
    say: Callable[[str], None] = print
    children: list[Child] = field(default_factory=list)
    password: str | None = None
    spark_port: int = 15002
    spark_token: str | None = None  # the Spark Connect server's, when `lakehouse up` runs one

    @property
    def api_url(self) -> str:
        return f"http://{connect_host(self.settings.bind)}:{self.prefect_port}/api"

    @property
    def ui_url(self) -> str:
        return public_url(self.settings, self.prefect_port, self.settings.prefect_url)

    @property
    def dashboard_url(self) -> str:
        return public_url(self.settings, self.dashboard_port, self.settings.dashboard_url)

    @property
    def credentials(self) -> str:
        return f"{ADMIN_USER}:{self.password}"

    @property
    def logs(self) -> Path:
        return Path(self.settings.data_dir).resolve() / "logs"

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("PREFECT_API_URL", "PREFECT_PROFILE"):
            env.pop(key, None)
        env.update(prefect_env(self.settings, self.prefect_port))
        env.update(auth_env(self.credentials))
        env["LAKEHOUSE_ADMIN_PASSWORD"] = self.password or ""
        env["LAKEHOUSE_DATA_DIR"] = str(Path(self.settings.data_dir).resolve())
        env["PYTHONUNBUFFERED"] = "1"
        if self.spark_token:
            env.update(spark_env(self.spark_url, self.spark_token))
        return env

    @property
    def spark_url(self) -> str:
        return f"sc://localhost:{self.spark_port}"

    def _prefect(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "prefect", *args],
            cwd=PROJECT_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )

    def spawn(
        self, name: str, args: list[str], essential: bool = True, extra_env: dict[str, str] | None = None
    ) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args,
                cwd=PROJECT_ROOT,
                env={**self.env(), **(extra_env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = Child(name, proc, log, essential)
        self.children.append(child)
        return child

    # -- start -------------------------------------------------------------------------------
    def start(self) -> None:
        """Server, work pool, writer limit, deployments, worker, dashboard; raises RuntimeError with one reason."""
        bind = self.settings.bind
        check_bind(bind, login_set(self.settings))
        ports = [self.prefect_port] + ([self.dashboard_port] if self.dashboard else [])
        busy = [str(p) for p in ports if not port_free(p, bind)]
        if busy:
            raise RuntimeError(
                f"port {', '.join(busy)} already in use: stop what listens there (another `lakehouse up`?)"
            )
        self.password, stored = admin_password(self.settings, create=True)
        where = (
            "LAKEHOUSE_ADMIN_PASSWORD"
            if stored is None
            else f"{stored} (mode 0600; set LAKEHOUSE_ADMIN_PASSWORD to choose one)"
        )
        self.say(f"login: user {ADMIN_USER}, password from {where}")
        prefect_home(self.settings).mkdir(parents=True, exist_ok=True)
        self.say(f"starting the Prefect server on {self.ui_url} (database in {prefect_home(self.settings)})")
        server = self.spawn(
            "prefect-server",
            [sys.executable, "-m", "lakehouse.prefect_server", "--host", bind, "--port", str(self.prefect_port)],
        )
        self._wait_healthy(server)
        self._start_spark()
        self._ensure_pool_and_limit()
        self.say("registering the deployments of prefect.yaml")
        deployed = self._prefect("--no-prompt", "deploy", "--all")
        if deployed.returncode != 0:
            raise RuntimeError(f"prefect deploy failed: {_last_line(deployed)}")
        self.spawn(
            "prefect-worker",
            [
                sys.executable,
                "-m",
                "prefect",
                "worker",
                "start",
                "--pool",
                WORK_POOL,
                "--type",
                "process",
                "--name",
                "lakehouse-worker",
            ],
        )
        if self.dashboard:
            self.spawn(
                "dashboard",
                [
                    sys.executable,
                    "-m",
                    "lakehouse.cli",
                    "dashboard",
                    "--port",
                    str(self.dashboard_port),
                    "--address",
                    bind,
                ],
                essential=False,
            )
        self._write_state()

    def _start_spark(self, timeout: float = 180) -> None:
        """A Spark Connect server with the lake's settings, so a deployment run pays no JVM start: it listens on
        loopback and asks for a token only the platform's processes get. Not when Spark is already remote."""
        if self.settings.spark_master.startswith("sc://"):
            return
        if not port_free(self.spark_port):
            raise RuntimeError(
                f"port {self.spark_port} already in use: stop what listens there (another `lakehouse up`?)"
            )
        self.say(f"starting Spark (a Spark Connect server on {self.spark_url}, master {self.settings.spark_master})")
        token = secrets.token_urlsafe(24)
        child = self.spawn(
            "spark-connect",
            connect_server_command(self.settings, self.spark_port),
            extra_env={**jvm_environment(), "SPARK_CONNECT_AUTHENTICATE_TOKEN": token},
        )
        deadline = time.monotonic() + timeout
        while port_free(self.spark_port):
            if child.proc.poll() is not None:
                raise RuntimeError(f"the Spark Connect server exited ({child.proc.returncode}): {child.tail(1)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Spark Connect server did not listen within {timeout:.0f} s; see {child.log}")
            time.sleep(0.5)
        self.spark_token = token
        write_secret(spark_token_file(self.settings), token, replace=True)

    def _wait_healthy(self, server: Child, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while not _healthy(self.api_url):
            if server.proc.poll() is not None:
                raise RuntimeError(f"the Prefect server exited ({server.proc.returncode}): {server.tail(1)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Prefect server did not answer within {timeout:.0f} s; see {server.log}")
            time.sleep(0.5)

    def _ensure_pool_and_limit(self) -> None:
        with contextlib.closing(api_session(self.api_url, self.credentials)) as api:
            pools = api.post("/work_pools/filter", json={}).json()
            if not any(p["name"] == WORK_POOL for p in pools):
                made = self._prefect("work-pool", "create", WORK_POOL, "--type", "process")
                if made.returncode != 0 and "already exists" not in made.stdout + made.stderr:
                    raise RuntimeError(f"cannot create the work pool: {_last_line(made)}")
            got = api.post("/v2/concurrency_limits/", json={"name": WRITER_LIMIT, "limit": 1})
            if got.status_code not in (200, 201, 409):
                raise RuntimeError(f"cannot create the {WRITER_LIMIT} concurrency limit: HTTP {got.status_code}")

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "started": psutil.Process().create_time(),
            "api_url": self.api_url,
            "ui_url": self.ui_url,
            "dashboard_url": self.dashboard_url if self.dashboard else None,
            "spark_url": self.spark_url if self.spark_token else None,
            "children": {c.name: c.proc.pid for c in self.children},
        }
        _state_file(self.settings).write_text(json.dumps(state, indent=2))

    # -- supervise and stop ------------------------------------------------------------------
    def watch(self, poll: float = 1.0) -> int:
        """Block until Ctrl-C/SIGTERM (0) or until an essential process dies (1)."""
        reported: set[str] = set()
        while True:
            for child in self.children:
                if child.proc.poll() is None or child.name in reported:
                    continue
                reported.add(child.name)
                self.say(f"{child.name} exited ({child.proc.returncode}); log {child.log}:\n{child.tail()}")
                if child.essential:
                    return 1
            time.sleep(poll)

    def stop(self, grace: float = 10) -> None:
        """Stop every started process group, then any of their descendants that left the group."""
        descendants: list[psutil.Process] = []
        for child in reversed(self.children):
            descendants += (
                _unless_gone(
                    lambda: psutil.Process(child.proc.pid).children(recursive=True),  # noqa: B023
                    f"list the processes of {child.name}",
                )
                or []
            )
            _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for child in reversed(self.children):
            with contextlib.suppress(subprocess.TimeoutExpired):  # past the grace period: SIGKILL below
                child.proc.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(child.proc, signal.SIGKILL)
            child.proc.wait()
        gone, alive = psutil.wait_procs(descendants, timeout=0)
        for proc in alive:
            _unless_gone(proc.terminate, f"stop process {proc.pid}")
        _, alive = psutil.wait_procs(alive, timeout=5)
        for proc in alive:
            _unless_gone(proc.kill, f"kill process {proc.pid}")
        _state_file(self.settings).unlink(missing_ok=True)
        spark_token_file(self.settings).unlink(missing_ok=True)
        if self.spark_token:  # the Spark Connect server's scratch files go with it
            shutil.rmtree(Path(self.settings.data_dir).resolve() / SCRATCH / f"connect-{self.spark_port}", True)


def _unless_gone(action: Callable[[], Any], what: str) -> Any:
    """Run `action` on a process that may have exited meanwhile (then nothing happens); log any other failure."""
    try:
        return action()
    except (psutil.NoSuchProcess, ProcessLookupError):
        return None
    except (psutil.Error, OSError) as exc:
        log.warning("could not %s: %s", what, exc)
        return None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    _unless_gone(lambda: os.killpg(proc.pid, sig), f"signal process group {proc.pid}")


def _last_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
    return lines[-1].strip() if lines else f"exit code {proc.returncode}"


def up(
    settings: Settings,
    prefect_port: int = 4200,
    dashboard_port: int = 5006,
    dashboard: bool = True,
    say: Callable[[str], None] = print,
    spark_port: int = 15002,
) -> int:
    """Run the platform until Ctrl-C; every process started here is stopped on the way out."""
    platform = Platform(settings, prefect_port, dashboard_port, dashboard, say, spark_port=spark_port)

    def _terminate(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, _terminate) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        platform.start()
        say(f"Prefect UI      {platform.ui_url}  (deployments: {platform.ui_url}/deployments)")
        say(f"Prefect API     {platform.api_url}")
        if platform.spark_token:
            say(f"Spark           {platform.spark_url} (Spark Connect, warm for every deployment run)")
        if dashboard:
            say(f"Dashboard       {platform.dashboard_url}")
        say(f"Login           user {ADMIN_USER} (Prefect UI: type admin:<password>; dashboard: its login page)")
        say(f"Logs            {platform.logs}")
        say("Ctrl-C stops everything.")
        code = platform.watch()
    except KeyboardInterrupt:
        code = 0
    except RuntimeError as exc:
        say(f"error: {exc}")
        code = 1
    finally:
        say("stopping: " + ", ".join(c.name for c in reversed(platform.children)) if platform.children else "stopping")
        try:
            platform.stop()
        except KeyboardInterrupt:
            platform.stop(grace=0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
