"""`lmrec report`: writes the HTML file where asked (or into the run), and refuses a folder that is no run."""

from __future__ import annotations

from pathlib import Path

from lmrec import api


def test_report_writes_the_file(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    run = tmp_path / "sasrec"
    api.train(cyclic_dataset, run, model="sasrec", overrides=["model.hidden=16", "model.max_len=8", "train.epochs=2"])
    code, out, err = run_cli(["report", str(run), "--out", str(tmp_path / "report.html"), "--users", "2"])
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("<h3>user ") == 2
    assert f"wrote {tmp_path / 'report.html'}" in out and "open it in a browser" in out
    code, out, err = run_cli(["report", str(run)])
    assert code == 0, err
    assert (run / "report.html").is_file()


def test_a_folder_that_is_not_a_run_is_one_sentence(cyclic_dataset: Path, tmp_path: Path, run_cli) -> None:
    code, out, err = run_cli(["report", str(cyclic_dataset), "--out", str(tmp_path / "report.html")])
    assert code == 1 and out == ""
    assert "is not an lmrec run directory (no run.json); train one with `lmrec train`." in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "report.html").exists()
