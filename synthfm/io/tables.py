"""Rows of figures as CSV text (written with :func:`synthfm.io.atomic.atomic_write_text`, or packed with others)."""
from __future__ import annotations

import csv
import io
from typing import Iterable, Mapping, Optional, Sequence


def csv_text(rows: Iterable[Mapping[str, object]], fields: Optional[Sequence[str]] = None) -> str:
    """``rows`` as CSV with a header: the columns ``fields`` (keys outside them are left out), by default the first
    row's keys (a single ``model`` column when there is no row)."""
    rows = list(rows)
    columns = list(fields) if fields is not None else list(rows[0]) if rows else ["model"]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()
