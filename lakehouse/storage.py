"""How every client reaches the lake and GCS: fsspec filesystems (gcsfs) and Spark's GCS connector, both from the
settings `gcs_token` and `gcs_endpoint`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lakehouse.config import Settings, get_settings

TOKEN_VAR = "LAKEHOUSE_GCS_TOKEN"


def is_gcs(url: str) -> bool:
    return url.startswith(("gs://", "gcs://"))


def gcs_filesystem(settings: Settings) -> Any:
    """A gcsfs client with the configured credentials and endpoint."""
    if settings.gcs_endpoint:
        # The plain JSON-API client: an emulator or a private endpoint answers no gRPC bucket-type lookup, on which
        # gcsfs's default class would first wait 60 s per bucket.
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(token=settings.gcs_token or None, endpoint_url=settings.gcs_endpoint.rstrip("/"))
    import gcsfs

    return gcsfs.GCSFileSystem(token=settings.gcs_token or None)


def filesystem(url: str, settings: Settings | None = None) -> tuple[Any, str]:
    """The fsspec filesystem of a location (local path, file:// or gs://) and the location in its terms."""
    if is_gcs(url):
        fs = gcs_filesystem(settings or get_settings())
        return fs, fs._strip_protocol(url)
    import fsspec

    return fsspec.core.url_to_fs(url)


def _connector_auth(token: str | None) -> dict[str, str]:
    """The GCS connector's credentials for a gcsfs token: Google's defaults, none, the VM's, or a JSON key file."""
    if token in (None, "", "google_default"):
        return {"fs.gs.auth.type": "APPLICATION_DEFAULT"}
    if token == "anon":
        return {"fs.gs.auth.type": "UNAUTHENTICATED"}
    if token == "cloud":
        return {"fs.gs.auth.type": "COMPUTE_ENGINE"}
    path = Path(token).expanduser()
    if not path.is_file():
        raise ValueError(
            f"{TOKEN_VAR}={token!r}: Spark's GCS connector takes anon, google_default, cloud or the "
            "path of a JSON key file"
        )
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{TOKEN_VAR}: cannot read {path} as a JSON key file ({exc})") from None
    kind = info.get("type") if isinstance(info, dict) else None
    if kind == "service_account":
        return {
            "fs.gs.auth.type": "SERVICE_ACCOUNT_JSON_KEYFILE",
            "fs.gs.auth.service.account.json.keyfile": str(path.resolve()),
        }
    if kind == "authorized_user":
        return {
            "fs.gs.auth.type": "USER_CREDENTIALS",
            "fs.gs.auth.client.id": info["client_id"],
            "fs.gs.auth.client.secret": info["client_secret"],
            "fs.gs.auth.refresh.token": info["refresh_token"],
        }
    raise ValueError(f"{TOKEN_VAR}: {path} is neither a service-account key nor an authorized-user token")


def spark_gcs_conf(settings: Settings) -> dict[str, str]:
    """Spark settings for a gs:// lake: Hadoop's GCS connector with the configured credentials and endpoint, and
    Delta's GCS log store (a commit is a put-if-absent, so concurrent writers cannot both take one version)."""
    hadoop = {
        "fs.gs.impl": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem",
        "fs.AbstractFileSystem.gs.impl": "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS",
        # Hadoop 3.5's core-default.xml gives the block size as "64m", which connector 3.1 reads as a plain number.
        "fs.gs.block.size": str(64 * 1024 * 1024),
        # Connector 3.1's vectored reads call a Hadoop method that Hadoop 3.5 removed: Parquet reads range by range.
        "parquet.hadoop.vectored.io.enabled": "false",
        # Every open file buffers one upload chunk (24 MiB by default) and a task keeps up to
        # spark.sql.maxConcurrentOutputFileWriters files open in a partitioned write: 8 MiB keeps that within a
        # small driver's heap (16 files of 24 MiB per task ran a 1.5 GB local driver out of memory).
        "fs.gs.outputstream.upload.chunk.size": str(8 * 1024 * 1024),
        **_connector_auth(settings.gcs_token),
    }
    if settings.gcs_endpoint:
        hadoop["fs.gs.storage.root.url"] = settings.gcs_endpoint.rstrip("/") + "/"
    return {
        "spark.delta.logStore.gs.impl": "io.delta.storage.GCSLogStore",
        **{f"spark.hadoop.{key}": value for key, value in hadoop.items()},
    }
