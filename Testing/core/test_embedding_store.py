"""Slice embeddings kept on disk between runs (synthfm.segment.embedding_store): reused only for the same encoder,
precision and encoder input, the same masks with or without them, unreadable files encoded again."""
import logging
import os

import numpy as np
import pytest
import torch

from synthfm.cli import main
from synthfm.io import Volume, write_volume
from synthfm.models import load_model
from synthfm.segment import Prompts, SlicePredictor
from synthfm.segment.embedding_store import EmbeddingStore

SLICES = [np.random.default_rng(i).normal(100, 20, (40, 50)).astype(np.float32) for i in range(3)]
PROMPTS = Prompts.make(positive=[(20, 18)], box=(8, 6, 36, 30))


def _predictor(state=None, **kwargs) -> SlicePredictor:
    model = load_model("tiny-test")  # random weights: copy ``state`` to get the same model twice
    if state is not None:
        model.load_state_dict(state)
    return SlicePredictor(model, **kwargs)


def _run(pred: SlicePredictor):
    return [pred.predict(s, PROMPTS, key=i) for i, s in enumerate(SLICES)]


def test_a_second_run_reads_every_embedding_and_gives_the_same_masks(tmp_path):
    first = _predictor(bf16=False)
    first.use_store(tmp_path)
    before = _run(first)
    assert first.encoder_calls == 3 and first.store.misses == 3 and first.store.hits == 0
    files = sorted(tmp_path.rglob("*.npy"))
    assert len(files) == 3 and all(np.load(f).dtype == np.float32 for f in files)  # fp32 encoder: float32
    second = _predictor(first.model.state_dict(), bf16=False)  # another process, same weights
    second.use_store(tmp_path)
    after = _run(second)
    assert second.encoder_calls == 0 and second.store.hits == 3
    for a, b in zip(before, after):
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.logits, b.logits) and a.score == b.score
    assert "3 slice(s) read, 0 encoded" in second.store.describe()


def test_a_store_changes_no_number(tmp_path):
    """Embeddings are kept exactly, so a run with a store (filling it or reading it) decodes what a run without one
    decodes: judging with and without the cache gives the same figures."""
    plain = _predictor(bf16=False)
    expected = _run(plain)
    for _ in range(2):  # fill, then read
        stored = _predictor(plain.model.state_dict(), bf16=False)
        stored.use_store(tmp_path)
        for a, b in zip(expected, _run(stored)):
            assert np.array_equal(a.mask, b.mask) and np.array_equal(a.logits, b.logits) and a.score == b.score
    assert stored.encoder_calls == 0


def test_another_encoder_precision_or_window_does_not_reuse_embeddings(tmp_path):
    base = _predictor(bf16=False)
    base.use_store(tmp_path)
    base.embed(SLICES[0], "s")
    changed = _predictor(base.model.state_dict(), bf16=False)
    with torch.no_grad():
        next(changed.model.image_encoder.parameters()).add_(0.01)
    other_bf16 = _predictor(base.model.state_dict(), bf16=True)
    other_window = _predictor(base.model.state_dict(), bf16=False, window=(0.0, 50.0))
    same_decoder_changed = _predictor(base.model.state_dict(), bf16=False)
    with torch.no_grad():  # a new decoder on the same encoder still finds the embeddings
        next(same_decoder_changed.model.mask_decoder.parameters()).add_(1.0)
    for pred, calls in ((changed, 1), (other_bf16, 1), (other_window, 1), (same_decoder_changed, 0)):
        pred.use_store(tmp_path)
        pred.embed(SLICES[0], "s")
        assert pred.encoder_calls == calls
    assert {p.store.folder for p in (base, same_decoder_changed)} == {base.store.folder}
    assert len({p.store.folder for p in (base, changed, other_bf16)}) == 3


