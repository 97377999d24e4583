"""synthfm.io.tables: rows of figures as CSV text."""
import csv
import io

from synthfm.io.tables import csv_text


def test_columns_are_the_fields_given_or_the_first_rows_keys():
    rows = [{"model": "a", "dice": 0.5, "note": "x"}, {"model": "b", "dice": 0.25, "note": "y"}]
    assert list(csv.DictReader(io.StringIO(csv_text(rows)))) == [
        {"model": "a", "dice": "0.5", "note": "x"}, {"model": "b", "dice": "0.25", "note": "y"}]
    assert csv_text(rows, ["dice", "model"]).splitlines() == ["dice,model", "0.5,a", "0.25,b"]  # "note" left out
    assert csv_text([]).splitlines() == ["model"]
