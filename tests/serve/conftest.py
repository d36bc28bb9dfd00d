"""Serving fixtures: one tiny SASRec run per session, app clients over fresh stores, a real PostgreSQL."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from serve_helpers import KEY, ServerProcess
from transformers import BertConfig, BertModel, BertTokenizer

from lmrec.models.classifier import make_config
from lmrec.serve.app import create_app
from lmrec.serve.service import ServiceConfig
from lmrec.training.classifier import train_run


@pytest.fixture(scope="session")
def classifier_run(prepared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A behaviour classifier (sampled negatives) on a 2-layer, 32-wide BERT with a tiny vocabulary."""
    root = tmp_path_factory.mktemp("classifier")
    vocab = root / "bert" / "vocab.txt"
    vocab.parent.mkdir()
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "item", "no", "events"]) + "\n")
    tokenizer = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)  # fmt: skip
    BertModel(config).save_pretrained(vocab.parent)
    tokenizer.save_pretrained(vocab.parent)
    settings = make_config(
        label="sampled", encoder=str(vocab.parent), max_length=48, history=4, max_train_examples=32,
        max_valid_examples=16, max_test_examples=16, batch_size=8, eval_every=4, epochs=1, seed=0,
    )  # fmt: skip
    train_run(prepared, root / "run", settings)
    return root / "run"


@pytest.fixture
def make_client(tiny_run: Path, tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    """Build TestClients over the tiny run with a fresh SQLite store and one API key (overridable)."""
    clients: list[TestClient] = []

    def _make(**overrides) -> TestClient:
        settings = {
            "source": tiny_run,
            "store_url": f"sqlite:///{tmp_path / 'events.sqlite'}",
            "api_keys": frozenset({KEY}),
            "poll_interval": 0,
            **overrides,
        }
        client = TestClient(create_app(ServiceConfig(**settings)), raise_server_exceptions=False)
        clients.append(client)
        return client

    yield _make
    for client in clients:
        client.app.state.service.close()


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    """A client over the tiny run with a fresh store."""
    return make_client()


@pytest.fixture(scope="session")
def pg_admin_url() -> str:
    """$LMREC_TEST_PG_URL of a real PostgreSQL server: skipped locally without one, failed on CI."""
    url = os.environ.get("LMREC_TEST_PG_URL")
    problem = None if url else "LMREC_TEST_PG_URL is not set"
    if url:
        from sqlalchemy import create_engine, text

        from lmrec.serve.store import engine_url

        try:
            engine = create_engine(engine_url(url))
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            engine.dispose()
        except Exception as exc:
            problem = f"cannot reach PostgreSQL at LMREC_TEST_PG_URL ({exc.__class__.__name__})"
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI must provide a PostgreSQL server (.ci/run starts one).")
        pytest.skip(problem)
    return url


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A store URL whose tables live in a fresh schema of the test server, dropped afterwards."""
    from sqlalchemy import create_engine, text

    from lmrec.serve.store import engine_url

    schema = f"lmrec_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(engine_url(pg_admin_url))
    with engine.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in pg_admin_url else "?"
    yield f"{pg_admin_url}{separator}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Start `lmrec serve` subprocesses; every one still running is stopped after the test."""
    started: list[ServerProcess] = []

    def _start(*args: str) -> ServerProcess:
        process = ServerProcess(list(args), tmp_path / "server.log")
        started.append(process)
        process.wait_ready()
        return process

    yield _start
    for process in started:
        process.stop()
