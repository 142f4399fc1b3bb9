"""One settings object for the whole project: `LAKEHOUSE_*` environment variables and `.env`."""

from __future__ import annotations

import contextlib
import json
import os
import re
from datetime import date, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("landing", "bronze", "silver", "gold", "quarantine", "quality")
DELTA_LAYERS = LAYERS[1:]  # the layers that hold Delta tables
MASK = "********"
# Spark settings whose values are hidden by `lakehouse config`: keys, secrets, passwords, tokens, credentials.
SECRET_KEY = re.compile(r"secret|passw|token|credential|private|key|auth", re.IGNORECASE)


def _is_url(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """`26h`, `90m`, `1s`, `2d`, `1h30m` or `0` as a timedelta; ValueError for anything else."""
    compact = text.replace(" ", "").lower()
    if compact == "0":
        return timedelta(0)
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ValueError(f"{text!r} is not a duration such as 26h, 90m, 1s, 1h30m or 0")
    return timedelta(seconds=sum(float(n) * _UNIT_SECONDS[u] for n, u in parts))


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or a URL (`gs://...`) without touching the filesystem."""
    base = base.rstrip("/")
    return "/".join([base, *(p.strip("/") for p in parts if p)])


class Settings(BaseSettings):
    """Effective configuration; see `.env.example` for every key."""

    model_config = SettingsConfigDict(
        env_prefix="LAKEHOUSE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    data_dir: Path = Field(PROJECT_ROOT / "data", description="project data folder (sample, lake, managed PostgreSQL)")
    source: str | None = Field(
        None, description="raw deliveries: local path, file://, gs://bucket/prefix, gdrive://<folder-id>"
    )
    lake: str | None = Field(None, description="lake root: local path or gs://bucket/prefix")
    pg_dsn: SecretStr | None = Field(
        None, description="PostgreSQL DSN of the warehouse; unset: a project-managed local cluster"
    )
    spark_master: str = Field("local[*]", description="local[*], spark://host:port or sc://host:port")
    shuffle_partitions: int = Field(0, description="spark.sql.shuffle.partitions; 0: twice the local core count")
    spark_driver_memory: str = Field("2560m", description="driver memory for a local Spark session")
    spark_conf: dict[str, str] = Field(
        default_factory=dict, description='extra Spark settings as JSON, e.g. {"spark.executor.memory": "8g"}'
    )
    max_line_bytes: int = Field(
        16 * 1024 * 1024, description="event lines longer than this are set aside at landing (line_too_long)"
    )
    max_file_bytes: int = Field(
        64 * 1024 * 1024,
        description="transactional exports larger than this are set aside at landing "
        "(file_too_large); event files of any size are read line by line",
    )
    plausible_since: date = Field(
        date(2000, 1, 1), description="events and records dated earlier are quarantined (date_out_of_range)"
    )
    plausible_days_ahead: int = Field(
        2, description="events and records dated later than today plus this many days are quarantined"
    )
    erasure_mode: Literal["anonymize", "delete"] = Field(
        "anonymize",
        description="`lakehouse erase`: keep an erased learner's events, sessions, subscriptions and "
        "follows without the learner (anonymize) or remove them (delete); docs/erasure.md",
    )
    erasure_salt: SecretStr | None = Field(
        None,
        description="salt of the erased ids' hashes (tombstones); unset: a random one stored 0600 under the data folder",
    )
    expectations: Path = Field(
        PROJECT_ROOT / "expectations.yaml",
        description="the declared expectations silver and gold rows are checked against (docs/quality.md)",
    )
    freshness_sla: str = Field(
        "26h", description="a source group is stale when its newest delivery landed longer ago (26h, 90m, 1s)"
    )
    volume_min_pct: float = Field(
        50,
        ge=0,
        le=100,
        description="a delivery with fewer lines than this % of the median of its group's last 7 is an anomaly",
    )
    alert_webhook: SecretStr | None = Field(
        None, description="URL alerts are POSTed to as JSON (`text` for Slack's incoming webhooks); unset: none"
    )
    bi_password: SecretStr | None = Field(None, description="password of the bi_reader login for BI tools")
    admin_password: SecretStr | None = Field(
        None, description="password of the platform login `admin` (Prefect UI/API, dashboard); unset: generated"
    )
    bind: str = Field("127.0.0.1", description="address `lakehouse up` listens on; beyond loopback only with a login")
    prefect_url: str | None = Field(None, description="URL people open the Prefect UI at (e.g. behind a TLS proxy)")
    dashboard_url: str | None = Field(None, description="URL people open the dashboard at (e.g. behind a TLS proxy)")
    gdrive_credentials: SecretStr | None = Field(
        None, description="Google Drive credentials: service-account JSON or OAuth token JSON (content or file path)"
    )
    gdrive_api_url: str | None = Field(None, description="Drive API root override (tests use a local fake)")
    gcs_token: str | None = Field(
        None, description="GCS credentials of gcsfs and Spark: 'anon', 'google_default', 'cloud', or a JSON key path"
    )
    gcs_endpoint: str | None = Field(
        None, description="GCS endpoint of every GCS client (an emulator, a private endpoint); unset: Google's"
    )
    deletion_vectors: bool = Field(
        False,
        description="Delta deletion vectors on the lake's tables (a MERGE marks rows instead of rewriting files); "
        "every reader of the lake must support them",
    )
    engine_idle: str = Field(
        "10m",
        description="how long a background engine (Spark, Prefect) a command starts stays up after its last use "
        "(`90s`, `10m`, `2h`); 0: none, every command starts its own",
    )
    gcs_hmac_key_id: str | None = Field(None, description="GCS HMAC key id DuckDB reads a gs:// lake with")
    gcs_hmac_secret: SecretStr | None = Field(None, description="GCS HMAC secret DuckDB reads a gs:// lake with")

    @field_validator("engine_idle", "freshness_sla")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @property
    def engine_idle_seconds(self) -> float:
        return parse_duration(self.engine_idle).total_seconds()

    @property
    def sla(self) -> timedelta:
        """The freshness SLA as a duration."""
        return parse_duration(self.freshness_sla)

    @property
    def source_url(self) -> str:
        return self.source or str(self.data_dir / "sample")

    @property
    def lake_url(self) -> str:
        lake = self.lake or str(self.data_dir / "lake")
        if lake.startswith("file://"):
            lake = lake[len("file://") :]
        return lake if _is_url(lake) else str(Path(lake).resolve())

    @property
    def lake_is_local(self) -> bool:
        return not _is_url(self.lake_url)

    def table_path(self, layer: str, table: str) -> str:
        """Location of a Delta table `<layer>.<table>` in the lake."""
        if layer not in LAYERS and not layer.startswith("_"):
            raise ValueError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
        return join(self.lake_url, layer, table)

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / "catalog.duckdb"

    def effective_shuffle_partitions(self) -> int:
        return self.shuffle_partitions or max(2, 2 * (os.cpu_count() or 1))

    def masked(self) -> dict[str, str]:
        """Every setting as text, secrets masked, derived locations included."""
        out: dict[str, str] = {}
        for name, value in self:
            if isinstance(value, SecretStr):
                out[name] = MASK if value.get_secret_value() else ""
            elif isinstance(value, dict):
                out[name] = json.dumps({k: MASK if SECRET_KEY.search(k) else v for k, v in value.items()})
            else:
                out[name] = "" if value is None else str(value)
        if self.pg_dsn is not None:
            out["pg_dsn"] = mask_dsn(self.pg_dsn.get_secret_value())
        else:
            out["pg_dsn"] = f"(project-managed cluster in {self.pg_dir})"
        out["source"] = self.source_url
        out["lake"] = self.lake_url
        out["catalog"] = str(self.catalog_path)
        return out


def mask_dsn(dsn: str) -> str:
    """Hide the password of a libpq DSN, URL or key=value form (parsed by libpq; an unparseable DSN is hidden)."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    from psycopg2 import ProgrammingError
    from psycopg2.extensions import make_dsn, parse_dsn

    try:
        params = parse_dsn(dsn)
    except ProgrammingError:
        return "(a DSN libpq cannot parse; hidden)"
    if "password" not in params:
        return dsn
    masked = make_dsn(**{k: MASK if k == "password" else v for k, v in params.items()})
    if "://" in dsn:
        parts = urlsplit(dsn)
        userinfo, at, hosts = parts.netloc.rpartition("@")
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}" if ":" in userinfo else parts.netloc
        query = urlencode([(k, MASK if k == "password" else v) for k, v in parse_qsl(parts.query)], safe="*")
        url = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
        with contextlib.suppress(ProgrammingError):  # the URL form would not parse: the keyword form stands
            if parse_dsn(url).get("password") == MASK:
                masked = url
    return masked


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
