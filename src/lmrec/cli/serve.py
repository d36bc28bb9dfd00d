"""`lmrec serve` and `lmrec registry`: parsing only; the work is in `lmrec.serve` and `lmrec.registry.versions`.

FastAPI, uvicorn and torch are imported inside the commands so that `lmrec --help` stays fast.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from lmrec.errors import Interrupted, LmrecError, RunError

console = Console(soft_wrap=True)
registry_app = typer.Typer(no_args_is_help=True, help="Numbered model versions: add, promote, roll back, list, show.")

RegistryOption = typer.Option(None, "--registry", help="Registry directory (default $LMREC_REGISTRY or ./registry).")
NewCatalogueOption = typer.Option(
    False, "--allow-new-catalogue", help="Allow a version trained on another dataset than the promoted one."
)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    source: Path = typer.Argument(..., help="A run directory, or a registry directory (serves its promoted version)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on (other than loopback: API keys needed)."
    ),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port to listen on."),
    store: str = typer.Option(None, "--store", help="Event store URL (default sqlite:///SOURCE/events.sqlite)."),
    workers: int = typer.Option(1, "--workers", min=1, help="Worker processes (1 serves in this process)."),
    api_keys_file: Path = typer.Option(None, "--api-keys-file", help="API keys, one per line (also $LMREC_API_KEYS)."),
    public_reads: bool = typer.Option(False, "--public-reads", help="Reads need no API key (writes still do)."),
    classifier: Path = typer.Option(None, "--classifier", help="A behaviour classifier run for /v1/predict."),
    poll: float = typer.Option(2.0, "--poll", help="Seconds between checks for a new promoted version (0: never)."),
    history_ttl: float = typer.Option(
        None, "--history-ttl", help="Seconds a cached history lives (default: forever with one SQLite writer, else 2)."
    ),
    allow_new_catalogue: bool = typer.Option(
        False,
        "--allow-new-catalogue",
        help="Hot-swap to a promoted version trained on another dataset (default: refused until a restart).",
    ),
    log_level: str = typer.Option(
        "info", "--log-level", help="uvicorn's log level: critical, error, warning, info, debug or trace."
    ),
    feedback_log: Path = typer.Option(
        None,
        "--feedback-log",
        help="Online feedback log (default: REGISTRY/feedback/served-PID.jsonl; none for a run).",
    ),
    feedback_window: int = typer.Option(
        1, "--feedback-window", min=1, help="A recommendation not hit within the user's next N events is a miss."
    ),
    backend: str = typer.Option(
        "torch", "--backend", help="torch, or onnx: score with the run's ONNX export (lmrec export RUN --format onnx)."
    ),
    export: Path = typer.Option(
        None, "--export", metavar="DIR", help="The ONNX export for --backend onnx (default: RUN/export)."
    ),
) -> None:
    """Serve recommendations over HTTP (FastAPI under uvicorn) with a durable event store."""
    import uvicorn

    from lmrec.serve.auth import load_keys

    if backend not in ("torch", "onnx"):
        raise LmrecError(f"--backend must be torch or onnx, not {backend!r}.")
    if export is not None and backend != "onnx":
        raise LmrecError("--export names an ONNX export: add --backend onnx.")

    keys = load_keys(api_keys_file)
    if not keys and not _loopback(host):
        raise LmrecError(
            f"refusing to serve on {host} without API keys; set LMREC_API_KEYS or --api-keys-file "
            "(an open service is allowed on 127.0.0.1 only)."
        )
    shared = workers > 1 or (store is not None and not store.startswith("sqlite"))
    ttl = history_ttl if history_ttl is not None else (2.0 if shared else None)
    settings = {
        "source": str(source),
        "store_url": store,
        "public_reads": public_reads,
        "classifier": str(classifier) if classifier else None,
        "poll_interval": poll,
        "history_ttl": ttl,
        "allow_new_catalogue": allow_new_catalogue,
        "feedback_log": str(feedback_log) if feedback_log else None,
        "feedback_window": feedback_window,
        "backend": backend,
        "export_dir": str(export) if export else None,
    }
    options = {"host": host, "port": port, "log_level": log_level, "access_log": False}
    if workers > 1:
        from lmrec.serve.app import CONFIG_ENV

        keys_file = str(api_keys_file) if api_keys_file else None
        os.environ[CONFIG_ENV] = json.dumps({**settings, "api_keys_file": keys_file})
        with _graceful_stop():
            uvicorn.run("lmrec.serve.app:app_from_env", factory=True, workers=workers, **options)
        return
    from lmrec.serve.app import create_app
    from lmrec.serve.service import ServiceConfig

    config = ServiceConfig(
        source=source,
        store_url=store,
        api_keys=keys,
        public_reads=public_reads,
        classifier=classifier,
        poll_interval=poll,
        history_ttl=ttl,
        allow_new_catalogue=allow_new_catalogue,
        feedback_log=feedback_log,
        feedback_window=feedback_window,
        backend=backend,
        export_dir=export,
    )
    with _graceful_stop():
        uvicorn.Server(uvicorn.Config(create_app(config), **options)).run()


@contextmanager
def _graceful_stop() -> Iterator[None]:
    """uvicorn stops gracefully on SIGINT / SIGTERM (requests in flight finish, every acknowledged event is
    stored), then raises the signal again; that is a normal stop: say so and exit 0."""
    try:
        yield
    except Interrupted as exc:
        name = signal.Signals(exc.signum).name
        console.print(f"lmrec serve: stopped by {name} after a graceful shutdown; every acknowledged event is stored.")


@registry_app.command("add")
def registry_add(
    run: Path = typer.Argument(..., help="A finished run directory."),
    registry: Path = RegistryOption,
    promote: bool = typer.Option(False, "--promote", help="Also promote the new version."),
    allow_new_catalogue: bool = NewCatalogueOption,
) -> None:
    """Register a run as the next numbered version (a copy of its model, config and metrics)."""
    from lmrec.registry.versions import ModelRegistry

    version = ModelRegistry(registry).add(run, promote=promote, allow_new_catalogue=allow_new_catalogue)
    console.print(f"added version {version.version} ({version.model}, data {version.fingerprint[:12]})"
                  + (" and promoted it" if promote else ""))  # fmt: skip


@registry_app.command("promote")
def registry_promote(
    version: int = typer.Argument(..., help="Version number."),
    registry: Path = RegistryOption,
    allow_new_catalogue: bool = NewCatalogueOption,
) -> None:
    """Serve this version (services on the registry switch within a few seconds; a version trained on
    another dataset needs --allow-new-catalogue here, and services switch to it only when restarted or
    started with --allow-new-catalogue)."""
    from lmrec.registry.versions import ModelRegistry

    ModelRegistry(registry).promote(version, allow_new_catalogue=allow_new_catalogue)
    console.print(f"promoted version {version}")


@registry_app.command("rollback")
def registry_rollback(registry: Path = RegistryOption) -> None:
    """Serve again the version promoted before the current one."""
    from lmrec.registry.versions import ModelRegistry

    version = ModelRegistry(registry).rollback()
    console.print(f"rolled back to version {version.version}")


@registry_app.command("list")
def registry_list(registry: Path = RegistryOption) -> None:
    """Every version with its model, data hash and test metrics; the promoted one is marked."""
    from lmrec.registry.versions import ModelRegistry

    reg = ModelRegistry(registry)
    versions = reg.versions()
    if not versions:
        console.print(f"registry {reg.root} has no versions yet; add one with `lmrec registry add RUN`.")
        return
    promoted = reg.promoted()
    keys = [k for k in ("ndcg@10", "hr@10") if k in versions[-1].metrics.get("test", {})]
    table = Table(title=f"registry {reg.root}")
    for column in ("version", "", "model", "data hash", *(f"test {k}" for k in keys), "source"):
        table.add_column(column)
    for v in versions:
        marker = "promoted" if promoted is not None and v.version == promoted.version else ""
        scores = [f"{v.metrics.get('test', {}).get(k, float('nan')):.4f}" for k in keys]
        table.add_row(str(v.version), marker, v.model, v.fingerprint[:12], *scores, v.source)
    console.print(table)


@registry_app.command("show")
def registry_show(
    version: int = typer.Argument(None, metavar="VERSION", help="Version number (default: the promoted one)."),
    registry: Path = RegistryOption,
) -> None:
    """One version: model, data, test metrics, and online figures from the services' feedback logs."""
    from lmrec.registry.versions import ModelRegistry

    reg = ModelRegistry(registry)
    promoted = reg.promoted()
    if version is None and promoted is None:
        raise RunError(f"registry {reg.root} has no promoted version; name one: `lmrec registry show VERSION`.")
    entry = reg.get(version) if version is not None else promoted
    marker = " (promoted)" if promoted is not None and entry.version == promoted.version else ""
    lines = [
        f"version {entry.version}{marker}",
        f"model: {entry.model}",
        f"dataset: {entry.dataset} (data {entry.fingerprint[:12]})",
        f"source: {entry.source}",
        f"added: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(entry.added_at))}",
    ]
    for split, scores in entry.metrics.items():
        shown = [f"{k} {_figure(scores[k])}" for k in SHOWN_METRICS if k in scores]
        lines.append(f"{split}: {', '.join(shown) or 'no metrics'}")
    lines += _retrain_lines(entry)
    lines.append(_online(reg.root, entry.version))
    console.print("\n".join(lines), markup=False, highlight=False)


