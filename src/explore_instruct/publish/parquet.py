"""Records to Parquet, the same bytes for the same records.

The columns are the record's fields in a fixed order with fixed types (the text, then provenance),
followed by whatever optional fields the records carry (the diversity filter's `drop_*`, `dup_of`,
`score`; a reviewer's `review`; any other field, e.g. a rating) in the order they first appear. A
column exists only where some record has the field. Parquet's footer holds the writer's version
(`created_by`) and the Arrow schema, nothing that changes from one write to the next.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from explore_instruct.errors import MissingExtra

HUB_EXTRA = "hub"


def _pa() -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet  # the submodule that writes
    except ImportError:
        raise MissingExtra(HUB_EXTRA, "pyarrow") from None
    return pa


def _types(pa: Any) -> dict[str, Any]:
    text = pa.string()
    original = pa.struct([("instruction", text), ("input", text), ("output", text)])
    return {
        "instruction": text,
        "input": text,
        "output": text,
        "task": text,
        "task_path": text,
        "depth": pa.int32(),
        "id": pa.int64(),
        "origin": text,
        "drop_stage": text,
        "drop_reason": text,
        "dup_of": pa.int64(),
        "score": pa.float64(),
        "review": pa.struct([("decision", text), ("reviewer", text), ("at", text), ("original", original)]),
    }


def columns(records: Sequence[dict[str, Any]]) -> list[str]:
    """The table's column names: the known fields in their order, then any others as first seen."""
    pa = _pa()
    known = list(_types(pa))
    present = dict.fromkeys(k for r in records for k in r)
    return [k for k in known if k in present or k in known[:8]] + [k for k in present if k not in known]


def records_table(records: Sequence[dict[str, Any]]) -> Any:
    """A pyarrow Table of `records` (a field a record lacks is null)."""
    pa = _pa()
    types = _types(pa)
    arrays, fields = [], []
    for name in columns(records):
        values = [r.get(name) for r in records]
        array = pa.array(values, type=types.get(name))  # unknown fields: the type pyarrow infers
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def parquet_bytes(records: Sequence[dict[str, Any]]) -> bytes:
    """The Parquet file of `records` (zstd-compressed, one row group per 100,000 rows)."""
    pa = _pa()
    buf = io.BytesIO()
    pa.parquet.write_table(records_table(records), buf, compression="zstd", row_group_size=100_000)
    return buf.getvalue()
