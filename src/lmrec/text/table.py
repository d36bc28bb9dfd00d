"""The item text table of a prepared dataset: every item's text embedded with a reader's encoder settings.

The one way the trainer, pre-training, inference, the service and the behaviour classifier get item
vectors, so that they encode a catalogue alike (same encoder, truncation, pooling, prompt and cache).
A reader is anything with a `config` holding those settings (a model); text/ knows no model class.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError
from lmrec.text import items
from lmrec.text.items import encoder_options


class TextReader(Protocol):
    """What the table needs of a model that reads item text."""

    config: Any
    uses_item_text: bool

    def set_item_text(self, embeddings: Tensor) -> None:
        """Install the item text embeddings `[n_items + 1, dim]`."""


def text_table(settings: Any, texts: list[str | None], ids: list[str], progress: bool = False) -> tuple[Tensor, dict]:
    """Embeddings `[len(texts), dim]` of item texts (row 0, padding, zero) under `settings` (a model config's
    `encoder`, `text_max_length`, `text_pooling`, `text_prompt`), and their summary for the run record.

    A `text_dim` in the settings must match the encoder's width: a clear error says which setting to change.
    """
    options = encoder_options(settings)
    if progress:
        options["progress"] = True
    table, summary = items.encode_items(texts, ids, **options)  # looked up on the module: tests may wrap it
    if table.shape[1] != getattr(settings, "text_dim", table.shape[1]):
        raise ConfigError(
            f"the encoder gives {table.shape[1]}-dimensional vectors but model.text_dim is {settings.text_dim}; "
            f"set --set model.text_dim={table.shape[1]}, or point model.encoder at a {settings.text_dim}-wide encoder."
        )
    return table, summary


def item_text_table(settings: Any, dataset: PreparedDataset, progress: bool = False) -> tuple[Tensor, dict]:
    """The whole catalogue's text table `[n_items + 1, dim]` (see `text_table`)."""
    return text_table(settings, dataset.item_text, list(dataset.item_ids), progress)


def attach_item_text(model: TextReader, dataset: PreparedDataset, progress: bool = False) -> dict:
    """Encode the catalogue's item texts into a model that reads them (cached on disk); else do nothing."""
    if not model.uses_item_text:
        return {}
    table, summary = item_text_table(model.config, dataset, progress)
    model.set_item_text(table)
    return summary
