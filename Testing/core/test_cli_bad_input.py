"""Regression suite of issue 15: every bad input to the command line is refused with one clear line and
exit code 2 before any work, and no user file changes.  Each case of ``REFUSALS`` builds its inputs in a
fresh folder, runs the command with model loading, generation and training made to fail loudly (so
"before any work" is checked too), and compares every file in the folder before and after.
"""
import gzip
import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from synthfm.cli import join_negative_values, main
from synthfm.io import Volume, read_volume, write_volume
from synthfm.io.atomic import hostname
from synthfm.io.checks import InputError

SHAPE = (8, 32, 32)


def _blob(value=180.0):
    zz, yy, xx = np.mgrid[:SHAPE[0], :SHAPE[1], :SHAPE[2]]
    inside = ((xx - 16) / 7.0) ** 2 + ((yy - 16) / 6.0) ** 2 + ((zz - 4) / 3.0) ** 2 < 1
    return (100 + (value - 100) * inside + np.random.default_rng(0).normal(0, 5, SHAPE)).astype(np.float32)


def image(folder, name="img.nii.gz", array=None, **geometry):
    return write_volume(Path(folder) / name, Volume(_blob() if array is None else array, **geometry))


def labels(folder, name="lab.nii.gz", array=None):
    lab = np.zeros(SHAPE, np.uint8)
    lab[3:6, 12:20, 12:20] = 1
    return write_volume(Path(folder) / name, Volume(lab if array is None else array))


def cases_csv(folder, text):
    (Path(folder) / "cases.csv").write_text(text)
    return Path(folder) / "cases.csv"


