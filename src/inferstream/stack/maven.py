"""Resolving jars from Maven Central with the ``mvn`` client.

A throwaway ``pom.xml`` names the artifacts; ``mvn dependency:copy-dependencies``
copies them and their runtime dependencies into one directory, which then serves
as a classpath (``DIR/*``). Maven keeps its own cache in ``~/.m2``, so a second
fetch of the same versions is a copy, not a download.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from inferstream.errors import StackError

_POM = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by inferstream to resolve a classpath; safe to delete. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.inferstream</groupId>
  <artifactId>{artifact_id}</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


@dataclass(frozen=True, slots=True)
class Artifact:
    """One Maven coordinate, ``group:artifact:version``."""

    group: str
    artifact: str
    version: str

    def __str__(self) -> str:
        return f"{self.group}:{self.artifact}:{self.version}"


def render_pom(artifacts: Sequence[Artifact], *, artifact_id: str = "classpath") -> str:
    """A ``pom.xml`` whose runtime dependencies are ``artifacts``.

    Declaration order matters: where two artifacts pull different versions of the
    same library at the same depth, Maven keeps the one declared first.
    """
    lines = [
        "    <dependency>"
        f"<groupId>{escape(a.group)}</groupId>"
        f"<artifactId>{escape(a.artifact)}</artifactId>"
        f"<version>{escape(a.version)}</version>"
        "</dependency>"
        for a in artifacts
    ]
    return _POM.format(artifact_id=escape(artifact_id), dependencies="\n".join(lines))


def find_mvn() -> str:
    """The ``mvn`` executable on ``PATH``, or a :class:`StackError` saying how to get one."""
    found = shutil.which("mvn")
    if found is None:
        raise StackError(
            "mvn (Apache Maven) is not on PATH, so the Kafka jars cannot be fetched; "
            "install it (e.g. `apt-get install maven`) or set INFERSTREAM_KAFKA_LIB to a "
            "directory that already holds them"
        )
    return found


def copy_dependencies(
    artifacts: Sequence[Artifact],
    dest: Path,
    *,
    artifact_id: str = "classpath",
    timeout: float = 900.0,
) -> None:
    """Put ``artifacts`` and their runtime dependencies, as jars, into ``dest``.

    The jars land in a staging directory beside ``dest`` that is renamed into place
    once Maven succeeded, so ``dest`` is either complete or absent; the pom is kept
    in ``dest`` as a record of what was resolved. ``dest`` must not exist yet.
    """
    mvn = find_mvn()
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    pom_text = render_pom(artifacts, artifact_id=artifact_id)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=f".{dest.name}-staging-") as tmp:
        staging = Path(tmp)
        (staging / "pom.xml").write_text(pom_text, encoding="utf-8")
        out_dir = staging / "lib"
        command = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(staging / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={out_dir}",
        ]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
                cwd=staging,
            )
        except subprocess.TimeoutExpired as exc:
            raise StackError(
                f"mvn ran past {timeout:.0f}s fetching {', '.join(map(str, artifacts))}; "
                "check that Maven Central is reachable (proxy settings in ~/.m2/settings.xml)"
            ) from exc
        except OSError as exc:
            raise StackError(f"could not run {mvn}: {exc}") from exc
        if result.returncode != 0 or not any(out_dir.glob("*.jar")):
            output = (result.stdout + result.stderr).strip()
            tail = "\n".join(output.splitlines()[-25:])
            raise StackError(
                f"mvn could not fetch {', '.join(map(str, artifacts))} (exit {result.returncode}); "
                f"check the version and that Maven Central is reachable. mvn said:\n{tail}"
            )
        (out_dir / "pom.xml").write_text(pom_text, encoding="utf-8")
        try:
            os.replace(out_dir, dest)
        except OSError as exc:
            # Another process may have put a complete directory there first: keep theirs.
            if not any(dest.glob("*.jar")):
                raise StackError(
                    f"could not move the fetched jars into {dest}: {exc}; remove {dest} and retry"
                ) from exc


def copy_artifact(artifact: Artifact, packaging: str, dest_dir: Path, *, timeout: float = 900.0) -> Path:
    """Copy one artifact of ``packaging`` (``zip``, ...) into ``dest_dir``; returns the file.

    No dependencies are resolved: this is for distributions published as archives.
    """
    mvn = find_mvn()
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    coordinate = f"{artifact.group}:{artifact.artifact}:{artifact.version}:{packaging}"
    command = [mvn, "-q", "-B", "dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={dest_dir}"]
    try:
        with tempfile.TemporaryDirectory(prefix="inferstream-mvn-") as cwd:
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    except subprocess.TimeoutExpired as exc:
        raise StackError(
            f"mvn ran past {timeout:.0f}s fetching {coordinate}; check that Maven Central is reachable"
        ) from exc
    except OSError as exc:
        raise StackError(f"could not run {mvn}: {exc}") from exc
    path = dest_dir / f"{artifact.artifact}-{artifact.version}.{packaging}"
    if result.returncode != 0 or not path.is_file():
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise StackError(
            f"mvn could not fetch {coordinate} (exit {result.returncode}); check the version and that "
            f"Maven Central is reachable. mvn said:\n{tail}"
        )
    return path
