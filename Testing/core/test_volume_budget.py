"""benchmarks/volume_budget.py: propagated, perfect-stop and every-slice-prompted 3D Dice per structure."""
import csv
import importlib.util
from pathlib import Path

import numpy as np

from synthfm.evaluate.cases import Case
from synthfm.evaluate.runner import evaluate
from synthfm.io import Volume, write_volume

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
spec = importlib.util.spec_from_file_location("volume_budget", BENCH / "volume_budget.py")
volume_budget = importlib.util.module_from_spec(spec)
spec.loader.exec_module(volume_budget)


def _two_blobs_case(root: Path) -> Case:
    """An ellipsoid (label 2) with a brighter neighbour touching it from slice 9 on (label 3)."""
    zz, yy, xx = np.mgrid[:14, :64, :64]
    first = ((xx - 32) / 14.0) ** 2 + ((yy - 30) / 11.0) ** 2 + ((zz - 5) / 4.5) ** 2 < 1
    second = (((xx - 34) / 12.0) ** 2 + ((yy - 34) / 10.0) ** 2 + ((zz - 11) / 3.0) ** 2 < 1) & ~first
    image = 100 + 80 * first + 120 * second + np.random.default_rng(0).normal(0, 6, first.shape)
    labels = (2 * first + 3 * second).astype(np.uint8)
    write_volume(root / "img.nii.gz", Volume(image.astype(np.float32), (0.8, 0.8, 2.0)))
    write_volume(root / "lab.nii.gz", Volume(labels, (0.8, 0.8, 2.0)))
    (root / "cases.csv").write_text("image,label,label_value,name\nimg.nii.gz,lab.nii.gz,2,blob\n")
    return Case("blob", root / "img.nii.gz", root / "lab.nii.gz", 2)


def test_rows_repeat_evaluate_and_the_table_pairs_them(tmp_path, capsys):
    case = _two_blobs_case(tmp_path)
    out = tmp_path / "budget.csv"
    assert volume_budget.main(["--pairs", str(tmp_path / "cases.csv"), "--prompt", "box", "--volume-slices", "1",
                               "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    by = {r["setting"]: float(r["dice"]) for r in rows}
    assert [r["setting"] for r in rows] == ["propagated", "perfect stop", "every slice prompted"]
    # the propagated row is synthfm evaluate --volume's figure for the same structure and prompt
    assert by["propagated"] == evaluate([case], ["synthfm-lite"], ["box"], volume=True).rows[0]["dice"]
    # a tight box on every slice of a clear ellipsoid is nearly the truth; no row can beat 1
    assert 0.85 < by["every slice prompted"] <= 1 and all(0 <= v <= 1 for v in by.values())
    printed = capsys.readouterr().out
    lines = printed.splitlines()[1:]
    assert len(lines) == 3 and [line.split()[:2] for line in lines] == [["box", "1"]] * 3
    for setting, line in zip(("propagated", "perfect stop", "every slice prompted"), lines):
        assert setting in line and f"{by[setting]:.3f}" in line
    assert "/1" not in lines[0] and all(line.rstrip().endswith(("0/1", "1/1")) for line in lines[1:])


def test_a_perfect_stop_keeps_nothing_outside_the_structure(tmp_path):
    _two_blobs_case(tmp_path)
    model = volume_budget.load_model("synthfm-lite")
    from synthfm.segment import SlicePredictor, VolumeSegmenter
    from synthfm.io import read_volume

    image = read_volume(tmp_path / "img.nii.gz").array.astype(np.float32)
    truth = read_volume(tmp_path / "lab.nii.gz").array == 2
    seg = VolumeSegmenter(SlicePredictor(model), image, 0)
    rows = volume_budget.structure_rows(seg, model, truth, "box", [1], (0.8, 0.8), 0, 1)
    stop = next(r["dice"] for r in rows if r["setting"] == "perfect stop")
    # with every stop off the chain runs into the brighter neighbour's slices, which the perfect stop removes again
    no_stop = seg.propagate_slices({int(np.argmax(truth.sum(axis=(1, 2)))): volume_budget.make_prompts(
        "box", truth[int(np.argmax(truth.sum(axis=(1, 2))))], np.random.default_rng([0, 1]))},
        options=volume_budget.PropagationOptions.for_model(model, **volume_budget.NO_STOP)).mask
    on_truth = truth.any(axis=(1, 2))
    assert no_stop[~on_truth].any()  # the chain went past the structure's slices ...
    kept = no_stop & on_truth[:, None, None]
    assert stop == volume_budget.dice(kept, truth)  # ... and the row scores it without them
