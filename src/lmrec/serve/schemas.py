"""Typed request and response bodies of the HTTP service (they are also its OpenAPI documentation).

JSON types are checked here (a string where a number belongs is a 422 for the whole request); what a
well-typed event can still get wrong (an unparsable timestamp, an empty id) is judged per event by
`check_event`, so that one bad event does not reject the batch it came in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

from lmrec.config import EXCLUDE_SEEN_DEFAULT
from lmrec.errors import LmrecError

MAX_BATCH = 1000
MAX_ID_LENGTH = 256
MAX_TYPE_LENGTH = 64
MAX_TEXT_LENGTH = 10_000
MAX_K = 1000
MAX_LIST = 1000
MAX_TIMESTAMP = 253_402_300_799.0  # 9999-12-31T23:59:59Z
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # Unicode's control characters (Cc): C0, DEL and C1
NO_CONTROL = r"^[^\x00-\x1f\x7f-\x9f]*$"  # a query parameter's pattern: any text without those


class InvalidInput(LmrecError):
    """A well-typed request whose content cannot be used (answered with 422)."""


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def id_problem(value: str, what: str = "id", limit: int = MAX_ID_LENGTH) -> str | None:
    """Why `value` cannot be stored as an id or event type (blank, longer than `limit`, control characters),
    else None. Strings with lone surrogates never get here: the JSON body and the URL are refused first."""
    return _blank(value, what) or _too_long(value, what, limit) or _control(value, what)


def text_problem(value: str, what: str, allowed: str = "") -> str | None:
    """Why `value`, whose length a schema already bounds, cannot be used (blank, control characters other
    than those `allowed`, e.g. the line breaks and tabs of an item's text), else None."""
    return _blank(value, what) or _control(value, what, allowed)


def _blank(value: str, what: str) -> str | None:
    return None if value.strip() else f"{what} is empty"


def _too_long(value: str, what: str, limit: int) -> str | None:
    return f"{what} is longer than {limit} characters" if len(value) > limit else None


def _control(value: str, what: str, allowed: str = "") -> str | None:
    """Control characters other than `allowed`: one regex scan, as this runs on every field of every event."""
    if any(match.group() not in allowed for match in _CONTROL.finditer(value)):
        return f"{what} contains control characters"
    return None


def _valid_id(value: str) -> str:
    problem = text_problem(value, "id")
    if problem:
        raise ValueError(problem)
    return value


Id = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_LENGTH), AfterValidator(_valid_id)]
"""An original user or item id in a request body: 1..256 characters, not blank, no control characters."""


def parse_timestamp(value: int | float | str) -> float:
    """Epoch seconds from epoch seconds or an ISO-8601 string (naive times are UTC); ValueError otherwise."""
    if isinstance(value, str):
        try:
            text = value.strip()
            parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith(("Z", "z")) else text)
        except ValueError:
            raise ValueError(f"timestamp {value[:40]!r} is neither epoch seconds nor ISO-8601") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        seconds = parsed.timestamp()
    elif isinstance(value, int) and not 0 <= value <= MAX_TIMESTAMP:
        raise ValueError("timestamp is outside 1970..9999 in epoch seconds")
    else:
        seconds = float(value)
    if not (math.isfinite(seconds) and 0 <= seconds <= MAX_TIMESTAMP):
        raise ValueError("timestamp is outside 1970..9999 in epoch seconds")
    return seconds


class EventIn(_Body):
    """One behaviour event in original ids."""

    user_id: StrictStr = Field(description=f"original user id (1..{MAX_ID_LENGTH} characters)", examples=["196"])
    item_id: StrictStr = Field(description=f"original item id (1..{MAX_ID_LENGTH} characters)", examples=["242"])
    type: StrictStr = Field(description=f"event type: view, click, rating… (≤ {MAX_TYPE_LENGTH})", examples=["view"])
    timestamp: StrictInt | StrictFloat | StrictStr = Field(
        description="epoch seconds, or an ISO-8601 string (UTC when it has no offset)",
        examples=[1700000000, "2024-05-01T12:00:00Z"],
    )
    value: StrictFloat | StrictInt | None = Field(None, description="optional value such as a rating")


@dataclass(frozen=True)
class CleanEvent:
    """An accepted event, ready to store."""

    user_id: str
    item_id: str
    type: str
    timestamp: float
    value: float | None


def check_event(event: EventIn) -> CleanEvent | str:
    """The cleaned event, or the reason it is rejected."""
    for value, what, limit in (
        (event.user_id, "user_id", MAX_ID_LENGTH),
        (event.item_id, "item_id", MAX_ID_LENGTH),
        (event.type, "type", MAX_TYPE_LENGTH),
    ):
        problem = id_problem(value, what, limit)
        if problem:
            return problem
    try:
        timestamp = parse_timestamp(event.timestamp)
    except ValueError as exc:
        return str(exc)
    try:
        value = None if event.value is None else float(event.value)
    except OverflowError:
        return "value is out of range"
    if value is not None and not math.isfinite(value):
        return "value is out of range"
    return CleanEvent(event.user_id, event.item_id, event.type, timestamp, value)


class EventBatch(_Body):
    """A batch of events; a retried batch with the same `Idempotency-Key` header is stored once."""

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class Rejection(BaseModel):
    """Why one event of a batch was not stored."""

    index: int = Field(description="position of the event in the batch (0-based)")
    reason: str