def test_an_unreadable_file_is_encoded_again_and_replaced(tmp_path, caplog):
    first = _predictor(bf16=False)
    first.use_store(tmp_path)
    first.embed(SLICES[0], "s")
    (path,) = tmp_path.rglob("*.npy")
    path.write_bytes(b"not an array")  # e.g. a disk that filled up under another tool
    again = _predictor(first.model.state_dict(), bf16=False)
    again.use_store(tmp_path)
    with caplog.at_level(logging.WARNING):
        again.embed(SLICES[0], "s")
    assert again.encoder_calls == 1 and "unreadable" in caplog.text and str(path) in caplog.text
    assert np.load(path).shape == (256, 64, 64)  # rewritten whole
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".npy"]  # no temporaries left


def test_a_full_disk_stops_storing_not_the_run(tmp_path, caplog, monkeypatch):
    from synthfm.segment import embedding_store

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    pred = _predictor(bf16=False)
    pred.use_store(tmp_path)
    monkeypatch.setattr(embedding_store, "atomic_write_bytes", full)
    with caplog.at_level(logging.WARNING):
        masks = _run(pred)
    assert len(masks) == 3 and pred.encoder_calls == 3 and not list(tmp_path.rglob("*.npy"))
    assert caplog.text.count("No space left on device") == 1  # said once, not for every slice
    assert "storing stopped: No space left on device" in pred.store.describe()


def test_bf16_embeddings_are_kept_as_their_bits_and_others_as_float32(tmp_path):
    store = EmbeddingStore(tmp_path, load_model("tiny-test"), bf16=False)
    inputs = [torch.rand(3, 128, 128) for _ in range(2)]
    bf16_valued = (torch.randn(256, 8, 8) * 1e4).to(torch.bfloat16).float()  # what a bf16 encoder gives
    fp32_valued = torch.randn(256, 8, 8) / 3
    for x, value, dtype in ((inputs[0], bf16_valued, np.uint16), (inputs[1], fp32_valued, np.float32)):
        store.save(x, value)
        assert torch.equal(store.load(x), value)
        assert np.load(store._path(x)).dtype == dtype
    assert store.load(torch.zeros(3, 128, 128)) is None and (store.hits, store.misses) == (2, 1)


def test_the_commands_name_an_unusable_cache_folder(tmp_path, capsys):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    (tmp_path / "cases.csv").write_text("image,label\na.nii.gz,b.nii.gz\n")
    image = write_volume(tmp_path / "img.nii.gz", Volume(np.random.default_rng(0).normal(size=(4, 30, 30)), (1, 1, 2)))
    for command in (["evaluate", "--pairs", str(tmp_path / "cases.csv"), "--model", "synthfm-lite", "--prompt", "box",
                     "--out", str(tmp_path / "out")],
                    ["segment", "--image", str(image), "--model", "synthfm-lite", "--point", "15,15,2",
                     "--out", str(tmp_path / "x.nii.gz")]):
        assert main(command + ["--embedding-cache", str(not_a_folder)]) != 0
        err = capsys.readouterr().err
        assert "--embedding-cache" in err and "is a file, not a folder" in err, err


def test_decoders_on_litemedsams_encoder_share_one_store():
    """synthfm-lite's decoders are trained on LiteMedSAM's frozen TinyViT: one folder of embeddings serves both."""
    from synthfm.segment.embedding_store import encoder_fingerprint

    lite, medsam = load_model("synthfm-lite"), load_model("medsam-lite")
    assert encoder_fingerprint(lite, False) == encoder_fingerprint(medsam, False)
    assert encoder_fingerprint(lite, False) != encoder_fingerprint(lite, True)


# ---- a size cap: the least recently used embeddings are deleted ------------------------------------------------
def _capped(folder, files: float, model=None) -> EmbeddingStore:
    """A store of the tiny model capped at ``files`` times the size of one of :func:`_fill`'s files."""
    return EmbeddingStore(folder, model or load_model("tiny-test"), bf16=False, max_bytes=int(files * _FILE_BYTES))


def _input(i: int) -> torch.Tensor:
    return torch.full((3, 16, 16), float(i))


def _fill(store: EmbeddingStore, *items: int) -> None:
    for i in items:
        store.save(_input(i), torch.full((4, 8, 8), i + 1 / 3))  # float32 values: 4*8*8*4 bytes + the .npy header


_FILE_BYTES = 4 * 8 * 8 * 4 + 128


def _kept(store: EmbeddingStore) -> set:
    return {i for i in range(100) if store._path(_input(i)).is_file()}


