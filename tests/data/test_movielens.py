"""MovieLens raw files on tiny fixtures: ML-100K, ML-1M `.dat` (Latin-1) and ML-25M CSV layouts and movie text."""

from __future__ import annotations

from pathlib import Path

from lmrec.data.prepare import prepare
from lmrec.data.readers import guess_format


def test_movielens_100k_layout(write, tmp_path: Path) -> None:
    write("ml/u.data", "1\t10\t5\t881250949\n1\t20\t3\t881250950\n2\t10\t4\t881250949\n")
    flags = ["0"] * 19
    drama = flags.copy()
    drama[8] = "1"  # Drama
    write(
        "ml/u.item",
        f"10|Misérables, Les (1995)|01-Jan-1995||http://x|{'|'.join(drama)}\n"
        f"20|Toy Story (1995)|01-Jan-1995||http://y|{'|'.join(flags)}\n",
        encoding="latin-1",
    )
    ds = prepare(tmp_path / "ml", tmp_path / "out")
    assert ds.manifest["source"]["format"] == "movielens"
    assert ds.item_text[1:] == ["Misérables, Les (1995) | Drama", "Toy Story (1995) | "]
    assert "genres" in ds.item_table.column_names and "Drama" not in ds.item_table.column_names
    text = ds.manifest["text"]
    assert {key: text[key] for key in ("template", "missing", "columns")} == {
        "template": "{title} | {genres}",
        "missing": 0,
        "columns": ["title", "genres"],
    }
    assert (text["chars"]["min"], text["chars"]["max"], text["chars"]["mean"]) == (19, 30, 24.5)
    assert ds.manifest["columns"]["value"] == "rating"


def test_movielens_1m_dat_files_latin1(write, tmp_path: Path) -> None:
    write("ml1m/ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        "ml1m/movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::Misérables (1995)::Animation|Musical\n",
        encoding="latin-1",
    )
    ds = prepare(tmp_path / "ml1m" / "ratings.dat", tmp_path / "out")
    assert list(ds.item_ids[1:]) == ["661", "1193"]
    assert ds.item_text[1] == "Misérables (1995) | Animation|Musical"
    assert ds.manifest["name"] == "ml1m"


def test_movielens_csv_files(write, tmp_path: Path) -> None:
    write("ml25/ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n1,29,4.0,1112484676\n")
    write("ml25/movies.csv", 'movieId,title,genres\n2,"Jumanji, The (1995)",Adventure|Children\n29,Heat (1995),Crime\n')
    assert guess_format(tmp_path / "ml25" / "ratings.csv") == "movielens"
    ds = prepare(tmp_path / "ml25", tmp_path / "out")
    assert [ds.item_ids[i] for i in ds.sequence(0)] == ["29", "2"]
    assert ds.item_text[1:] == ["Jumanji, The (1995) | Adventure|Children", "Heat (1995) | Crime"]
