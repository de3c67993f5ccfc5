"""Study A's tables as typed frames: the columns a frame must have, and a frame cut to a
table's schema (typed even when empty). Shared by :mod:`.generation` and :mod:`.analyse`."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import pyarrow as pa


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """ValueError naming the ``columns`` ``df`` lacks (``what`` says which frame it is)."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{what} lacks column(s) {missing}; has {list(df.columns)}")


def schema_frame(schema: pa.Schema, records: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """A DataFrame with exactly the schema's columns (typed even when empty)."""
    df = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records
    if df.empty:
        return schema.empty_table().to_pandas()
    return df[schema.names].reset_index(drop=True)
