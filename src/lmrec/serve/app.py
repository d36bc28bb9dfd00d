"""The HTTP layer: FastAPI routes under /v1, API-key dependencies, body limits and error replies.

Reads that only touch memory are `async` and run on the event loop (no thread hop); anything that waits
on the disk or the database (writes, history, predictions, reloads) is a plain function that FastAPI runs
in its thread pool. Every error a client can cause is a 4xx with one sentence in `detail`.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request, Security
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from prometheus_client import CONTENT_TYPE_LATEST

from lmrec.config import EXCLUDE_SEEN_DEFAULT
from lmrec.errors import BackendUnsupported, ExplanationUnavailable, LmrecError
from lmrec.serve import schemas as s
from lmrec.serve.auth import ApiKeys, bearer, load_keys
from lmrec.serve.engine import Unsupported
from lmrec.serve.inputs import StrictJSONRoute, ValidURL
from lmrec.serve.metrics import MetricsMiddleware
from lmrec.serve.page import add_page
from lmrec.serve.service import (
    BatchRejected,
    CatalogueChanged,
    LoadFailed,
    NotConfigured,
    NotFound,
    Service,
    ServiceConfig,
)
from lmrec.serve.store import IdempotencyConflict
from lmrec.version import __version__

log = logging.getLogger(__name__)

CONFIG_ENV = "LMREC_SERVE_CONFIG"
_ERRORS = {401: "missing or invalid API key", 404: "unknown user or item", 409: "the model cannot do this",
           413: "request body too large", 422: "invalid input",
           503: "the version the source asks for cannot be loaded"}  # fmt: skip
LOC_LIMIT = 64  # characters of a field name shown in a validation error (names come from the request)
_STATUS = [
    (BatchRejected, 422),
    (IdempotencyConflict, 422),
    (ExplanationUnavailable, 422),
    (s.InvalidInput, 422),
    (NotFound, 404),
    (Unsupported, 409),
    (BackendUnsupported, 409),
    (CatalogueChanged, 409),
    (LoadFailed, 503),
    (NotConfigured, 501),
]


def _responses(*codes: int) -> dict:
    return {code: {"model": s.Invalid if code == 422 else s.Problem, "description": _ERRORS.get(code, "error")}
            for code in codes}  # fmt: skip


class BodyLimit:
    """Refuse request bodies above `limit` bytes with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": self._message()}, 413)(scope, receive, send)
            return
        received = 0

        async def limited():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)

    def _message(self) -> str:
        return f"the request body is larger than {self.limit:,} bytes; send smaller batches."


def _checked_id(value: str, what: str) -> str:
    """A path id, whose length its PathParam already bounds."""
    problem = s.text_problem(value, what)
    if problem:
        raise s.InvalidInput(problem)
    return value


def _id_list(text: str | None, what: str) -> list[str] | None:
    """Comma-separated ids from a query parameter (None when absent), each checked like any other id."""
    if text is None:
        return None
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if len(ids) > s.MAX_LIST:
        raise s.InvalidInput(f"{what} holds more than {s.MAX_LIST} ids.")
    for position, item_id in enumerate(ids):
        problem = s.id_problem(item_id, "id")
        if problem:
            raise s.InvalidInput(f"{what}: the id at position {position} is invalid ({problem}).")
    return ids


