"""The pinned jars of a Spark session (Delta Lake, Hadoop's GCS connector): resolved once into a project cache, then
handed to Spark as local files (`spark.jars`), so no session start resolves anything.

`python -m lakehouse.jars [--gcs]` fills the cache (`make setup` runs it); a session whose jars are missing resolves
them on first use.
"""

from __future__ import annotations

import argparse
import fcntl
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from lakehouse.config import PROJECT_ROOT

CACHE = PROJECT_ROOT / ".jars"
# The Ivy cache Spark's own `spark.jars.packages` uses: what an earlier Spark fetched is not fetched again. The project
# cache holds links into it (a link whose target is gone counts as missing and is resolved again).
IVY_CACHE = Path.home() / ".ivy2.5.2" / "cache"


class JarsUnavailable(RuntimeError):
    """A pinned jar could not be resolved."""


@dataclass(frozen=True)
class Artifact:
    org: str
    name: str
    rev: str
    classifier: str | None = None
    transitive: bool = True

    @property
    def coordinates(self) -> str:
        return ":".join(p for p in (self.org, self.name, self.rev, self.classifier) if p)

    @property
    def folder(self) -> Path:
        return CACHE / self.coordinates.replace(":", "_")


def delta() -> Artifact:
    """Delta Lake for this pyspark (Spark major.minor, Scala 2.13) at the installed delta-spark version."""
    import pyspark

    spark = ".".join(pyspark.__version__.split(".")[:2])
    return Artifact("io.delta", f"delta-spark_{spark}_2.13", version("delta-spark"))


# Hadoop's GCS connector as one shaded jar (its own dependencies relocated inside).
GCS_CONNECTOR = Artifact("com.google.cloud.bigdataoss", "gcs-connector", "3.1.3", classifier="shaded", transitive=False)


def _ivy_jar() -> Path:
    import pyspark

    found = sorted(Path(pyspark.__file__).parent.joinpath("jars").glob("ivy-*.jar"))
    if not found:
        raise JarsUnavailable("pyspark ships no Ivy jar to resolve the Spark jars with")
    return found[-1]


def _ivy_module(artifact: Artifact) -> str:
    """An Ivy module depending on the artifact; like Spark's own resolution, Scala's library is left to Spark."""
    publication = (
        f'<artifact name="{artifact.name}" type="jar" m:classifier="{artifact.classifier}"/>'
        if artifact.classifier
        else ""
    )
    return f"""<ivy-module version="2.0" xmlns:m="http://ant.apache.org/ivy/maven">
  <info organisation="lakehouse" module="spark-jars"/>
  <configurations><conf name="default"/></configurations>
  <dependencies>
    <dependency org="{artifact.org}" name="{artifact.name}" rev="{artifact.rev}"
                transitive="{str(artifact.transitive).lower()}"
                conf="default->default(runtime)">{publication}</dependency>
    <exclude org="org.scala-lang" module="scala-library"/>
  </dependencies>
</ivy-module>
"""


# One resolver named as Spark names its own, so the cache entries Spark wrote are reused as they are.
_IVY_SETTINGS = """<ivysettings>
  <settings defaultResolver="central"/>
  <resolvers><ibiblio name="central" m2compatible="true"/></resolvers>
</ivysettings>
"""


def _resolve(artifact: Artifact) -> None:
    """Fetch the artifact and its runtime dependencies with Ivy into its cache folder, manifest last."""
    import os

    java = shutil.which("java") or (os.environ.get("JAVA_HOME") and str(Path(os.environ["JAVA_HOME"], "bin", "java")))
    if not java:
        raise JarsUnavailable("Java 17+ is required: install it with `apt-get install -y openjdk-17-jre-headless`")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE, prefix=".resolve-") as work:
        module, settings, out = Path(work, "ivy.xml"), Path(work, "ivysettings.xml"), Path(work, "jars")
        module.write_text(_ivy_module(artifact))
        settings.write_text(_IVY_SETTINGS)
        done = subprocess.run(
            [
                java,
                "-jar",
                str(_ivy_jar()),
                "-settings",
                str(settings),
                "-ivy",
                str(module),
                "-confs",
                "default",
                "-cache",
                str(IVY_CACHE),
                "-symlink",
                "-retrieve",
                f"{out}/[organisation]_[artifact]-[revision](-[classifier]).[ext]",
            ],
            capture_output=True,
            text=True,
        )
        jars = sorted(p.name for p in out.glob("*.jar")) if out.is_dir() else []
        if done.returncode != 0 or not jars:
            problems = [ln.strip() for ln in done.stdout.splitlines() if "::" in ln and "NOT FOUND" in ln.upper()]
            reason = problems[0] if problems else (done.stderr.strip().splitlines() or ["no jar retrieved"])[-1]
            raise JarsUnavailable(
                f"could not fetch {artifact.coordinates} with Ivy ({reason}); it needs network "
                f"access to the Maven repository once, then stays in {CACHE}"
            )
        (out / "jars.txt").write_text("\n".join(jars) + "\n")
        if artifact.folder.exists():
            shutil.rmtree(artifact.folder)
        out.rename(artifact.folder)


def _cached(artifact: Artifact) -> list[str] | None:
    manifest = artifact.folder / "jars.txt"
    if not manifest.is_file():
        return None
    paths = [artifact.folder / name for name in manifest.read_text().split()]
    return [str(p) for p in paths] if paths and all(p.is_file() for p in paths) else None


def resolved(artifact: Artifact) -> list[str]:
    """Local paths of the artifact's jars (its runtime dependencies included), resolved on first use."""
    found = _cached(artifact)
    if found is not None:
        return found
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # one resolution at a time across processes
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = _cached(artifact)
        if found is None:
            _resolve(artifact)
            found = _cached(artifact) or []
    return found


def spark_jars(gcs: bool = False) -> list[str]:
    """Local jar files a Spark session needs: Delta, and Hadoop's GCS connector for a gs:// lake."""
    return [path for a in (delta(), *([GCS_CONNECTOR] if gcs else [])) for path in resolved(a)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gcs", action="store_true", help="also Hadoop's GCS connector (for a gs:// lake)")
    args = parser.parse_args()
    try:
        jars = spark_jars(gcs=args.gcs)
    except JarsUnavailable as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"{len(jars)} Spark jars cached in {CACHE}")


if __name__ == "__main__":
    main()
