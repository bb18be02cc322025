"""The Delta readers users have, each reading a table into sorted row tuples: the Python
`deltalake` package (pyarrow, pandas and its SQL `QueryBuilder`), Polars (`read_delta`,
`scan_delta`) and DuckDB's `delta_scan` (the extension from the `duckdb-ext-delta` wheel, loaded
from its file: no download)."""

from __future__ import annotations

import math
from pathlib import Path

import duckdb
import duckdb_ext
import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, QueryBuilder

Rows = list[tuple]


def _sorted(rows: list[dict]) -> Rows:
    return sorted(tuple(sorted(r.items())) for r in rows)


def extension(name: str) -> Path:
    """The DuckDB extension `name` shipped in the `duckdb-ext-<name>` wheel."""
    found = sorted(Path(next(iter(duckdb_ext.__path__))).rglob(f'{name}.duckdb_extension'))
    if not found:
        raise FileNotFoundError(f'{name}.duckdb_extension is not in the duckdb-ext-{name} wheel')
    return found[0]


def duckdb_with_delta() -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config={'allow_unsigned_extensions': 'true'})
    con.execute(f"LOAD '{extension('delta')}'")
    return con


def duckdb_on_s3(endpoint: str, region: str, secret: str) -> duckdb.DuckDBPyConnection:
    """DuckDB with `delta` and `httpfs` (from their wheels) and an S3 secret for `endpoint`
    (`http://host:port`, path-style, as a local S3-compatible server wants)."""
    con = duckdb_with_delta()
    con.execute(f"LOAD '{extension('httpfs')}'")
    host = endpoint.removeprefix('http://')
    con.execute(f"CREATE SECRET s3 (TYPE s3, KEY_ID 'test', SECRET '{secret}', REGION '{region}', "
                f"ENDPOINT '{host}', URL_STYLE 'path', USE_SSL false)")
    return con


def with_pyarrow(path: Path) -> Rows:
    return _sorted(DeltaTable(str(path)).to_pyarrow_table().to_pylist())


def with_pandas(path: Path) -> Rows:
    # pandas holds an integer column with empty values as floats, empty as NaN.
    rows = DeltaTable(str(path)).to_pandas().to_dict('records')
    return _sorted([{k: None if isinstance(v, float) and math.isnan(v) else v
                     for k, v in r.items()} for r in rows])


def with_query_builder(path: Path) -> Rows:
    reader = QueryBuilder().register('t', DeltaTable(str(path))).execute('select * from t')
    return _sorted(pa.table(reader).to_pylist())


def with_polars(path: Path) -> Rows:
    return _sorted(pl.read_delta(str(path)).to_dicts())


def with_polars_scan(path: Path, where: pl.Expr | None = None) -> Rows:
    frame = pl.scan_delta(str(path))
    if where is not None:
        frame = frame.filter(where)
    return _sorted(frame.collect().to_dicts())


def with_duckdb(path: Path, where: str = 'true') -> Rows:
    rel = duckdb_with_delta().execute(f"select * from delta_scan('{path}') where {where}")
    columns = [d[0] for d in rel.description]
    return _sorted([dict(zip(columns, row)) for row in rel.fetchall()])


READERS = {'pyarrow': with_pyarrow, 'pandas': with_pandas, 'QueryBuilder': with_query_builder,
           'polars read_delta': with_polars, 'polars scan_delta': with_polars_scan,
           'duckdb delta_scan': with_duckdb}
