"""RecBole atomic files on a tiny fixture: typed headers stripped, item and user side tables joined."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from lmrec.data.prepare import prepare


def test_recbole_folder_strips_types_and_joins_side_tables(write, tmp_path: Path) -> None:
    write("toy/toy.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t7\t4\t10\n1\t8\t2\t20\n")
    write(
        "toy/toy.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n7\tHeat\t1995\tCrime\n",
    )
    write("toy/toy.user", "user_id:token\tage:token\n1\t24\n")
    ds = prepare(tmp_path / "toy", tmp_path / "out")
    assert ds.manifest["source"]["format"] == "recbole"
    assert ds.item_text[1:] == ["Heat (1995) | Crime", None]
    assert ds.manifest["text"]["missing"] == 1
    users = pq.read_table(tmp_path / "out" / "users.parquet").to_pylist()
    assert users == [{"user_idx": 0, "user_id": "1", "age": "24"}]