def _bytes(folder) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_a_capped_store_evicts_the_least_recently_used_first_and_a_read_keeps_a_file(tmp_path):
    store = _capped(tmp_path, 3.5)
    _fill(store, 0, 1, 2)
    assert _kept(store) == {0, 1, 2} and store.evicted == 0
    assert store.load(_input(0)) is not None  # slice 0 used again: 1 is now the least recently used
    _fill(store, 3)
    assert _kept(store) == {0, 2, 3} and store.evicted == 1 and _bytes(store.folder) <= store.max_bytes
    assert f"1 least recently used evicted (0 MB) to stay under {store.max_bytes / 1e9:g} GB" in store.describe()
    # another process (or the next run) finds the order on disk: file times are the last use
    again = _capped(tmp_path, 3.5)
    assert again.load(_input(2)) is not None  # 2 used again there: 0 is the oldest now
    _fill(again, 4)
    assert _kept(again) == {2, 3, 4} and _bytes(again.folder) <= again.max_bytes
    assert torch.equal(again.load(_input(3)), torch.full((4, 8, 8), 3 + 1 / 3))  # what is kept is intact


def test_the_folder_is_scanned_rarely_not_on_every_save(tmp_path):
    store = _capped(tmp_path, 40.5)
    _fill(store, *range(4))
    assert store.scans == 1  # the first save reads the folder once
    _fill(store, *range(4, 40))
    assert store.evicted == 0 and store.scans <= 1 + 40 // 4  # again after 10% of the cap is written (4.05 files)
    _fill(store, 40)  # past the cap: down to 90% of it (36 files), the least recently used first
    assert _kept(store) == set(range(5, 41)) and store.evicted == 5


def test_two_processes_sharing_a_folder_keep_it_near_the_cap(tmp_path):
    """Each store sees the other's files at its next scan (at the latest after 10% of the cap written)."""
    first, second = _capped(tmp_path, 10.5), _capped(tmp_path, 10.5)
    for i in range(0, 40, 2):
        _fill(first, i)
        _fill(second, i + 1)
        assert _bytes(first.folder) <= 1.25 * first.max_bytes
    assert first.evicted and second.evicted and len(_kept(first)) <= 12


def test_a_file_another_process_deleted_during_eviction_is_skipped(tmp_path, monkeypatch):
    store = _capped(tmp_path, 3.5)
    _fill(store, 0, 1, 2)
    scan = EmbeddingStore._scan

    def scan_then_other_process_deletes(self):
        scan(self)
        self._path(_input(0)).unlink()  # the other process evicts the oldest between our listing and our delete

    monkeypatch.setattr(EmbeddingStore, "_scan", scan_then_other_process_deletes)
    _fill(store, 3)
    assert _kept(store) == {1, 2, 3} and store.evicted == 0  # 0 vanished: that freed the space, nothing else goes
    assert _bytes(store.folder) <= store.max_bytes and store._total == 3 * _FILE_BYTES
    assert store.load(_input(0)) is None  # an evicted file is a plain miss


def test_eviction_deletes_nothing_but_its_own_encoders_embeddings(tmp_path):
    store = _capped(tmp_path, 0.5)  # under one file: every embedding goes
    store.folder.mkdir(parents=True)
    others = [tmp_path / "notes.txt", store.folder / "README.txt", store.folder / "ab" / "keep.npy",
              store.folder / "ab" / ("cd" + "0" * 62 + ".npy"),  # an embedding's name in the wrong subfolder
              tmp_path / "other-encoder" / "ab" / ("ab" + "0" * 62 + ".npy")]  # another encoder's folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / ("ef" + "1" * 62 + ".npy")).write_bytes(b"x" * 5000)
    (store.folder / "ef").symlink_to(elsewhere, target_is_directory=True)  # a link to another folder
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 5000)
    _fill(store, 0, 1)
    assert _kept(store) == set() and store.evicted == 2
    assert all(p.is_file() for p in others) and len(list(elsewhere.iterdir())) == 1


