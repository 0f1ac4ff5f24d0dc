"""Tab-separated label files (lfw/GENDER.tsv, speechocean762/SPEAKERS.tsv, vox1_meta.csv)."""

from __future__ import annotations

import csv
from pathlib import Path

from edge_runtime.errors import DatasetError


def read_tsv(path: str | Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) with fields stripped and blank lines dropped.

    Line numbers are kept so that every later complaint can point at the offending row.
    """
    path = Path(path)
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            lines = list(csv.reader(fh, delimiter="\t"))
    except FileNotFoundError:
        raise DatasetError(f"label file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"cannot read label file {path}: {exc}") from None
    numbered = [
        (i, [f.strip() for f in row])
        for i, row in enumerate(lines, 1)
        if any(f.strip() for f in row)
    ]
    if not numbered:
        raise DatasetError(f"label file {path} is empty")
    (_, header), rows = numbered[0], numbered[1:]
    return header, rows


def read_labels_tsv(path: str | Path, key_column: str, value_column: str) -> dict[str, str]:
    """{key: value} from two named columns.

    Rows with an empty value are left out: the LFW gender file is partial by design, and an
    absent label must read as "unknown", never as an empty-string class. A key repeated with
    a different value is an error (a label file that contradicts itself cannot be trusted).
    """
    path = Path(path)
    header, rows = read_tsv(path)
    for col in (key_column, value_column):
        if col not in header:
            raise DatasetError(f"{path}: no column {col!r}; columns are {header}")
    k, v = header.index(key_column), header.index(value_column)
    out: dict[str, str] = {}
    for line_no, row in rows:
        key = row[k] if k < len(row) else ""
        value = row[v] if v < len(row) else ""
        if not key:
            raise DatasetError(f"{path}:{line_no}: empty {key_column!r}")
        if not value:
            continue
        if key in out and out[key] != value:
            raise DatasetError(
                f"{path}:{line_no}: {key} has {value_column} {value!r} here but {out[key]!r} "
                "earlier"
            )
        out[key] = value
    return out
