"""Write summary.json, a per-slice CSV and an HTML report with best/worst overlays."""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Dict

import numpy as np

from synthfm.evaluate.runner import Results, mean_click_curve, summarize
from synthfm.segment.quality import SIGNALS
from synthfm.io.atomic import atomic_path, atomic_write_text
from synthfm.io.png import GREEN, YELLOW, overlay, to_image
from synthfm.io.tables import csv_text


def _thumb(image, truth, pred, aspect: float = 1.0) -> str:
    """A PNG (base64) of a [0, 1] slice with the truth (green) and the prediction (yellow) outlined, in square mm."""
    buffer = io.BytesIO()
    to_image(overlay(np.clip(image, 0, 1), [(truth, GREEN), (pred, YELLOW)]), aspect=aspect).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def reliability_plot(rows, path: Path, bins: int = 10, group: str = "model", score: str = "pred_iou") -> bool:
    """Quality score vs true IoU, one panel per ``group`` value (points, and the mean true IoU per bin of the
    score): a calibrated score lies on the diagonal. ``score`` ``pred_iou`` is the model's score, calibrated when
    the model has a calibration, else the raw predicted IoU (the axis says which). False when no row has a score."""
    by_group: dict = {}
    calibrated: dict = {}
    for r in rows:
        if r.get(score) is not None and r[score] == r[score]:
            by_group.setdefault(r[group], []).append((r[score], r["iou"]))
            calibrated[r[group]] = bool(r.get("score_calibrated"))
    if not by_group:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(by_group), figsize=(4 * len(by_group), 4), squeeze=False)
    edges = np.linspace(0, 1, bins + 1)
    for ax, (name, pairs) in zip(axes[0], by_group.items()):
        pred, true = np.clip(np.array(pairs, float).T, 0, 1)
        ax.scatter(pred, true, s=6, alpha=0.3)
        which = np.clip(np.digitize(pred, edges) - 1, 0, bins - 1)
        centres = [(edges[b] + edges[b + 1]) / 2 for b in range(bins) if (which == b).any()]
        means = [true[which == b].mean() for b in range(bins) if (which == b).any()]
        ax.plot(centres, means, "o-", color="C3", label="mean true IoU per bin")
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        xlabel = ("calibrated score" if calibrated[name] else "predicted IoU (head)") if score == "pred_iou" else score
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel="true IoU", title=str(name))
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def by_model_protocol(rows) -> Dict[str, list]:
    """Rows grouped by ``"model | protocol"``, in the order they first appear."""
    groups: Dict[str, list] = {}
    for r in rows:
        groups.setdefault(f"{r['model']} | {r['protocol']}", []).append(r)
    return groups


def click_plot(rows, path: Path) -> bool:
    """Mean Dice after each prompt of the click protocols (the first point or box, then each correction click), one
    line per model x protocol. False when no row has a click curve."""
    groups = by_model_protocol(r for r in rows if r.get("dice_per_click"))
    if not groups:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6))
    for name, group in groups.items():
        curve = mean_click_curve(group)
        ax.plot(range(len(curve)), curve, "o-", label=f"{name} (n = {len(group)})")
    ax.set(xlabel="correction clicks after the first prompt", ylabel="mean Dice", ylim=(0, 1),
           title="Dice after each correction click")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def _parse_range(text: str):
    """A slices.csv range ``"first..last"`` -> (first, last), or None for ``""`` (nothing kept)."""
    return tuple(int(v) for v in text.split("..")) if text else None


LIMIT = 0.6  # the extent picture shows 0.6 of a structure's extent past either end; farther leaks end in an arrow


def extent_plot(rows, path: Path) -> bool:
    """Volume mode: for each structure, the slices kept (a bar, coloured by 3D Dice) against the structure's own
    extent (the grey band from 0 to 1: its first to its last slice), with the prompted slices as black ticks, one
    panel per model x protocol; a bar past 1 or below 0 is a leak, one short of the band an early stop. False when
    no row comes from volume mode."""
    rows = [r for r in rows if r.get("truth_range")]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = by_model_protocol(rows)
    height = 1.5 + 0.28 * max(len(g) for g in groups.values())  # title and axis label, then a row per structure
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), height), squeeze=False, sharey=True)
    colours = plt.get_cmap("RdYlGn")
    for ax, (name, group) in zip(axes[0], groups.items()):
        group = sorted(group, key=lambda r: (str(r["case"]), int(r["label"])))
        for y, r in enumerate(group):
            first, last = _parse_range(r["truth_range"])
            length = last - first + 1

            def where(index):  # a slice's position in units of the structure's extent: first 0, last 1
                return (index - first + 0.5) / length

            ax.barh(y, 1.0, left=0.0, height=0.8, color="0.85")
            kept = _parse_range(r.get("kept_range", ""))
            if kept:
                left, right = where(kept[0] - 0.5), where(kept[1] + 0.5)
                ax.barh(y, right - left, left=left, height=0.4, color=colours(float(r["dice"])))
                for end, edge, marker in ((left, -LIMIT, "<"), (right, 1 + LIMIT, ">")):  # a leak past the picture
                    if abs(end - 0.5) > abs(edge - 0.5):
                        ax.plot(edge - np.sign(edge - 0.5) * 0.03, y, marker=marker, color="k", ms=4)
            for p in str(r.get("prompted_slices", "")).split():
                ax.plot([where(int(p))] * 2, [y - 0.4, y + 0.4], color="k", lw=1.2)
            ax.text(1.02, y, f"{float(r['dice']):.2f}", va="center", fontsize=7, transform=ax.get_yaxis_transform())
        ax.set_yticks(range(len(group)), [f"{r['case']} {r['label']}"[:34] for r in group], fontsize=7)
        ax.set(xlim=(-LIMIT, 1 + LIMIT), ylim=(len(group) - 0.5, -0.5), title=name,
               xlabel="position along the axis (0: the structure's first slice, 1: its last)")
        ax.axvline(0, color="0.5", lw=0.5)
        ax.axvline(1, color="0.5", lw=0.5)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return True