SHOWN_METRICS = ("hr@5", "hr@10", "ndcg@10", "coverage@10")  # the offline twins of the online figures


def _online(root: Path, version: int) -> str:
    """The online figures of a version, aggregated from the registry's feedback logs, as one line."""
    from lmrec.registry.feedback import RANKS, feedback_dir, read_feedback

    folder = feedback_dir(root)
    summary = read_feedback(folder)
    where = f"{summary.files} feedback log(s) in {folder}"
    if summary.skipped:
        where += f", {summary.skipped} malformed line(s) skipped"
    figures = summary.versions.get(str(version))
    if figures is None:
        return f"online: nothing served by version {version} yet ({where})"
    hit_rates = ", ".join(f"HR@{k} {_figure(figures.hit_rate(k))}" for k in RANKS)
    return (
        f"online: {figures.served} served, {figures.resolved} resolved, {hit_rates}, "
        f"NDCG@10 {_figure(figures.ndcg)}, coverage@10 {_figure(figures.coverage)} ({where})"
    )


def _retrain_lines(entry) -> list[str]:
    """Lineage and gate result of a version made by `lmrec retrain` (none for one added by hand)."""
    lines = []
    lineage, gate = entry.lineage, entry.gate
    if lineage:
        lines.append(
            f"lineage: from version {lineage.get('parent_version')}, {lineage.get('events_used', 0):,} new events "
            f"(store ids up to {lineage.get('events_through')}), snapshot {str(lineage.get('snapshot', ''))[:12]}"
        )
    if gate:
        lines.append(
            f"gate: NDCG@10 {_figure(gate.get('candidate'))} against {_figure(gate.get('current'))} of version "
            f"{lineage.get('parent_version')} on the last {gate.get('window', {}).get('events', 0):,} events; "
            f"{gate.get('reason')} → {'promoted' if gate.get('promoted') else 'not promoted'}"
        )
    return lines


def _figure(value: object) -> str:
    """A metric with 4 decimals; n/a before it can be computed (or when it is not a number)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.4f}"
    return "n/a"


def register(app: typer.Typer) -> None:
    """Attach `serve` and the `registry` group to the main app."""
    app.command()(serve)
    app.add_typer(registry_app, name="registry")