def snapshot(folder):
    """Relative path -> SHA-256 of every file under ``folder``."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


@pytest.fixture
def no_work(monkeypatch):
    """Loading a model, generating a sample, encoding training images and training fail loudly: refusals must
    come before them."""
    def forbidden(*args, **kwargs):
        raise AssertionError("expensive work started before the inputs were checked")

    import synthfm.models
    from synthfm.generate.sample import SyntheticGenerator
    from synthfm.train.trainer import Trainer

    monkeypatch.setattr(synthfm.models, "load_model", forbidden)
    monkeypatch.setattr(Trainer, "prepare_data", forbidden)  # encoding images: the expensive part of training
    monkeypatch.setattr(Trainer, "run", forbidden)
    monkeypatch.setattr(SyntheticGenerator, "sample_2d", forbidden)
    monkeypatch.setattr(SyntheticGenerator, "sample_3d", forbidden)


# ---- case builders: each gets a fresh folder and returns the command line ------------------------------
def seg(t, *extra, img=None, out="label.nii.gz"):
    img = image(t) if img is None else img
    return ["segment", "--image", str(img), "--model", "tiny-test", "--out", str(Path(t) / out), *extra]


def _truncated(t, name):
    path = image(t, name)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    return seg(t, "--point", "16,16,4", img=path)


def _corrupt_gz(t):
    path = image(t)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)  # damaged in the middle: bad deflate data or CRC
    path.write_bytes(bytes(data))
    return seg(t, "--point", "16,16,4", img=path)


def _with(t, fill, value, name="img.nii.gz"):
    array = _blob()
    array[fill] = value
    return image(t, name, array)


def _prompt_file(t, data, *extra):
    (Path(t) / "p.json").write_text(json.dumps(data))
    return seg(t, "--prompts", str(Path(t) / "p.json"), *extra)


def _gen3d(t, existing):
    (Path(t) / "d").mkdir()
    (Path(t) / "d" / existing).write_text("the user's own file")
    return ["generate", "--dim", "3", "--count", "2", "--size", "48", "--depth", "12", "--out", str(Path(t) / "d")]


def _eval(t, csv_text, *extra, out="eval"):
    image(t)
    labels(t)
    return ["evaluate", "--pairs", str(cases_csv(t, csv_text)), "--model", "floor-ellipse", "--prompt", "box",
            "--out", str(Path(t) / out), *extra]


def _eval_float_labels(t):
    lab = np.zeros(SHAPE, np.float32)
    lab[3:6, 12:20, 12:20] = 0.9
    lab[3:6, 10:12, 12:20] = 0.4
    labels(t, "prob.nii.gz", lab)
    return _eval(t, "image,label\nimg.nii.gz,prob.nii.gz\n")


def _existing(t, *names):
    for name in names:
        path = Path(t) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("the user's own file")


def _train(t, *extra):
    return ["train", "--model", "tiny-test", "--samples", "4", "--val-samples", "2", "--steps", "3",
            "--batch-size", "2", "--generator", '{"size": 64}', "--device", "cpu", "--out", str(Path(t) / "run"),
            *extra]


def _lock(t, pid, host=None):
    _existing(t, "run/keep.txt")
    (Path(t) / "run" / ".synthfm.lock").write_text(json.dumps(
        {"pid": pid, "host": host or hostname(), "started": "2026-01-02 03:04:05", "command": "synthfm train"}))
    return _train(t)


def _decoder_file(t, name, encoder="tiny", image_size=128, model="tiny-test", state=None):
    """A SynthFM decoder checkpoint file with the given metadata (weights: zeros of the right shapes)."""
    from synthfm.models.checkpoint import FORMAT, FORMAT_VERSION, decoder_shapes

    if state is None:
        state = {k: torch.zeros(shape, dtype=torch.float16) for k, shape in decoder_shapes(image_size).items()}
    path = Path(t) / name
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": state,
                "meta": {"model": model, "encoder": encoder, "image_size": image_size}}, path)
    return path


def _init_with(t, make):
    """``train --init FILE`` where ``make(path)`` writes FILE."""
    make(Path(t) / "start.pt")
    return _train(t, "--init", str(Path(t) / "start.pt"))


def _misfit_decoder(t):
    from synthfm.models.checkpoint import decoder_shapes

    state = {k: torch.zeros(shape) for k, shape in decoder_shapes(128).items()}
    state["mask_decoder.iou_token.weight"] = torch.zeros(2, 256)
    return _train(t, "--init", str(_decoder_file(t, "odd.pt", state=state)))


def _cache(t, damage, which="train", count=4):
    """A complete, plausible embedding cache of ``_train``'s settings in run/cache/WHICH, then ``damage(folder)``
    (written without the encoder or the generator, which the refusal suite forbids)."""
    from synthfm.generate import GeneratorConfig
    from synthfm.train.embed_cache import EmbeddingCache, synthetic_manifest
    from synthfm.train.trainer import VAL_OFFSET

    wanted = synthetic_manifest("tiny", 128, GeneratorConfig.from_preset("mixed", size=64), 0,
                                0 if which == "train" else VAL_OFFSET, count)
    folder = Path(t) / "run" / "cache" / which
    cache = EmbeddingCache.open_matching(folder, wanted)
    cache.embeddings[:] = np.random.default_rng(0).normal(size=cache.embeddings.shape).astype(np.float16)
    cache.labels[:] = 1
    cache.labels[:, 20:40, 20:40] = 2
    cache.targets[:] = 2
    cache.filled[:] = 1
    for array in (cache.embeddings, cache.labels, cache.targets, cache.filled):
        array.flush()
    del cache
    damage(folder)
    return _train(t)


def _cut(name, keep=0.5):
    def damage(folder):
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:int(len(data) * keep)])
    return damage


def _manifest(change):
    def damage(folder):
        manifest = json.loads((folder / "manifest.json").read_text())
        change(manifest)
        (folder / "manifest.json").write_text(json.dumps(manifest))
    return damage


def _values(name, dtype, item, value):
    def damage(folder):
        data = np.fromfile(folder / name, dtype)
        data.reshape(4, -1)[item] = value
        data.tofile(folder / name)
    return damage


REFUSALS = {
    # 1-2: data loss
    "generate: a user's cases.csv in --out": (lambda t: _gen3d(t, "cases.csv"), ["already holds cases.csv", "--overwrite"]),
    "generate: a user's case image in --out": (lambda t: _gen3d(t, "case-0000_image.nii.gz"),
                                              ["case-0000_image.nii.gz", "--overwrite"]),
    "generate: a user's shard in --out (2D)": (
        lambda t: (_existing(t, "d/shard-00000.npz"), ["generate", "--count", "2", "--size", "64", "--out",
                                                        str(Path(t) / "d")])[1], ["shard-00000.npz"]),
    "generate --realism: a report file in --out": (
        lambda t: (image(t), labels(t), _existing(t, "rep/realism_ct.png"),
                   ["generate", "--realism", str(cases_csv(t, "image,label,modality\nimg.nii.gz,lab.nii.gz,ct\n")),
                    "--out", str(Path(t) / "rep")])[-1], ["realism_ct.png", "--overwrite"]),
    "generate: --gallery exists": (lambda t: (_existing(t, "g.png"), ["generate", "--count", "1", "--gallery",
                                                                      str(Path(t) / "g.png")])[1],
                                   ["--gallery", "already exists", "--overwrite"]),
    "segment: --overlay exists": (lambda t: (_existing(t, "o.png"), seg(t, "--point", "16,16,4", "--overlay",
                                                                        str(Path(t) / "o.png")))[1],
                                  ["--overlay", "already exists"]),
    # 3-8: silent wrong results
    "segment: .nii.gz cut in half": (lambda t: _truncated(t, "img.nii.gz"), ["damaged or incomplete"]),
    "segment: .nii cut in half": (lambda t: _truncated(t, "img.nii"), ["damaged or incomplete", "header describes"]),
    "segment: .nii.gz damaged inside": (_corrupt_gz, ["damaged or incomplete"]),
    "segment: not an image": (lambda t: (_existing(t, "x.nrrd"), seg(t, "--point", "1,1,1", img=Path(t) / "x.nrrd"))[1],
                              ["could not read", "not an image"]),
    "segment: NaN voxels, --no-propagate": (
        lambda t: seg(t, "--point", "16,16,4", "--no-propagate", img=_with(t, (0, 0, 0), np.nan)),
        ["1 NaN or infinite voxels", "--nonfinite fill"]),
    "segment: NaN voxels, propagation": (lambda t: seg(t, "--point", "16,16,4", img=_with(t, np.s_[2:4], np.nan)),
                                         ["NaN or infinite", "fill them"]),
    "segment: infinite voxels": (lambda t: seg(t, "--point", "16,16,4", img=_with(t, (1, 2, 3), np.inf)),
                                 ["NaN or infinite"]),
    "segment: --label 0": (lambda t: seg(t, "--point", "16,16,4", "--label", "0"),
                           ["--label 0", "between 1 and 65535", "background"]),
    "segment: --label=-1": (lambda t: seg(t, "--point", "16,16,4", "--label=-1"), ["--label -1", "between 1"]),
    "segment: --label 70000": (lambda t: seg(t, "--point", "16,16,4", "--label", "70000"), ["--label 70000"]),
    "evaluate: float label map": (_eval_float_labels, ["non-integer values (0.4, 0.9)", "threshold"]),
    "segment: prompts file in ras, --coords ras meant for it but file silent": (
        lambda t: _prompt_file(t, {"points": [[16, 16, 4]]}, "--coords", "ras", "--point", "1,2,3"),
        ['does not say its coordinate system', 'add "coords": "ras"']),
    "segment: all-zero volume": (lambda t: seg(t, "--point", "16,16,4", img=image(t, array=np.zeros(SHAPE, np.float32))),
                                 ["same value (0) in every voxel", "nothing to segment"]),
    # 11: tracebacks before
    "segment: --out in a folder that cannot be written": (
        lambda t: seg(t, "--point", "16,16,4", out="/sys/synthfm-test/label.nii.gz"), ["cannot write in /sys"]),
    "segment: --out is a folder": (lambda t: (_existing(t, "outdir/x"), seg(t, "--point", "16,16,4", out="outdir"))[1],
                                   ["is a folder", "give a file name"]),
    "segment: --out with an unknown extension": (lambda t: seg(t, "--point", "16,16,4", out="label.txt"),
                                                 ["unknown extension '.txt'", ".nii.gz"]),
    "segment: --device tpu": (lambda t: seg(t, "--point", "16,16,4", "--device", "tpu"), ["--device tpu", "unknown device"]),
    'segment: "axis": 5 in a prompts file': (lambda t: _prompt_file(t, {"points": [[16, 16, 4]], "axis": 5}),
                                             ['"axis": 5', "0 (axial)"]),
    'segment: "coords": "xyz" in a prompts file': (lambda t: _prompt_file(t, {"coords": "xyz", "points": [[1, 1, 1]]}),
                                                   ['"coords": "xyz"']),
    "segment: prompts file point with two numbers": (lambda t: _prompt_file(t, {"points": [[16, 16]]}),
                                                     ['"points" must be a list of [x, y, z]']),
    "evaluate: CSV row without a label cell": (lambda t: _eval(t, "image,label\nimg.nii.gz\n"),
                                               ["line 2 has no label cell"]),
    "train: corrupt resume.pt": (lambda t: (_existing(t, "run/resume.pt"), _train(t))[1],
                                 ["cannot read the resume state", "delete it"]),
    "generate: absurd --size": (lambda t: ["generate", "--size", "1000000", "--out", str(Path(t) / "big")],
                                ["GiB of memory", "smaller --size"]),
    "generate: --count 0": (lambda t: ["generate", "--count", "0", "--out", str(Path(t) / "none")], ["--count 0"]),
    # 12: output problems found before the work
    "segment: --out exists": (lambda t: (_existing(t, "label.nii.gz"), seg(t, "--point", "16,16,4"))[1],
                              ["already exists", "--overwrite"]),
    "segment: --out is the --image (even with --overwrite)": (
        lambda t: seg(t, "--point", "16,16,4", "--overwrite", out="img.nii.gz"), ["name the same file"]),
    "segment: point outside the volume": (lambda t: seg(t, "--point", "16,16,20"), ["outside the 32x32x8 volume"]),
    "segment: box corner outside the slice": (lambda t: seg(t, "--box", "2,2,4,40,20,4"), ["box corner", "outside"]),
    "segment: box corners on different slices": (lambda t: seg(t, "--box", "10,10,4,20,20,5"),
                                                 ["corners on slices 4 and 5", "draw each box on one slice"]),
    "segment: a point of two numbers": (lambda t: seg(t, "--point", "16,16"), ["3 comma-separated numbers"]),
    "segment: a box of five numbers": (lambda t: seg(t, "--box", "1,2,3,4,5"), ["--box", "6 comma-separated"]),
    "segment: unknown window": (lambda t: seg(t, "--point", "16,16,4", "--window", "lung"), ["--window lung"]),
    "segment: unknown model": (lambda t: seg(t, "--point", "16,16,4", "--model", "sam-vit-x"), ["unknown model"]),
    "segment: missing decoder checkpoint": (lambda t: seg(t, "--point", "16,16,4", "--model", str(Path(t) / "m.pt")),
                                            ["no such decoder checkpoint"]),
    "segment: no prompts": (lambda t: seg(t), ["no prompts given"]),
    "segment: --candidate 3": (lambda t: seg(t, "--point", "16,16,4", "--candidate", "3"), ["--candidate 3", "K 0, 1 or 2"]),
    "segment: --candidate on a slice without prompts": (lambda t: seg(t, "--point", "16,16,4", "--candidate", "5=1"),
                                                        ["--candidate on slice 5", "no prompts"]),
    "segment: two --candidate for one slice": (lambda t: seg(t, "--point", "16,16,4", "--candidate", "4=1",
                                                             "--candidate", "4=2"), ["both 1 and 2", "keep one"]),
    "evaluate: report already in --out": (lambda t: (_existing(t, "eval/summary.json"),
                                                     _eval(t, "image,label\nimg.nii.gz,lab.nii.gz\n"))[1],
                                          ["already holds summary.json"]),
    "evaluate: a user's slices.csv in --out": (lambda t: (_existing(t, "eval/slices.csv"),
                                                          _eval(t, "image,label\nimg.nii.gz,lab.nii.gz\n"))[1],
                                               ["slices.csv", "--overwrite"]),
    "evaluate: label value not in the label map": (lambda t: _eval(t, "image,label,label_value\nimg.nii.gz,lab.nii.gz,7\n"),
                                                   ["label 7 is not in"]),
    "evaluate: label value 0": (lambda t: _eval(t, "image,label,label_value\nimg.nii.gz,lab.nii.gz,0\n"),
                                ["label_value 0 must be positive"]),
    "evaluate: image missing": (lambda t: _eval(t, "image,label\nnope.nii.gz,lab.nii.gz\n"), ["nope.nii.gz does not exist"]),
    "evaluate: NaN in an image": (lambda t: _eval_nan(t), ["NaN or infinite", "fill them in the file"]),
    "evaluate: unknown protocol": (lambda t: _eval(t, "image,label\nimg.nii.gz,lab.nii.gz\n", "--prompt", "lasso"),
                                   ["--prompt lasso"]),
    "evaluate-data: --out holds files": (lambda t: (_existing(t, "real/notes.txt"),
                                                    ["evaluate-data", "--out", str(Path(t) / "real")])[1],
                                         ["already holds files"]),
    "demo: --out holds an earlier demo": (lambda t: (_existing(t, "demo/label.nii.gz"),
                                                     ["demo", "--out", str(Path(t) / "demo"), "--model", "tiny-test"])[1],
                                          ["label.nii.gz", "--overwrite"]),
    "demo: absurd --size": (lambda t: ["demo", "--size", "100000", "--out", str(Path(t) / "demo")], ["GiB of memory"]),
    "train-compare: --json exists": (lambda t: (_existing(t, "r.json", "val/x"),
                                                ["train-compare", "--models", "tiny-test", "--val-cache",
                                                 str(Path(t) / "val"), "--json", str(Path(t) / "r.json")])[1],
                                     ["--json", "already exists"]),
    # 13 and the training guards
    "train: --no-resume over an earlier run": (lambda t: (_existing(t, "run/resume.pt", "run/tiny-test.pt"),
                                                          _train(t, "--no-resume"))[1], ["--no-resume would replace"]),
    "train: a checkpoint without resume state in --out": (lambda t: (_existing(t, "run/tiny-test.pt"), _train(t))[1],
                                                          ["tiny-test.pt without a resume state"]),
    "train: a second run into the same --out": (lambda t: _lock(t, os.getppid()),
                                                ["is in use by 'synthfm train' started 2026-01-02 03:04:05",
                                                 f"pid {os.getppid()}"]),
    "train: a run of another host holds --out": (lambda t: _lock(t, 1, "elsewhere"), ["host elsewhere", ".synthfm.lock"]),
    "train: --device tpu": (lambda t: _train(t, "--device", "tpu"), ["unknown device"]),
    "train: --out is a file": (lambda t: (_existing(t, "run"), _train(t))[1], ["is a file, not a folder"]),
    "train: bad --init": (lambda t: _train(t, "--init", "nothing-like-this"), ["--init nothing-like-this", "unknown model"]),
    # issue 11: --init of another architecture, damaged embedding caches (all before a model is built)
    "train: --init a synthfm-vit-b decoder": (
        lambda t: _train(t, "--init", str(_decoder_file(t, "vitb.pt", "vit_b", 1024, "synthfm-vit-b"))),
        ["vitb.pt is a 'synthfm-vit-b' decoder for encoder vit_b (1024 px)", "model 'tiny-test' uses encoder tiny "
         "(128 px)", "give a decoder trained with --model tiny-test, or train with --model synthfm-vit-b"]),
    "train: --init a decoder whose tensors do not fit": (
        _misfit_decoder, ["odd.pt does not fit the decoder of model 'tiny-test'",
                          "mask_decoder.iou_token.weight has shape (2, 256), expected (1, 256)"]),
    "train: --init a file that is not a checkpoint": (
        lambda t: _init_with(t, lambda p: p.write_text("not a checkpoint")),
        ["start.pt is not a readable SynthFM decoder checkpoint", "not a PyTorch file at all (it starts with b'not "]),
    "train: --init a full SAM ViT-B state dict": (
        lambda t: _init_with(t, lambda p: torch.save({"image_encoder.patch_embed.proj.weight": torch.zeros(768, 3, 2, 2),
                                                      "mask_decoder.iou_token.weight": torch.zeros(1, 256)}, p)),
        ["is not a SynthFM decoder checkpoint", "holds a full SAM ViT-B model (2 tensors: image_encoder, mask_decoder)",
         "give its name (e.g. medsam-lite, sam-vit-b)"]),
    "train: --init a resume state": (
        lambda t: _init_with(t, lambda p: torch.save({"step": 3, "decoder": {}, "optimizer": {}}, p)),
        ["a training resume state (step 3)", "give the decoder checkpoint"]),
    "train: --init a pickled module": (lambda t: _init_with(t, lambda p: torch.save(torch.nn.Linear(2, 2), p)),
                                       ["cannot be read as a PyTorch file (it holds pickled Python objects"]),
    "train: --init a registry model of another encoder": (
        lambda t: _train(t, "--init", "sam-vit-b"), ["'sam-vit-b' is a decoder for encoder vit_b (1024 px)",
                                                     "but model 'tiny-test' uses", "--init tiny-test",
                                                     "or train with --model synthfm-vit-b"]),
    "train: embedding cache cut off": (lambda t: _cache(t, _cut("embeddings.f16")),
                                       ["embedding cache", "train is damaged: embeddings.f16 holds 4194304 bytes, but the "
                                        "manifest describes 8388608 (4 images", "delete the folder", "nothing trained"]),
    "train: embedding cache manifest garbage": (
        lambda t: _cache(t, lambda f: (f / "manifest.json").write_text("{garbage")),
        ["is damaged: its manifest.json cannot be read (JSONDecodeError", "delete the folder"]),
    "train: embedding cache manifest of the wrong kind": (
        lambda t: _cache(t, lambda f: (f / "manifest.json").write_text("[1, 2]")),
        ["not a SynthFM embedding-cache manifest"]),
    "train: encoded items without a manifest": (lambda t: _cache(t, lambda f: (f / "manifest.json").unlink()),
                                                ["holds encoded images but no manifest.json", "delete the folder"]),
    "train: embedding cache of another encoder": (
        lambda t: _cache(t, _manifest(lambda m: m.update(encoder="vit_b", image_size=1024))),
        ['was built with different settings (encoder "vit_b" (now "tiny"); image_size 1024 (now 128))',
         "another --cache folder, or delete"]),
    "train: embedding cache of other generator settings": (
        lambda t: _cache(t, _manifest(lambda m: m["generator"].update(touch_prob=0.123))),
        ["different settings (generator.touch_prob 0.123 (now"]),
    "train: embedding cache of another count": (lambda t: _cache(t, _manifest(lambda m: m.update(count=6))),
                                                ["count 6 (now 4)"]),
    "train: NaN embeddings marked as encoded": (lambda t: _cache(t, _values("embeddings.f16", np.float16, 3, np.nan)),
                                                ["image 3 is marked as encoded, but its embedding holds NaN"]),
    "train: zero embeddings marked as encoded": (lambda t: _cache(t, _values("embeddings.f16", np.float16, 0, 0)),
                                                 ["image 0 is marked as encoded, but its embedding is all zeros"]),
    # the interactive worker's embedding cache (before the port is taken or the model loaded)
    "serve: --embedding-cache is a file": (
        lambda t: (_existing(t, "emb"), ["serve", "--port", "0", "--embedding-cache", str(Path(t) / "emb")])[1],
        ["--embedding-cache", "is a file, not a folder"]),
    "serve: --embedding-cache cannot be written": (
        lambda t: ["serve", "--port", "0", "--embedding-cache", "/sys/synthfm-test/emb"],
        ["--embedding-cache /sys/synthfm-test/emb", "cannot write in /sys"]),
    "serve: --embedding-cache-gb 0": (
        lambda t: ["serve", "--port", "0", "--embedding-cache", str(Path(t) / "emb"), "--embedding-cache-gb", "0"],
        ["--embedding-cache-gb 0: must be a size above 0 GB"]),
    "serve: --embedding-cache-gb -1": (
        lambda t: ["serve", "--port", "0", "--embedding-cache", str(Path(t) / "emb"), "--embedding-cache-gb", "-1"],
        ["--embedding-cache-gb -1: must be a size above 0 GB"]),
    "train-compare: a damaged --val-cache": (
        lambda t: (_cache(t, _cut("labels.i16"), "val"), ["train-compare", "--models", "tiny-test", "--val-cache",
                                                          str(Path(t) / "run" / "cache" / "val")])[1],
        ["val is damaged: labels.i16 holds 16384 bytes", "delete the folder"]),
    "train: garbage in the encoded flags": (lambda t: _cache(t, _values("filled.u8", np.uint8, 1, 7)),
                                            ["filled.u8 holds values other than 0 and 1"]),
}


def _eval_nan(t):
    _with(t, (0, 0, 0), np.nan)
    labels(t)
    return ["evaluate", "--pairs", str(cases_csv(t, "image,label\nimg.nii.gz,lab.nii.gz\n")), "--model",
            "floor-ellipse", "--prompt", "box", "--out", str(Path(t) / "eval")]


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refused_with_one_line_before_any_work_and_no_file_changed(case, tmp_path, capsys, no_work, monkeypatch):
    monkeypatch.chdir(tmp_path)
    build, fragments = REFUSALS[case]
    argv = build(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2, case
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"synthfm {argv[0]}: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert "Traceback" not in err
    assert snapshot(tmp_path) == before, "a file in the user's folder changed"
    for left in ("big", "none"):
        assert not (tmp_path / left).exists(), "an empty output folder was left behind"


def test_the_suite_covers_every_numbered_problem():
    assert len(REFUSALS) >= 43


# ---- behaviours that are not refusals ---------------------------------------------------------------
def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(InputError, match="--label 0"):
        main(["--debug", *seg(tmp_path, "--point", "16,16,4", "--label", "0")])
    with pytest.raises(InputError, match="--label 0"):
        main([*seg(tmp_path, "--point", "16,16,4", "--label", "0"), "--debug"])


def test_read_only_file_system_is_refused_before_the_work(tmp_path, capsys, no_work, monkeypatch):
    import errno
    import tempfile

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    argv = seg(tmp_path, "--point", "16,16,4")
    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot write in" in err and "Read-only file system" in err


def test_unexpected_errors_are_one_line_with_exit_code_1(tmp_path, capsys, monkeypatch):
    import synthfm.segment.cli as segment_cli

    def boom(*args):
        raise KeyError("bug")

    monkeypatch.setattr(segment_cli, "check_arguments", boom)
    assert main(seg(tmp_path, "--point", "16,16,4")) == 1
    err = capsys.readouterr().err
    assert "unexpected error: KeyError" in err and "--debug" in err and "Traceback" not in err


def test_negative_values_are_values_not_options():
    options = {"--point", "--box"}
    assert join_negative_values(["--point", "-12.5,30.1,8.0", "--box", "-1,-2,3,4,5,6", "--no-propagate"], options) == \
        ["--point=-12.5,30.1,8.0", "--box=-1,-2,3,4,5,6", "--no-propagate"]
    assert join_negative_values(["--point", "--box"], options) == ["--point", "--box"]


def _slice_written(text):
    return int(text.split("along axis")[0].rsplit("(", 1)[1].split("..")[0])


def test_each_prompt_source_keeps_its_own_coordinates(tmp_path, capsys):
    """Problem 7 and 9: a prompts file in RAS and command-line voxel points; documented negative RAS values."""
    direction = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    vol = Volume(_blob(), (0.8, 0.9, 2.5), (30.0, 30.0, -4.0), direction)
    path = write_volume(tmp_path / "img.nrrd", vol)
    corners = [vol.index_to_ras([10, 10, 6]), vol.index_to_ras([22, 22, 6])]
    (tmp_path / "p.json").write_text(json.dumps({"coords": "ras", "box": [c.tolist() for c in corners]}))
    assert main(["segment", "--image", str(path), "--model", "tiny-test", "--no-propagate", "--prompts",
                 str(tmp_path / "p.json"), "--point", "16,16,6", "--out", str(tmp_path / "a.nii.gz")]) == 0
    assert _slice_written(capsys.readouterr().out) == 6
    ras = vol.index_to_ras([16, 16, 7])
    assert ras[0] < 0  # the documented case: a leading minus
    assert main(["segment", "--image", str(path), "--model", "tiny-test", "--no-propagate", "--coords", "ras",
                 "--point", ",".join(f"{v:.4f}" for v in ras), "--out", str(tmp_path / "b.nii.gz")]) == 0
    assert _slice_written(capsys.readouterr().out) == 7


def test_label_values_above_255_are_written_exactly(tmp_path):
    argv = seg(tmp_path, "--box", "9,10,4,23,22,4", "--no-propagate", "--label", "300")
    assert main(argv) == 0
    label = read_volume(tmp_path / "label.nii.gz").array
    assert label.dtype == np.uint16 and set(np.unique(label)) <= {0, 300}


def test_nonfinite_voxels_filled_on_request_with_a_warning(tmp_path, capsys):
    img = _with(tmp_path, (0, 0, 0), np.nan)
    assert main(seg(tmp_path, "--point", "16,16,4", "--no-propagate", "--nonfinite", "fill", img=img)) == 0
    assert "warning:" in capsys.readouterr().err
    assert (tmp_path / "label.nii.gz").exists()


def test_no_contrast_where_the_prompts_are_is_a_warning(tmp_path, capsys):
    array = _blob()
    array[:, :, :] = 50.0
    array[:, :4, :4] = 400.0  # contrast only far from the prompt
    img = image(tmp_path, array=array)
    assert main(seg(tmp_path, "--point", "20,20,4", "--no-propagate", img=img)) == 0
    assert "no contrast" in capsys.readouterr().err


def test_truncated_and_intact_images_on_read(tmp_path):
    good = image(tmp_path, "a.nii.gz")
    assert read_volume(good).shape == SHAPE
    raw = gzip.decompress(good.read_bytes())
    (tmp_path / "b.nii").write_bytes(raw)
    assert read_volume(tmp_path / "b.nii").shape == SHAPE
    (tmp_path / "c.nii.gz").write_bytes(gzip.compress(raw[:-100]))  # a complete gzip of a short NIfTI
    with pytest.raises(InputError, match="header describes"):
        read_volume(tmp_path / "c.nii.gz")


# ---- interrupts, stale temporary files, locks -------------------------------------------------------
def _train_args(tmp_path, steps=4):
    return ["train", "--model", "tiny-test", "--samples", "4", "--val-samples", "2", "--steps", str(steps),
            "--batch-size", "2", "--val-every", "100", "--ckpt-every", "100", "--generator", '{"size": 64}',
            "--device", "cpu", "--threads", "1", "--no-bf16", "--out", str(tmp_path / "run")]


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_training_saves_the_current_step_and_resume_finishes(signum, tmp_path, capsys, monkeypatch):
    from synthfm.train.trainer import Trainer

    original = Trainer.train_step

    def step_then_signal(self):
        out = original(self)
        if self.step == 2:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(Trainer, "train_step", step_then_signal)
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN when started in the background
    assert main(_train_args(tmp_path)) == 130
    err = capsys.readouterr().err
    assert "stopped at step 2" in err and "run the same command again to resume" in err
    state = torch.load(tmp_path / "run" / "resume.pt", weights_only=False)
    assert state["step"] == 2  # not the last periodic checkpoint (--ckpt-every 100)
    assert not (tmp_path / "run" / ".synthfm.lock").exists()
    assert signal.getsignal(signal.SIGINT) is before  # the run's own handler is gone
    monkeypatch.setattr(Trainer, "train_step", original)
    assert main(_train_args(tmp_path)) == 0
    assert torch.load(tmp_path / "run" / "resume.pt", weights_only=False)["step"] == 4


def test_stale_temporary_files_and_locks_of_dead_runs_are_cleaned(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    dead, alive = _dead_pid(), os.getpid()
    stale = run / f".resume.pt.synthfm-{hostname()}-{dead}-abcd1234.pt"
    live = run / f".resume.pt.synthfm-{hostname()}-{alive}-efgh5678.pt"
    other = run / ".resume.pt.synthfm-otherhost-12-ijkl9012.pt"
    for path in (stale, live, other):
        path.write_bytes(b"x" * 100)
    (run / ".synthfm.lock").write_text(json.dumps({"pid": dead, "host": hostname(), "started": "then"}))
    assert main(_train_args(tmp_path, steps=2)) == 0
    out = capsys.readouterr().out
    assert "took over the lock" in out and "removed 1 temporary file" in out
    assert not stale.exists() and live.exists() and other.exists()
    assert not (run / ".synthfm.lock").exists()


def test_temporaries_of_a_killed_write_of_the_output_are_removed(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".label.nii.gz.synthfm-{hostname()}-{dead}-abcd1234.nii.gz"
    live = tmp_path / f".label.nii.gz.synthfm-{hostname()}-{os.getpid()}-efgh5678.nii.gz"
    stale.write_bytes(b"half a label")
    live.write_bytes(b"being written")
    assert main(seg(tmp_path, "--point", "16,16,4", "--no-propagate")) == 0
    assert not stale.exists() and live.exists() and (tmp_path / "label.nii.gz").exists()