def _mm(value) -> str:
    return "" if value is None else f"{value:.1f}"


def _rho(value) -> str:
    return "" if value is None or value != value else f"{value:.2f}"


def write_report(results: Results, out: Path, title: str = "SynthFM evaluation") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    fields = ["case", "label", "slice", "model", "protocol", "dice", "iou", "hd95", "nsd", "dice_per_click",
              "clicks_given", "presses", "slices_truth", "slices_kept", "slices_outside", "truth_range", "kept_range",
              "stops", "pred_iou", "score_calibrated", *SIGNALS, "axis", "prompted_slices"]
    atomic_write_text(out / "slices.csv", csv_text(results.rows, fields))

    reliability = reliability_plot(results.rows, out / "reliability.png")
    extents = extent_plot(results.rows, out / "extents.png")
    clicks = click_plot(results.rows, out / "clicks.png")
    for drawn, name in ((reliability, "reliability.png"), (extents, "extents.png"), (clicks, "clicks.png")):
        if not drawn:  # an earlier report's picture in this folder (--overwrite) would not match this report
            (out / name).unlink(missing_ok=True)

    def table(rows: dict, first: str) -> str:
        head = (f"<tr><th>{first}</th><th>n</th><th>Dice</th><th>IoU</th><th>HD95 mm</th><th>NSD</th>"
                "<th>score rho</th><th>IoU head rho</th><th>stability rho</th></tr>")
        body = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v['n']}</td><td>{v['dice']:.3f}</td><td>{v['iou']:.3f}</td>"
            f"<td>{_mm(v['hd95_mm'])}</td>"
            f"<td>{v['nsd']:.3f}</td><td>{_rho(v.get('iou_spearman'))}</td>"
            f"<td>{_rho(v.get('signal_spearman', {}).get('iou_head'))}</td>"
            f"<td>{_rho(v.get('signal_spearman', {}).get('stability'))}</td></tr>" for k, v in rows.items())
        return f"<table>{head}{body}</table>"

    pictures = "".join(
        f"<div class=ex><b>{html.escape(m)} | {html.escape(p)}</b><br>" + "".join(
            f"<figure><img src='data:image/png;base64,{_thumb(img, t, pr, a)}'><figcaption>{html.escape(cap)}: Dice {d:.2f}"
            f"</figcaption></figure>" for d, img, t, pr, cap, a in ex) + "</div>"
        for (m, p), ex in results.examples.items())
    skipped = "".join(f"<li>{html.escape(s['model'])} | {html.escape(s['protocol'])}: {html.escape(s['reason'])}</li>"
                      for s in summary["skipped"])
    page = f"""<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}figure{{display:inline-block;margin:4px}}
img{{width:192px;image-rendering:pixelated}}</style>
<h1>{html.escape(title)}</h1><p>Mean Dice over everything evaluated: {summary['mean_dice']:.3f}.
Green: truth, yellow: prediction.</p><h2>Models x prompt protocols</h2>{table(summary['by_model_protocol'], 'model | protocol')}
{"<h2>Quality score vs true IoU</h2><p>rho: Spearman correlation with the true IoU of the model's score "
  "(calibrated when the model has a calibration), of its decoder's raw IoU head and of the stability score; "
  "every signal is in summary.json (signal_spearman) and slices.csv.</p>"
  "<img src=reliability.png style='width:auto'>" if reliability else ""}
{"<h2>Correction clicks</h2><p>Mean Dice after the first prompt (0) and after each correction click, placed at "
  "the most interior point of the largest error (dice_per_click in slices.csv and summary.json).</p>"
  "<img src=clicks.png style='width:auto'>" if clicks else ""}
{"<h2>Slices kept against each structure's extent</h2><p>Grey: the structure, from its first slice (0) to "
  "its last (1); bar: the slices kept, coloured by 3D Dice (red 0, green 1, the figure on the right); black: the "
  "prompted slices. A bar past the grey band is a leak, a bar short of it an early stop.</p>"
  "<img src=extents.png style='width:auto'>" if extents else ""}
<h2>Skipped (with reasons)</h2><ul>{skipped or '<li>none</li>'}</ul>
<h2>Worst and best slices</h2>{pictures}
<h2>Per case and structure</h2>{table(summary['by_case'], 'model | protocol | case | label')}"""
    atomic_write_text(out / "report.html", page)
    return summary
