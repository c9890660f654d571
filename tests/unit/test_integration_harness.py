"""The integration harness refuses skips: a skipped integration test is a failed run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run_pytest(tmp_path: Path, test_source: str) -> subprocess.CompletedProcess[str]:
    suite = tmp_path / "integration"
    suite.mkdir()
    shutil.copy(REPO_ROOT / "tests" / "integration" / "conftest.py", suite / "conftest.py")
    (suite / "test_sample.py").write_text(test_source)
    # An external broker address keeps the harness from starting one (no test here uses it).
    env = {**os.environ, "INFERSTREAM_TEST_BOOTSTRAP": "127.0.0.1:1"}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rA", str(suite)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_skipped_integration_tests_fail(tmp_path: Path) -> None:
    result = _run_pytest(
        tmp_path,
        "import pytest\n"
        "def test_passes(): pass\n"
        "def test_skips(): pytest.skip('no broker today')\n"
        "@pytest.mark.skipif(True, reason='never here')\n"
        "def test_marked(): pass\n"
        "@pytest.mark.xfail(reason='known bug', strict=True)\n"
        "def test_known_bug(): raise AssertionError\n",
    )
    assert result.returncode == 1, result.stdout
    # A skip in the test body fails it; a skip at setup (skipif) makes it an error.
    assert result.stdout.splitlines()[-1].startswith("1 failed, 1 passed, 1 xfailed, 1 error in")
    assert "integration tests must not be skipped (got: Skipped: no broker today)" in result.stdout
    assert "integration tests must not be skipped (got: Skipped: never here)" in result.stdout


def test_a_module_skipped_at_collection_fails(tmp_path: Path) -> None:
    result = _run_pytest(
        tmp_path,
        "import pytest\npytest.importorskip('no_such_module_anywhere')\ndef test_never(): pass\n",
    )
    assert result.returncode != 0, result.stdout
    assert "integration tests must not be skipped" in result.stdout
    assert "no_such_module_anywhere" in result.stdout
