"""Item texts: items without text get a placeholder, counted and reported in words true for every model."""

from __future__ import annotations

import logging

import pytest

from lmrec.text.items import item_texts


def test_items_without_text_are_filled_counted_and_reported(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        texts = item_texts([None, "a drill", "  ", None], ["", "i1", "i2", "i3"])
    assert texts.texts == ["", "a drill", "item i2", "item i3"] and texts.missing == 2
    assert "2 of 3 items have no text" in caplog.text
    assert "rely on their ID embedding" not in caplog.text  # untrue of pre-training, which has no IDs
