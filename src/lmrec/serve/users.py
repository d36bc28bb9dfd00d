"""Prefix search over user ids, for the web page's user picker: the served dataset's users and the store's."""

from __future__ import annotations

from bisect import bisect_left
from functools import lru_cache
from itertools import takewhile

from lmrec.data.dataset import PreparedDataset
from lmrec.serve.store import EventStore


@lru_cache(maxsize=1)
def _sorted_ids(dataset: PreparedDataset) -> list[str]:
    """The dataset's user ids in code-point order, sorted once per served dataset (the newest one kept)."""
    return sorted(str(user) for user in dataset.user_ids)


def dataset_users(dataset: PreparedDataset, prefix: str, limit: int) -> list[str]:
    """The first `limit` user ids of the dataset that start with `prefix`, in code-point order."""
    ids = _sorted_ids(dataset)
    start = bisect_left(ids, prefix)  # the matches, if any, are the ids from here on
    return list(takewhile(lambda user: user.startswith(prefix), ids[start : start + limit]))


def matching_users(dataset: PreparedDataset, store: EventStore, prefix: str, limit: int) -> tuple[list[str], bool]:
    """The first `limit` user ids starting with `prefix` among the dataset's and the store's, in code-point
    order, and whether more match."""
    found = sorted(set(dataset_users(dataset, prefix, limit + 1)) | set(store.user_ids(prefix, limit + 1)))
    return found[:limit], len(found) > limit
