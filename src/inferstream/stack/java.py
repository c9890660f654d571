"""Finding a Java runtime and checking its version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from inferstream.errors import StackError

# `java -version` prints e.g. `openjdk version "17.0.15" 2025-04-15`, `java version
# "1.8.0_292"` or `openjdk version "25" 2025-09-16` on stderr.
_VERSION = re.compile(r'version "(?P<major>\d+)(?:\.(?P<minor>\d+))?[^"]*"')


@dataclass(frozen=True, slots=True)
class JavaRuntime:
    """A ``java`` executable and its feature release (8, 11, 17, 21, 25, ...)."""

    executable: Path
    major: int


def parse_java_major(version_output: str) -> int | None:
    """The feature release named in the output of ``java -version`` (``1.8`` is 8)."""
    match = _VERSION.search(version_output)
    if match is None:
        return None
    major = int(match["major"])
    if major == 1 and match["minor"] is not None:
        return int(match["minor"])
    return major


def find_java(java_home: Path | None = None, *, minimum: int, purpose: str) -> JavaRuntime:
    """The ``java`` to run, checked to be at least ``minimum``.

    Looks at ``java_home`` first, then ``$JAVA_HOME``, then ``PATH``. ``purpose`` names
    what needs Java in error messages (``"Kafka 4.1.1"``).
    """
    if java_home is not None:
        candidate = Path(java_home) / "bin" / "java"
        if not candidate.is_file():
            raise StackError(
                f"java_home {java_home} has no bin/java; point stack.java_home "
                f"(INFERSTREAM_STACK__JAVA_HOME) at a JDK or JRE {minimum}+ for {purpose}"
            )
        where = f"java_home {java_home}"
    elif os.environ.get("JAVA_HOME") and (Path(os.environ["JAVA_HOME"]) / "bin" / "java").is_file():
        candidate = Path(os.environ["JAVA_HOME"]) / "bin" / "java"
        where = f"JAVA_HOME {os.environ['JAVA_HOME']}"
    else:
        found = shutil.which("java")
        if found is None:
            raise StackError(
                f"java is not on PATH and JAVA_HOME is not set; {purpose} needs Java {minimum}+ "
                f"(e.g. `apt-get install openjdk-{minimum}-jre-headless`, or set "
                "INFERSTREAM_STACK__JAVA_HOME)"
            )
        candidate = Path(found)
        where = f"PATH ({found})"
    try:
        result = subprocess.run(
            [str(candidate), "-version"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"could not run {candidate} -version: {exc}") from exc
    output = result.stderr + result.stdout
    major = parse_java_major(output)
    if result.returncode != 0 or major is None:
        raise StackError(
            f"{candidate} -version failed or printed no version (exit {result.returncode}): {output.strip()[-500:]}"
        )
    if major < minimum:
        raise StackError(
            f"{purpose} needs Java {minimum}+, but the java from {where} is Java {major}; "
            f"install Java {minimum}+ and set JAVA_HOME or INFERSTREAM_STACK__JAVA_HOME"
        )
    return JavaRuntime(executable=candidate, major=major)
