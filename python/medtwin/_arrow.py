"""Wrap the engine's little-endian column buffers as Arrow arrays (no copy beyond the one out of Rust)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import pyarrow as pa


def f64(buf: bytes) -> pa.Array:
    """A float64 Arrow array viewing ``buf`` (little-endian IEEE 754, 8 bytes per value)."""
    return pa.Array.from_buffers(pa.float64(), len(buf) // 8, [None, pa.py_buffer(buf)])


def i64(buf: bytes) -> pa.Array:
    """An int64 Arrow array viewing ``buf``."""
    return pa.Array.from_buffers(pa.int64(), len(buf) // 8, [None, pa.py_buffer(buf)])


def i32(buf: bytes) -> pa.Array:
    """An int32 Arrow array viewing ``buf``."""
    return pa.Array.from_buffers(pa.int32(), len(buf) // 4, [None, pa.py_buffer(buf)])


def boolean(buf: bytes) -> pa.Array:
    """A boolean Arrow array from one byte per value (0 or 1)."""
    u8 = pa.Array.from_buffers(pa.uint8(), len(buf), [None, pa.py_buffer(buf)])
    return u8.cast(pa.bool_())


def table_from_lists(cols: Dict[str, List[Any]]) -> pa.Table:
    """A small table (summaries, estimates) from a dict of equal-length lists."""
    return pa.table(cols)


def dictionary(indices: bytes, names: Sequence[str]) -> pa.Array:
    """A dictionary-encoded string column: int32 ``indices`` into ``names``."""
    return pa.DictionaryArray.from_arrays(i32(indices), pa.array(list(names), pa.string()))
