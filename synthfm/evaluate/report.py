"""Write summary.json, a per-slice CSV and an HTML report with best/worst overlays."""
from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from synthfm.evaluate.runner import Results, summarize
from synthfm.io.atomic import atomic_write_text
from synthfm.io.png import GREEN, YELLOW, overlay


def _thumb(image, truth, pred) -> str:
    buffer = io.BytesIO()
    Image.fromarray(overlay(np.clip(image, 0, 1), [(truth, GREEN), (pred, YELLOW)])).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _mm(value) -> str:
    return "" if value is None else f"{value:.1f}"


def write_report(results: Results, out: Path, title: str = "SynthFM evaluation") -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(results)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    text = io.StringIO()
    fields = ["case", "label", "slice", "model", "protocol", "dice", "iou", "hd95", "nsd", "dice_per_click",
              "slices_truth", "slices_kept"]
    writer = csv.DictWriter(text, fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(results.rows)
    atomic_write_text(out / "slices.csv", text.getvalue())

    def table(rows: dict, first: str) -> str:
        head = f"<tr><th>{first}</th><th>n</th><th>Dice</th><th>IoU</th><th>HD95 mm</th><th>NSD</th></tr>"
        body = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{v['n']}</td><td>{v['dice']:.3f}</td><td>{v['iou']:.3f}</td>"
            f"<td>{_mm(v['hd95_mm'])}</td>"
            f"<td>{v['nsd']:.3f}</td></tr>" for k, v in rows.items())
        return f"<table>{head}{body}</table>"

    pictures = "".join(
        f"<div class=ex><b>{html.escape(m)} | {html.escape(p)}</b><br>" + "".join(
            f"<figure><img src='data:image/png;base64,{_thumb(img, t, pr)}'><figcaption>{html.escape(cap)}: Dice {d:.2f}"
            f"</figcaption></figure>" for d, img, t, pr, cap in ex) + "</div>"
        for (m, p), ex in results.examples.items())
    skipped = "".join(f"<li>{html.escape(s['model'])} | {html.escape(s['protocol'])}: {html.escape(s['reason'])}</li>"
                      for s in summary["skipped"])
    page = f"""<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:3px 8px;text-align:right}}td:first-child{{text-align:left}}figure{{display:inline-block;margin:4px}}
img{{width:192px;image-rendering:pixelated}}</style>
<h1>{html.escape(title)}</h1><p>Mean Dice over everything evaluated: {summary['mean_dice']:.3f}.
Green: truth, yellow: prediction.</p><h2>Models x prompt protocols</h2>{table(summary['by_model_protocol'], 'model | protocol')}
<h2>Skipped (with reasons)</h2><ul>{skipped or '<li>none</li>'}</ul>
<h2>Worst and best slices</h2>{pictures}
<h2>Per case and structure</h2>{table(summary['by_case'], 'model | protocol | case | label')}"""
    atomic_write_text(out / "report.html", page)
    return summary
