"""The README's SDK example works as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

from inferstream import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_sdk_example_runs_as_written(settings: Settings) -> None:
    sdk_section = README.read_text().split("## The SDK", 1)[1]
    example = re.findall(r"```python\n(.*?)```", sdk_section, flags=re.S)[0]
    assert len(example.strip().splitlines()) <= 20
    env = {
        **os.environ,
        "INFERSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "INFERSTREAM_TOPICS__PREFIX": settings.topics.prefix,
    }
    result = subprocess.run([sys.executable, "-c", example], capture_output=True, env=env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode().splitlines() == ["2 []", "b'e1' review", "b'e2' transaction"]