def _body_hash(batch: s.EventBatch) -> str:
    return hashlib.sha256(json.dumps(batch.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not (1 <= len(value) <= 255) or not value.isascii() or not value.isprintable():
        raise s.InvalidInput("Idempotency-Key must be 1 to 255 printable ASCII characters.")
    return value


UserId = Annotated[str, PathParam(max_length=s.MAX_ID_LENGTH, description="original user id")]
ItemId = Annotated[str, PathParam(max_length=s.MAX_ID_LENGTH, description="original item id")]


def create_app(config: ServiceConfig | None = None, service: Service | None = None) -> FastAPI:
    """The FastAPI app over a Service (built from `config` unless given); the watcher runs in its lifespan."""
    service = service or Service(config)
    keys = ApiKeys(service.config.api_keys, service.config.public_reads)
    reader, writer = [Depends(keys.reader)], [Depends(keys.writer)]

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start_watching()
        # The loaded model, dataset and catalogue are millions of long-lived objects: left to the cyclic
        # collector, each full collection walks them all and stalls every request in flight (tens of ms).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            service.close()

    app = FastAPI(
        title="lmrec",
        version=__version__,
        summary="Next-item recommendations from live behaviour histories.",
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute
    app.state.service = service
    _errors(app)

    @app.get("/healthz", response_model=s.Status, tags=["ops"])
    async def healthz() -> s.Status:
        """Liveness: the process answers."""
        return s.Status(status="ok", model_version=service.engine.version)

    @app.get("/readyz", response_model=s.Status, tags=["ops"], responses={503: {"model": s.Status}})
    def readyz() -> s.Status | JSONResponse:
        """Readiness: the event store answers (else 503) and a model is served; "degraded" (still 200, the
        served version keeps answering) while the source asks for a version that is not served."""
        try:
            service.store.ping()
        except Exception as exc:  # any store failure means "not ready", never a 500
            status = s.Status(status="unavailable", detail=f"event store: {exc.__class__.__name__}")
            return JSONResponse(status.model_dump(), 503)
        return service.readiness()

    @app.get("/metrics", tags=["ops"], response_class=Response)
    def metrics() -> Response:
        """Prometheus metrics: requests, latencies, events, model version."""
        return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/auth", response_model=s.AuthInfo, tags=["ops"])
    async def auth(credentials: HTTPAuthorizationCredentials | None = Security(bearer)) -> s.AuthInfo:
        """What needs an API key, and whether the one sent is valid; it needs none, so a client can ask first."""
        return keys.describe(credentials)

    @app.post("/v1/events", response_model=s.EventsAccepted, dependencies=writer, tags=["events"],
              responses=_responses(401, 413, 422))  # fmt: skip
    def post_events(
        batch: s.EventBatch,
        idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    ) -> s.EventsAccepted:
        """Store a batch of events; a 2xx means every accepted event is committed to disk."""
        return service.post_events(batch, _idempotency_key(idempotency_key), _body_hash(batch))

    @app.get("/v1/users/{user_id}/recommendations", response_model=s.Recommendations, dependencies=reader,
             tags=["recommendations"], responses=_responses(401, 409, 422))  # fmt: skip
    async def user_recommendations(
        user_id: UserId,
        k: Annotated[int, Query(ge=1, le=s.MAX_K)] = 10,
        exclude_seen: bool = EXCLUDE_SEEN_DEFAULT,
        explain: bool = False,
        exclude: Annotated[str | None, Query(max_length=100_000, description="comma-separated item ids")] = None,
        candidates: Annotated[
            str | None, Query(max_length=100_000, description="comma-separated item ids to rank (only these)")
        ] = None,
    ) -> Response:
        """Top-k items after the user's live history (training data plus every stored event)."""
        answer = service.recommend_user(
            _checked_id(user_id, "user_id"), k, exclude_seen, explain,
            _id_list(exclude, "exclude") or [], _id_list(candidates, "candidates"),
        )  # fmt: skip
        return Response(answer.body, media_type="application/json")  # encoded once per remembered reply

    @app.post("/v1/recommendations", response_model=s.Recommendations, dependencies=reader,
              tags=["recommendations"], responses=_responses(401, 409, 413, 422))  # fmt: skip
    async def session_recommendations(request: s.SessionRequest) -> s.Recommendations:
        """Top-k items after an anonymous session's items."""
        return service.recommend_session(request)

    @app.post("/v1/predict", response_model=s.Predictions, dependencies=reader, tags=["classifier"],
              responses={**_responses(401, 404, 413, 422), 501: {"model": s.Problem}})  # fmt: skip
    def predict(request: s.PredictRequest) -> s.Predictions:
        """Probability of the classifier's behaviour (e.g. rating ≥ 4) for a user and candidate items."""
        return service.predict(request)

    @app.get("/v1/items/{item_id}/similar", response_model=s.SimilarItems, dependencies=reader, tags=["items"],
             responses=_responses(401, 404, 409, 422))  # fmt: skip
    async def similar(item_id: ItemId, k: Annotated[int, Query(ge=1, le=s.MAX_K)] = 10) -> s.SimilarItems:
        """Items nearest to this one by cosine over the model's output item embeddings."""
        return service.similar(_checked_id(item_id, "item_id"), k)

    @app.get("/v1/users/{user_id}/history", response_model=s.History, dependencies=reader, tags=["users"],
             responses=_responses(401, 404, 422))  # fmt: skip
    def history(user_id: UserId) -> s.History:
        """The user's most recent 1,000 events (training data, then stored), oldest first."""
        return service.history(_checked_id(user_id, "user_id"))

    @app.get("/v1/users", response_model=s.UserList, dependencies=reader, tags=["users"],
             responses=_responses(401, 422))  # fmt: skip
    def users(
        prefix: Annotated[str, Query(max_length=s.MAX_ID_LENGTH, pattern=s.NO_CONTROL)] = "",
        limit: Annotated[int, Query(ge=1, le=s.MAX_LIST)] = 20,
    ) -> s.UserList:
        """User ids that start with `prefix`, from the served dataset and the event store, in code-point order."""
        return service.users(prefix, limit)

    @app.delete("/v1/users/{user_id}", response_model=s.Erased, dependencies=writer, tags=["users"],
                responses=_responses(401, 404, 422))  # fmt: skip
    def erase(user_id: UserId) -> s.Erased:
        """Erase the user's stored events; they stop influencing recommendations at once."""
        return service.erase(_checked_id(user_id, "user_id"))

    @app.post("/v1/items", response_model=s.ItemsStored, dependencies=writer, tags=["items"],
              responses=_responses(401, 409, 413, 422))  # fmt: skip
    def add_items(batch: s.ItemBatch) -> s.ItemsStored:
        """Add or update items with text; with an lmrec model they are recommendable at once."""
        return service.add_items(batch)

    @app.post("/v1/admin/reload", response_model=s.Reloaded, dependencies=writer, tags=["admin"],
              responses=_responses(401, 409, 503))  # fmt: skip
    def reload(force: bool = False) -> s.Reloaded:
        """Load the registry's promoted version (or the run again) and swap it in without dropping requests.

        409: the version was trained on another dataset (see --allow-new-catalogue); 503: it cannot be loaded.
        Either way the served version keeps serving; `force=true` tries a refused version again."""
        return service.reload(force=force)

    add_page(app)
    app.add_middleware(BodyLimit, limit=service.config.max_body_bytes)
    app.add_middleware(ValidURL)
    app.add_middleware(MetricsMiddleware, metrics=service.metrics)
    return app


def _errors(app: FastAPI) -> None:
    """Map service errors to 4xx/501 replies and anything unexpected to a logged, generic 500."""

    @app.exception_handler(LmrecError)
    async def lmrec_error(_: Request, exc: LmrecError) -> JSONResponse:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 422)
        body: dict = {"detail": str(exc)}
        if isinstance(exc, BatchRejected):
            body["rejected"] = [r.model_dump() for r in exc.rejected]
        return JSONResponse(body, status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        """422 naming each invalid field; the offending input is not echoed (it may be huge or not JSON-safe)."""
        errors = [{"loc": [_loc_part(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type"))} for e in exc.errors()]  # fmt: skip
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error; the service logged it."}, 500)


def _loc_part(part: object) -> str:
    """One step of an error location, cut to LOC_LIMIT characters (field names can be anything a client sent)."""
    text = str(part)
    return text if len(text) <= LOC_LIMIT else text[:LOC_LIMIT] + "…"


def app_from_env() -> FastAPI:
    """App factory for `uvicorn --factory` workers: the config comes as JSON in $LMREC_SERVE_CONFIG."""
    raw = json.loads(os.environ[CONFIG_ENV])
    raw["source"] = Path(raw["source"])
    raw["classifier"] = Path(raw["classifier"]) if raw.get("classifier") else None
    raw["api_keys"] = load_keys(raw.pop("api_keys_file", None))
    return create_app(ServiceConfig(**raw))
