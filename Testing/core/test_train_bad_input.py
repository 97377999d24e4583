"""Issue 11, bad input to training: a full disk while the embedding cache or a checkpoint is written, too little
free space, caches cut short while being created, and --init decoders of another architecture (the refusals
that need no training are cases of test_cli_bad_input.REFUSALS)."""
import errno
import json
import shutil
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfm.cli import main
from synthfm.io.checks import InputError
from synthfm.train.embed_cache import EmbeddingCache, bytes_per_item, inspect_cache

REPO = Path(__file__).resolve().parents[2]
ENOSPC = OSError(errno.ENOSPC, "No space left on device")


def _args(tmp_path, steps=2, *extra):
    return ["train", "--model", "tiny-test", "--samples", "4", "--val-samples", "2", "--steps", str(steps),
            "--batch-size", "2", "--val-every", "100", "--ckpt-every", "100", "--generator", '{"size": 64}',
            "--device", "cpu", "--threads", "1", "--no-bf16", "--out", str(tmp_path / "run"), *extra]


def _error(capsys):
    """The one error line on stderr (progress bars go there too)."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1 and lines[0].startswith("synthfm train: error: ") and "Traceback" not in err, err
    return lines[0]


def _files(folder):
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}


def test_disk_full_while_filling_the_cache_keeps_what_was_encoded_and_the_next_run_continues(tmp_path, capsys,
                                                                                              monkeypatch):
    original, calls = EmbeddingCache._write, []

    def fill_up(self, idx, embeddings, batch):
        calls.append(self.folder.name)
        if len(calls) == 3:  # validation images 0-1 and training images 0-1 are written (two at a time); 2-3 find
            # the disk full
            raise ENOSPC
        original(self, idx, embeddings, batch)

    monkeypatch.setattr(EmbeddingCache, "_write", fill_up)
    assert main(_args(tmp_path)) == 2
    err = _error(capsys)
    per = bytes_per_item(64)
    assert f"disk full while writing the embedding cache {tmp_path / 'run' / 'cache' / 'train'}" in err
    assert f"4 images x {per / 2**20:.1f} MiB = {4 * per / 2**20:.1f} MiB on that disk" in err
    assert "the 2 images encoded so far are kept" in err and "run the same command again to continue" in err
    train = EmbeddingCache(tmp_path / "run" / "cache" / "train", "r")
    assert train.filled.tolist() == [1, 1, 0, 0]  # the items that failed are not marked as encoded
    first = np.array(train.embeddings[0])
    assert not (tmp_path / "run" / ".synthfm.lock").exists() and not (tmp_path / "run" / "tiny-test.pt").exists()

    monkeypatch.setattr(EmbeddingCache, "_write", original)
    calls.clear()
    assert main(_args(tmp_path)) == 0
    train = EmbeddingCache(tmp_path / "run" / "cache" / "train", "r")
    assert train.complete and np.array_equal(train.embeddings[0], first)
    assert main(_args(tmp_path / "clean")) == 0  # the continued cache equals one filled in one go
    clean = EmbeddingCache(tmp_path / "clean" / "run" / "cache" / "train", "r")
    assert np.array_equal(clean.embeddings, train.embeddings) and np.array_equal(clean.labels, train.labels)


def test_disk_full_while_saving_leaves_the_last_save_untouched_and_resume_finishes(tmp_path, capsys, monkeypatch):
    assert main(_args(tmp_path, 2)) == 0
    run = tmp_path / "run"
    before = _files(run)
    import synthfm.models.checkpoint as checkpoint
    from synthfm.io.atomic import atomic_path

    real_write = checkpoint.atomic_write_bytes

    def half_then_full(target, data, overwrite=True):
        with atomic_path(target, overwrite) as tmp:
            tmp.write_bytes(data[:len(data) // 2])  # half of the file was written when the disk filled up
            raise ENOSPC

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", half_then_full)
    assert main(_args(tmp_path, 4)) == 2
    err = _error(capsys)
    assert f"disk full while saving the training state in {run} at step 4: a save needs about 64.0 MiB" in err
    assert "the other files are as the last save (step 2) left them" in err and "run the same command again" in err
    assert _files(run) == before  # checkpoint, resume state, history, card, curve: byte for byte; no temporaries
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real_write)
    assert main(_args(tmp_path, 4)) == 0
    assert torch.load(run / "resume.pt", weights_only=False)["step"] == 4


def test_too_little_free_space_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    import synthfm.io.checks as checks
    from synthfm.train.trainer import Trainer

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(checks.shutil, "disk_usage", lambda path: usage(2**40, 2**40 - 2**20, 2**20))
    monkeypatch.setattr(Trainer, "__init__", lambda *a, **k: pytest.fail("the model was built"))
    assert main(_args(tmp_path)) == 2
    err = _error(capsys)
    per = bytes_per_item(64) / 2**20
    assert f"not enough disk space in {tmp_path}: 6 images x {per:.1f} MiB for the embedding caches and about 64.0 " \
           "MiB for checkpoints and the resume state needs" in err
    assert "only 1.0 MiB are free" in err and "--cache" in err
    assert not (tmp_path / "run").exists()


def test_cache_creation_on_a_full_disk_gives_the_space_back(tmp_path, monkeypatch):
    import synthfm.train.embed_cache as ec

    def full(fd, offset, length):
        raise ENOSPC

    monkeypatch.setattr(ec.os, "posix_fallocate", full, raising=False)
    wanted = {"format": "synthfm-embeddings", "kind": "test", "count": 3, "size": 32}
    with pytest.raises(InputError, match=r"disk full while writing the embedding cache .*3 images x .* the 0 images"):
        EmbeddingCache.open_matching(tmp_path / "c", wanted)
    assert not (tmp_path / "c").exists()
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("the user's")
    with pytest.raises(InputError, match="disk full"):
        EmbeddingCache.open_matching(tmp_path / "d", wanted)
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["notes.txt"]


def test_caches_are_allocated_in_full_and_a_creation_cut_short_is_redone(tmp_path):
    wanted = {"format": "synthfm-embeddings", "kind": "test", "count": 3, "size": 32}
    cache = EmbeddingCache.open_matching(tmp_path / "c", wanted)
    emb = tmp_path / "c" / "embeddings.f16"
    if hasattr(__import__("os"), "posix_fallocate"):
        assert emb.stat().st_blocks * 512 >= emb.stat().st_size  # taken on disk now, not a sparse file
    assert inspect_cache(tmp_path / "c", wanted) == 0
    del cache
    (tmp_path / "c" / "manifest.json").unlink()  # a run killed before the manifest: nothing was encoded
    assert inspect_cache(tmp_path / "c", wanted) == 3 * bytes_per_item(32)
    again = EmbeddingCache.open_matching(tmp_path / "c", wanted)
    assert len(again) == 3 and not again.filled.any()
    assert json.loads((tmp_path / "c" / "manifest.json").read_text()) == wanted


def test_init_decoders_are_checked_against_the_model(tmp_path, monkeypatch):
    from synthfm.models.checkpoint import decoder_shapes
    from synthfm.models.loader import check_init_decoder, init_decoder_state
    from synthfm.models.registry import SHIPPED_MODELS_DIR
    from synthfm.train import TrainConfig, Trainer

    assert check_init_decoder("synthfm-lite", "synthfm-lite") == SHIPPED_MODELS_DIR / "synthfm-lite.pt"
    assert check_init_decoder("medsam-lite", "synthfm-lite") is None  # its published decoder, same encoder
    state = init_decoder_state("medsam-lite", "synthfm-lite")
    assert {k: tuple(v.shape) for k, v in state.items()} == decoder_shapes(256)
    with pytest.raises(ValueError, match="synthfm-lite.pt is a 'synthfm-lite' decoder for encoder tinyvit"):
        check_init_decoder(str(SHIPPED_MODELS_DIR / "synthfm-lite.pt"), "tiny-test")
    # the Trainer (API and Slicer) refuses before the model is built
    monkeypatch.setattr("synthfm.train.trainer.build_model", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(ValueError, match="'synthfm-vit-b' is a decoder for encoder vit_b"):
        Trainer(TrainConfig(model="synthfm-lite", init="synthfm-vit-b", out=str(tmp_path / "run")))


def test_command_line_refuses_a_vit_b_decoder_for_synthfm_lite(tmp_path):
    """End to end, as a user runs it: one line, exit code 2, before any work (no --out folder)."""
    from synthfm.models import build_model, save_decoder_checkpoint

    path = save_decoder_checkpoint(tmp_path / "vitb.pt", build_model("tiny-test"), {"model": "synthfm-vit-b"})
    payload = torch.load(path, weights_only=True)
    payload["meta"].update(encoder="vit_b", image_size=1024)
    torch.save(payload, path)
    proc = subprocess.run([sys.executable, "-m", "synthfm.cli", "train", "--init", str(path), "--out",
                           str(tmp_path / "run")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("synthfm train: error: --init ")
    assert "is a 'synthfm-vit-b' decoder for encoder vit_b (1024 px), but model 'synthfm-lite' uses encoder " \
           "tinyvit (256 px)" in proc.stderr
    assert not (tmp_path / "run").exists()
