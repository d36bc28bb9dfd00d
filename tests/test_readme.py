"""The README's Python example runs as written, on the real MovieLens-100K."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def test_python_example_runs(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("LMREC_DATA_DIR", str(data_root))
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no Python example"
    exec(compile(blocks[0], "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert 0 < float(lines[0]) < 1  # test NDCG@10
    assert len(lines) == 7  # 5 recommendations and HR@10
    assert (tmp_path / "runs" / "api-sasrec" / "metrics.json").is_file()
