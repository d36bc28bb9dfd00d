"""`lmrec data`: prepare/stats/synth output, registry names, and bad inputs as one line with exit code 1."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from lmrec.cli import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the `lmrec` entry point; return its exit code, stdout and stderr."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(result: tuple[int, str, str], fragment: str) -> None:
    """Exit code 1 and one line of error, after whatever stages were logged (output that is not a terminal
    gets `lmrec.cli.data: Preparing …` lines where a terminal gets a spinner)."""
    code, _, err = result
    assert code == 1
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("lmrec.cli.data: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], err


def test_prepare_prints_the_summary_and_stats_repeats_it(write, tmp_path: Path, capsys) -> None:
    path = write("e.csv", "user,item,ts\nu,a,1\nu,b,2\nu,c,3\nv,a,1\nv,a,1\nw,a,\n")
    out = tmp_path / "out"
    code, stdout, _ = run(["data", "prepare", str(path), "--out", str(out)], capsys)
    assert code == 0
    for text in ("rows read", "dropped: duplicate", "dropped: missing timestamp", "interactions", "split: test"):
        assert text in stdout
    assert "First bad rows" in stdout and "missing timestamp" in stdout
    code, stats, _ = run(["data", "stats", str(out)], capsys)
    assert code == 0 and "rows read" in stats and "split: valid" in stats


def test_prepare_passes_options_through(write, tmp_path: Path, capsys) -> None:
    path = write("e.csv", "who,what,when,kind\nu,a,1,click\nu,b,2,view\nu,c,3,click\n")
    out = tmp_path / "out"
    args = ["data", "prepare", str(path), "--out", str(out), "--user-col", "who", "--item-col", "what"]
    args += ["--time-col", "when", "--type-col", "kind", "--event-types", "click", "--split", "temporal"]
    args += ["--cutoff", "3", "--keep-repeats", "--tie-break", "item", "--name", "toy"]
    code, stdout, _ = run(args, capsys)
    assert code == 0, stdout
    from lmrec.data.dataset import PreparedDataset

    ds = PreparedDataset(out)
    assert ds.name == "toy" and ds.manifest["dropped"]["event_type_filtered"] == 1
    assert ds.manifest["options"]["keep_repeats"] is True and ds.manifest["split"]["method"] == "temporal"


@pytest.mark.parametrize(
    ("content", "extra", "fragment"),
    [
        ("", [], "is empty"),
        ("who,what,when\n1,a,1\n", [], "no user column found"),
        ("user,item,ts\nu,a,1\n", ["--event-types", "buy"], "no event type column found"),
        ("user,item,ts,type\nu,a,1,view\n", ["--event-types", "buy"], "no events left"),
        ("user,item,ts\nu,a,1\nu,b,\n", ["--strict"], "line 3 of"),
        ("user,item,ts\nu,a,1\n", ["--split", "sideways"], "invalid --split"),
    ],
)
def test_bad_inputs_are_one_line_and_exit_1(
    write, tmp_path: Path, capsys, content: str, extra: list[str], fragment: str
) -> None:
    path = write("e.csv", content)
    result = run(["data", "prepare", str(path), "--out", str(tmp_path / "out"), *extra], capsys)
    assert_one_line_error(result, fragment)


def test_missing_file_and_missing_dataset_are_one_line(tmp_path: Path, capsys) -> None:
    result = run(["data", "prepare", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "out")], capsys)
    assert_one_line_error(result, "nope.csv does not exist.")
    assert_one_line_error(run(["data", "stats", str(tmp_path)], capsys), "is not a prepared dataset")


def test_prepare_a_registered_name_from_the_data_dir(data_root: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("LMREC_DATA_DIR", str(data_root))
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run(["data", "prepare", "ml-100k", "--out", str(tmp_path / "out")], capsys)
    assert code == 0, err
    assert "ml-100k" in stdout and "100,000" in stdout


def test_source_option_is_forwarded_to_the_registry(write, tmp_path: Path, capsys) -> None:
    write("copy/toy.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t7\t10\n1\t8\t20\n")
    args = ["data", "prepare", "toy", "--source", str(tmp_path / "copy"), "--out", str(tmp_path / "out")]
    code, stdout, err = run(args, capsys)
    assert code == 0, err
    assert stdout.split()[0] == "toy"


def test_prepare_help_lists_the_registered_dataset_names(capsys) -> None:
    from lmrec.data.registry import CATALOGUE

    code, stdout, _ = run(["data", "prepare", "--help"], capsys)
    assert code == 0
    flat = " ".join(stdout.split())
    assert "Registered datasets" in flat
    for name in CATALOGUE:
        assert name in flat


def test_synth_calls_the_generator(tmp_path: Path, capsys, monkeypatch) -> None:
    calls = []

    def write_synthetic_log(path: Path, users: int, items: int, events: int, seed: int = 0) -> dict:
        calls.append((path, users, items, events, seed))
        return {"path": str(path), "events": events}

    fake = types.ModuleType("lmrec.data.synth")
    fake.write_synthetic_log = write_synthetic_log
    monkeypatch.setitem(sys.modules, "lmrec.data.synth", fake)
    out = tmp_path / "log.csv"
    args = ["data", "synth", "--users", "3", "--items", "4", "--events", "20", "--out", str(out), "--seed", "5"]
    code, stdout, _ = run(args, capsys)
    assert code == 0 and calls == [(out, 3, 4, 20, 5)]
    assert "events" in stdout and "20" in stdout
