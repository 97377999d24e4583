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
