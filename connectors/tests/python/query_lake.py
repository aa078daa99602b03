"""Reads a brook lake directory with DuckDB and pyarrow; prints JSON.

Usage: query_lake.py DIR
"""

import json
import sys

import duckdb
import pyarrow.dataset as ds

root = sys.argv[1]
glob = f"{root}/**/*.parquet"
con = duckdb.connect()
rows, total, items, dates, hours, first_ts = con.execute(
    f"""
    SELECT count(*), round(sum(total), 2), sum(len(items)),
           count(DISTINCT event_date), count(DISTINCT event_hour),
           min(timestamp)::VARCHAR
    FROM read_parquet('{glob}', hive_partitioning = true)
    """
).fetchone()
by_type = dict(
    con.execute(
        f"SELECT event_type, count(*) FROM read_parquet('{glob}', hive_partitioning = true) GROUP BY 1"
    ).fetchall()
)
table = ds.dataset(root, format="parquet", partitioning="hive").to_table()
print(
    json.dumps(
        {
            "duckdb": {
                "rows": rows,
                "total": total,
                "items": int(items),
                "dates": dates,
                "hours": hours,
                "first_ts": first_ts,
                "by_type": by_type,
            },
            "pyarrow": {"rows": table.num_rows, "columns": table.column_names},
        }
    )
)
