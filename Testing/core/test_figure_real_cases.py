"""scripts/figure_real_cases.py: the first structure of each image in a cases CSV, each model x prompt's mask on its
largest slice, written as one PNG (the figure in the README)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from synthfm.io import Volume, write_volume

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "figure_real_cases.py"


def load_script():
    spec = importlib.util.spec_from_file_location("figure_real_cases", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_one_column_per_image_its_first_structure(tmp_path, capsys):
    zz, yy, xx = np.mgrid[:6, :64, :64]
    labels = np.zeros((6, 64, 64), np.uint8)
    labels[((xx - 30) / 12.0) ** 2 + ((yy - 30) / 9.0) ** 2 + ((zz - 3) / 2.5) ** 2 < 1] = 2
    labels[1:5, 50:58, 8:16] = 7
    image = (100 + 60 * (labels > 0) + np.random.default_rng(0).normal(0, 5, labels.shape)).astype(np.float32)
    for name in ("a", "b"):
        write_volume(tmp_path / f"{name}.nii.gz", Volume(image, (0.8, 0.8, 2.0)))
        write_volume(tmp_path / f"{name}_lab.nii.gz", Volume(labels, (0.8, 0.8, 2.0)))
    (tmp_path / "cases.csv").write_text("image,label,label_value,name\na.nii.gz,a_lab.nii.gz,2,a blob\n"
                                        "a.nii.gz,a_lab.nii.gz,7,a square\nb.nii.gz,b_lab.nii.gz,7,b square\n")
    out = tmp_path / "fig.png"
    assert load_script().main(["--pairs", str(tmp_path / "cases.csv"), "--out", str(out), "--size", "48"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "(slice" in line]
    assert [line.split(" (slice")[0] for line in lines] == ["a blob", "b square"]  # the CSV's first per image
    dice = [float(part.rsplit(" ", 1)[1]) for part in lines[0].split(": ", 1)[1].split(", ")]
    assert len(dice) == 3 and dice[1] > 0.6  # the box on the blob's largest slice finds it
    from PIL import Image

    width, height = Image.open(out).size
    assert height > width > 100  # two columns, three rows of panels with their labels


def test_an_existing_figure_is_kept_without_overwrite(tmp_path, capsys):
    out = tmp_path / "fig.png"
    out.write_bytes(b"mine")
    with pytest.raises(SystemExit):
        load_script().main(["--pairs", str(tmp_path / "cases.csv"), "--out", str(out)])
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"mine"
