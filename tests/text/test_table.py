"""The item text table of a prepared dataset: the one way models, inference and the service get item vectors."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError
from lmrec.text.table import attach_item_text, item_text_table, text_table

WORDS = ["item", "number", *(str(i) for i in range(10))]


class Reader:
    """A stand-in model: text/ must work with anything that has the reader's three members."""

    def __init__(self, uses_item_text: bool, **settings: object) -> None:
        self.config = SimpleNamespace(**settings)
        self.uses_item_text = uses_item_text
        self.installed: torch.Tensor | None = None

    def set_item_text(self, embeddings: torch.Tensor) -> None:
        self.installed = embeddings


@pytest.fixture
def dataset(tmp_path: Path, make_prepared) -> PreparedDataset:
    return PreparedDataset.load(make_prepared(tmp_path / "d", [[1, 2, 3, 4], [2, 3, 4, 5]], 5))


def test_the_table_has_a_zero_padding_row_and_one_row_per_item(make_tiny_bert, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    table, summary = item_text_table(SimpleNamespace(encoder=str(make_tiny_bert(WORDS))), dataset)
    assert table.shape == (dataset.n_items + 1, 32)
    assert torch.equal(table[0], torch.zeros(32)) and bool((table[1:].abs().sum(1) > 0).all())
    assert summary["dim"] == 32 and summary["missing_text"] == 0


def test_a_width_that_does_not_match_text_dim_names_the_setting(make_tiny_bert, tmp_path, monkeypatch):
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    settings = SimpleNamespace(encoder=str(make_tiny_bert(WORDS)), text_dim=384)
    with pytest.raises(ConfigError, match=r"32-dimensional .* model.text_dim is 384; set --set model.text_dim=32"):
        text_table(settings, [None, "item number 1"], ["", "a"])


def test_attach_installs_the_table_only_into_models_that_read_text(make_tiny_bert, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))
    encoder = str(make_tiny_bert(WORDS))
    reader, ignorer = Reader(True, encoder=encoder), Reader(False, encoder=encoder)
    assert attach_item_text(reader, dataset)["dim"] == 32
    assert reader.installed is not None and reader.installed.shape == (dataset.n_items + 1, 32)
    assert attach_item_text(ignorer, dataset) == {} and ignorer.installed is None