class EventsAccepted(BaseModel):
    """Outcome of a batch: every accepted event is committed before this reply is sent."""

    accepted: int
    rejected: list[Rejection]
    unknown_items: int = Field(description="accepted events whose item is not in the model's catalogue")
    replayed: bool = Field(False, description="true when this reply repeats an earlier batch with the same key")


class Influence(BaseModel):
    """A past event and how much it raised one recommended item's score."""

    item_id: str
    title: str = Field(description="the past item's title, as plain text")
    weight: float = Field(description="that item's score minus its score with this event removed (> 0)")


class RecommendedItem(BaseModel):
    """One recommended item."""

    item_id: str
    title: str
    score: float
    because: list[Influence] | None = Field(
        None, description="with explain=true: the (at most 3) past events that most raise this item's score"
    )


class Recommendations(BaseModel):
    """Top-k items after a user's (or a session's) live history."""

    user_id: str | None
    model_version: str
    fallback: Literal["popularity"] | None = Field(
        None, description="'popularity' when there was no usable history (unknown user or only unknown items)"
    )
    history_length: int = Field(description="known items in the history the model read")
    unknown_items: int = Field(description="events of the history whose item the model does not know (skipped)")
    skipped_candidates: list[str] = Field(default_factory=list, description="candidate ids not in the catalogue")
    items: list[RecommendedItem]


class SessionRequest(_Body):
    """An anonymous session: its item ids in time order, oldest first."""

    item_ids: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
    k: int = Field(10, ge=1, le=MAX_K)
    exclude_seen: bool = EXCLUDE_SEEN_DEFAULT
    explain: bool = False
    exclude: list[Id] = Field(default_factory=list, max_length=MAX_LIST)
    candidates: list[Id] | None = Field(None, max_length=MAX_LIST)


class PredictRequest(_Body):
    """A user and candidate items for the behaviour classifier."""

    user_id: Id
    item_ids: list[Id] = Field(min_length=1, max_length=100)


class Prediction(BaseModel):
    """The probability of the behaviour for one item."""

    item_id: str
    title: str
    probability: float
    seen: bool


class Predictions(BaseModel):
    """The classifier's probabilities for a user."""

    user_id: str
    label: str
    predictions: list[Prediction]


class SimilarItem(BaseModel):
    """An item and its cosine similarity to the query item."""

    item_id: str
    title: str
    score: float


class SimilarItems(BaseModel):
    """Nearest items by cosine over the model's output item embeddings."""

    item_id: str
    model_version: str
    items: list[SimilarItem]


class HistoryEvent(BaseModel):
    """One event of a user's history."""

    item_id: str
    title: str = Field(description="the item's display title (its id when the catalogue does not know it)")
    type: str | None
    timestamp: float
    value: float | None
    source: Literal["dataset", "stored"] = Field(description="training data, or posted to this service")


class History(BaseModel):
    """A user's most recent events (at most 1,000), oldest first."""

    user_id: str
    events: list[HistoryEvent]
    truncated: bool = Field(description="true when older events were left out")


class UserList(BaseModel):
    """User ids starting with a prefix (the served dataset's and the store's), in code-point order."""

    users: list[str]
    truncated: bool = Field(description="true when more users match than `limit`")


class AuthInfo(BaseModel):
    """What needs an API key on this service, and whether the key sent with this request is valid."""

    reads: Literal["public", "key"]
    writes: Literal["public", "key"]
    key: Literal["valid", "invalid", "absent"] = Field(description="the bearer key of this request")


class Erased(BaseModel):
    """Outcome of erasing a user's stored events."""

    user_id: str
    deleted: int


class ItemIn(_Body):
    """An item with its text (what a language model reads) and an optional display title."""

    item_id: Id
    text: StrictStr = Field(min_length=1, max_length=MAX_TEXT_LENGTH)
    title: StrictStr | None = Field(None, max_length=1000)


class ItemBatch(_Body):
    """Items to add or update."""

    items: list[ItemIn] = Field(min_length=1, max_length=MAX_BATCH)


class ItemsStored(BaseModel):
    """Outcome of adding items: they are recommendable from the returned model version on."""

    added: int
    updated: int
    model_version: str


class Reloaded(BaseModel):
    """The version served after a reload."""

    model_version: str
    changed: bool


class Status(BaseModel):
    """Liveness or readiness: "degraded" while the source asks for a version that is not served (`detail`
    says why: not loaded yet, fails to load, or another dataset); the served one keeps answering."""

    status: Literal["ok", "degraded", "unavailable"]
    model_version: str | None = Field(None, description="the version served")
    promoted_version: str | None = Field(None, description="the version the registry promotes (a run: its name)")
    detail: str | None = None


class Problem(BaseModel):
    """An error reply: one sentence saying what was wrong."""

    detail: str


class FieldError(BaseModel):
    """One invalid part of a request: where (e.g. ["body", "item_ids", "0"]), what is wrong, and its kind."""

    loc: list[str]
    msg: str
    type: str


class Invalid(BaseModel):
    """A 422 reply: one sentence, or (for a request that does not fit its schema) the invalid fields."""

    detail: str | list[FieldError]