def test_a_read_only_store_without_a_cap_still_marks_what_it_reads(tmp_path):
    """Without a cap nothing is deleted, yet a read refreshes the file's time, so a capped worker sharing the
    folder keeps what evaluate runs use."""
    store = EmbeddingStore(tmp_path, load_model("tiny-test"), bf16=False)
    _fill(store, 0, 1)
    path = store._path(_input(0))
    os.utime(path, (1_000_000, 1_000_000))
    assert store.load(_input(0)) is not None and path.stat().st_mtime > 1_000_000
    assert store.scans == 0 and "evicted" not in store.describe()


def test_a_cap_must_be_above_zero(tmp_path):
    with pytest.raises(ValueError, match="above 0 bytes"):
        _capped(tmp_path, 0)


# ---- the cache folder as a whole (synthfm.io.embedding_files): what the Slicer panel shows and clears -----------
def test_cache_usage_counts_every_encoders_embeddings_and_nothing_else(tmp_path):
    from synthfm.io.embedding_files import cache_usage, clear_cache

    first, second = _capped(tmp_path, 100), EmbeddingStore(tmp_path, load_model("tiny-test"), bf16=True)
    assert first.folder != second.folder  # two encoder folders (another precision)
    _fill(first, 0, 1, 2)
    _fill(second, 3)
    others = [tmp_path / "notes.txt", tmp_path / ("ab" + "0" * 62 + ".npy"),  # an embedding's name, not in its place
              tmp_path / "my-scans" / "ab" / ("ab" + "0" * 62 + ".npy"),  # a folder not named like an encoder's
              first.folder / "README.txt", first.folder / "ab" / "keep.npy", first.folder / "ab" / ".tmp-write.npy",
              first.folder / "ab" / ("cd" + "0" * 62 + ".npy")]  # an embedding's name in the wrong subfolder
    for path in others:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 5000)
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    (elsewhere / "ef").mkdir(parents=True)
    (elsewhere / "ef" / ("ef" + "1" * 62 + ".npy")).write_bytes(b"x" * 5000)
    (tmp_path / ("tiny-" + "e" * 20)).symlink_to(elsewhere, target_is_directory=True)  # a link to another folder
    (first.folder / "ef").symlink_to(elsewhere / "ef", target_is_directory=True)
    assert cache_usage(tmp_path) == (4, 4 * _FILE_BYTES)
    assert clear_cache(tmp_path) == (4, 4 * _FILE_BYTES, [])
    assert cache_usage(tmp_path) == (0, 0) and _kept(first) == _kept(second) == set()
    assert all(p.read_bytes() == b"x" * 5000 for p in others) and len(list((elsewhere / "ef").iterdir())) == 1
    assert first.folder.is_dir()  # folders stay: a worker writing meanwhile still finds them
    _fill(first, 5)  # the store goes on after a clear (its running total is stale: the next scan corrects it)
    assert cache_usage(tmp_path) == (1, _FILE_BYTES)


def test_cache_usage_of_an_absent_folder_or_a_file_is_zero(tmp_path):
    from synthfm.io.embedding_files import cache_usage, clear_cache

    (tmp_path / "a-file").write_text("the user's file")
    for root in (tmp_path / "absent", tmp_path / "a-file"):
        assert cache_usage(root) == (0, 0) and clear_cache(root) == (0, 0, [])
    assert (tmp_path / "a-file").read_text() == "the user's file"


def test_a_file_that_cannot_be_deleted_is_named(tmp_path, monkeypatch):
    from pathlib import Path

    from synthfm.io.embedding_files import clear_cache

    store = _capped(tmp_path, 100)
    _fill(store, 0, 1)
    stuck = store._path(_input(0))
    unlink = Path.unlink

    def refuse(self, *args, **kwargs):
        if self == stuck:
            raise PermissionError(13, "Permission denied")
        return unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", refuse)
    assert clear_cache(tmp_path) == (1, _FILE_BYTES, [f"{stuck}: Permission denied"])
    assert _kept(store) == {0}


def test_the_cache_folder_helpers_import_without_torch():
    """The Slicer panel lists and clears the folder before torch is installed."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch fails
            "from synthfm.io.embedding_files import cache_usage, clear_cache\n"
            "print(cache_usage('.'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "(0, 0)", out.stderr
