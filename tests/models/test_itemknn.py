"""ItemKNN: hand-counted votes, decay by age, text similarity, padding, and checkpoints of any size."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lmrec.models.base import build_model

N = 6
SEQUENCES = [torch.tensor([1, 2, 3]), torch.tensor([2, 3]), torch.tensor([4])]


def fitted(**params):
    model = build_model("itemknn", N, {"window": 1, **params})
    model.fit_statistics(SEQUENCES)
    return model


def test_votes_are_the_hand_counted_transitions_and_cooccurrences(right_aligned) -> None:
    model = fitted(recent=1, cooccurrence_weight=0.5)
    scores = model.score_all(right_aligned([[1, 2]], 2), torch.tensor([2]))
    # after 2: 2 → 3 twice (transitions and co-occurrences); 1 sat next to 2 once; nothing else did
    expected = [0.5 * math.log1p(1), 0.0, math.log1p(2) + 0.5 * math.log1p(2), 0.0, 0.0, 0.0]
    assert torch.isneginf(scores[0, 0])
    assert torch.allclose(scores[0, 1:], torch.tensor(expected))
    assert not model.trainable and not model.uses_item_text


def test_older_items_vote_with_decayed_weight_and_padding_never_votes(right_aligned, left_pad) -> None:
    model = fitted(recent=2, decay=0.5, cooccurrence_weight=0.0)
    last_only = fitted(recent=1, cooccurrence_weight=0.0)
    history = right_aligned([[1, 2]], 2)
    scores = model.score_all(history, torch.tensor([2]))
    older = last_only.score_all(right_aligned([[1]], 1), torch.tensor([1]))
    newer = last_only.score_all(history, torch.tensor([2]))
    assert torch.allclose(scores[0, 1:], newer[0, 1:] + 0.5 * older[0, 1:])
    assert torch.equal(model.score_all(left_pad(history, 4), torch.tensor([2])), scores)
    empty = model.score_all(right_aligned([[]], 2), torch.tensor([0]))
    assert (empty[0, 1:] == 0).all() and torch.isneginf(empty[0, 0])


def test_windows_never_join_two_users_sequences(right_aligned) -> None:
    model = fitted(recent=1, window=3, transition_weight=0.0)
    scores = model.score_all(right_aligned([[3]], 1), torch.tensor([1]))
    assert scores[0, 4] == 0  # item 4 is only ever in another user's sequence
    assert scores[0, 1] == pytest.approx(math.log1p(1)) and scores[0, 2] == pytest.approx(math.log1p(2))


def test_text_similarity_reaches_items_nobody_has_bought(right_aligned) -> None:
    model = fitted(recent=1, text_weight=2.0, transition_weight=0.0, cooccurrence_weight=0.0)
    assert model.uses_item_text
    text = torch.eye(N + 1, 4)
    text[6] = text[3] * 5  # item 6 (never bought) reads like item 3
    model.set_item_text(text)
    scores = model.score_all(right_aligned([[3]], 1), torch.tensor([1]))
    assert scores[0, 6] == pytest.approx(2.0) and scores[0, 3] == pytest.approx(2.0)
    assert scores[0, 1] == 0 and scores[0, 5] == 0


def test_popularity_weight_adds_log_counts(right_aligned) -> None:
    model = fitted(recent=1, popularity_weight=0.1, transition_weight=0.0, cooccurrence_weight=0.0)
    scores = model.score_all(right_aligned([[4]], 1), torch.tensor([1]))
    assert scores[0, 2] == pytest.approx(0.1 * math.log1p(2)) and scores[0, 5] == 0


def test_a_checkpoint_of_any_size_loads_with_weights_only(tmp_path: Path, right_aligned) -> None:
    model = fitted(recent=2, text_weight=1.0)
    model.set_item_text(torch.randn(N + 1, 3))
    path = tmp_path / "model.pt"
    torch.save(model.state_dict(), path)
    restored = build_model("itemknn", N, model.config.model_dump())
    restored.load_state_dict(torch.load(path, weights_only=True))
    history = right_aligned([[1, 2], [3]], 2)
    lengths = torch.tensor([2, 1])
    assert torch.equal(restored.score_all(history, lengths), model.score_all(history, lengths))


def test_text_weight_without_text_is_a_clear_error(right_aligned) -> None:
    model = fitted(text_weight=1.0)
    with pytest.raises(TypeError, match="needs item text"):
        model.score_all(right_aligned([[1]], 1), torch.tensor([1]))


def test_trains_evaluates_and_explains_end_to_end(cyclic_dataset: Path, tmp_path: Path) -> None:
    from lmrec import api

    metrics = api.train(
        cyclic_dataset, tmp_path / "run", model="itemknn", overrides=["model.text_weight=0.5"], progress=False
    )
    assert metrics["epochs"] == 0 and metrics["test"]["hr@10"] > 0.9  # i → i+1 is a transition count
    rec = api.Recommender.load(tmp_path / "run")
    top = rec.recommend("u0", k=3, explain=True, exclude_seen=False)  # u0 has walked the whole cycle
    assert len(top) == 3 and all(r.because for r in top)


def test_history_weight_is_added_once_to_every_item_already_in_the_history(right_aligned) -> None:
    plain = fitted(recent=1)
    model = fitted(recent=1, history_weight=-2.0)
    history = right_aligned([[1, 1, 2]], 3)
    delta = model.score_all(history, torch.tensor([3])) - plain.score_all(history, torch.tensor([3]))
    assert delta[0, 1:].tolist() == [-2.0, -2.0, 0.0, 0.0, 0.0, 0.0]


def test_whitening_removes_a_shared_direction_before_the_cosine(right_aligned) -> None:
    torch.manual_seed(0)
    text = torch.randn(N + 1, 4) + torch.tensor([50.0, 0, 0, 0])  # one direction dominates every vector
    plain = fitted(recent=1, text_weight=1.0, transition_weight=0.0, cooccurrence_weight=0.0)
    white = fitted(recent=1, text_weight=1.0, transition_weight=0.0, cooccurrence_weight=0.0, text_whiten=True)
    plain.set_item_text(text)
    white.set_item_text(text)
    history = right_aligned([[3]], 1)
    assert plain.score_all(history, torch.tensor([1]))[0, 1:].min() > 0.99  # everything looks alike
    scores = white.score_all(history, torch.tensor([1]))[0, 1:]
    assert scores.min() < 0.5 and scores[2] == pytest.approx(1.0)  # item 3 is still its own twin
    assert white.item_text[0].abs().sum() == 0
    from lmrec.models.itemknn import whiten

    centred = whiten(text[1:])
    assert torch.allclose(centred.mean(0), torch.zeros(centred.shape[1]), atol=1e-4)  # centred, unit covariance
    assert torch.allclose(torch.cov(centred.T), torch.eye(centred.shape[1]), atol=1e-3)


def test_a_checkpoint_whose_neighbour_table_does_not_hold_together_is_refused() -> None:
    state = fitted().state_dict()
    state["cols"] = state["cols"] + 100  # neighbour ids beyond the catalogue
    with pytest.raises(RuntimeError, match=r"neighbour ids must lie in 0\.\.6"):
        build_model("itemknn", N, {"window": 1}).load_state_dict(state)
    state = fitted().state_dict()
    state["transitions"] = state["transitions"][:-1]
    with pytest.raises(RuntimeError, match="every neighbour needs both counts"):
        build_model("itemknn", N, {"window": 1}).load_state_dict(state)


def test_a_run_with_a_tampered_neighbour_table_says_what_is_wrong(cyclic_dataset: Path, tmp_path: Path) -> None:
    from lmrec import api
    from lmrec.errors import RunError
    from lmrec.registry.run import RunDir

    api.train(cyclic_dataset, tmp_path / "run", model="itemknn", progress=False)
    run = RunDir(tmp_path / "run")
    state = torch.load(run.model_file, weights_only=True)
    state["state_dict"]["row_ptr"] = state["state_dict"]["row_ptr"].flip(0)
    torch.save(state, run.model_file)
    with pytest.raises(RunError, match="does not fit model itemknn: the itemknn neighbour table is inconsistent"):
        api.Recommender.load(tmp_path / "run")
