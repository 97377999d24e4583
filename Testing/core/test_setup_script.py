"""setup.sh stops before installing anything when the disk cannot hold the dependencies (CI once failed half way
through pip with "No space left on device")."""
import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_setup_refuses_a_disk_too_small_with_a_clear_message(tmp_path):
    shutil.copy(ROOT / "setup.sh", tmp_path / "setup.sh")  # a copy: no .venv beside it, nothing installed yet
    env = {**os.environ, "SYNTHFM_SETUP_NEED_GB": "100000000"}
    r = subprocess.run(["bash", str(tmp_path / "setup.sh")], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 1
    assert "GB free on the disk of" in r.stderr and "needs at least 100000000 GB" in r.stderr and "TMPDIR" in r.stderr
    assert not (tmp_path / ".venv").exists()  # stopped before creating anything


def test_ci_stops_when_setup_fails(tmp_path):
    """.ci/run runs the README's test command under ``set -e``: a failing setup.sh must end CI with its status (a bare
    ``a && b`` list does not stop a ``set -e`` script when ``a`` fails, and CI would pass without running a test)."""
    readme = (ROOT / "README.md").read_text()
    command = "bash setup.sh && .venv/bin/python -m pytest -q"
    assert command in readme
    line = next(l for l in (ROOT / ".ci" / "run").read_text().splitlines() if command in l)
    (tmp_path / "setup.sh").write_text("exit 3\n")
    script = f"set -euo pipefail\ncd {tmp_path}\n{line}\necho CONTINUED\n"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True)
    assert done.returncode == 3 and "CONTINUED" not in done.stdout
