"""Hyper-parameter search (`lmrec tune`): Optuna's TPE sampler over a model's search space, each trial a
training run, trials pruned on their validation metric per evaluation by a median rule.

The tuning folder holds `study.sqlite3` (the Optuna study: rerunning the same command resumes it, and
finished trials count toward `trials`), `trials/<n>/` (each trial's run folder), `best.yaml` (the best
trial's full config, for `lmrec train --config`) and `best.json` (its number, value and sampled values).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from lmrec.atomic import atomic_write_json, atomic_write_text
from lmrec.config import RunConfig, build_config
from lmrec.data.dataset import PreparedDataset
from lmrec.errors import ConfigError, Interrupted, RunError
from lmrec.locks import file_lock
from lmrec.registry.run import RunDir
from lmrec.training.runs import train
from lmrec.training.search import Dimension, describe, load_space, space_path, trial_config

log = logging.getLogger(__name__)

STUDY = "lmrec-tune"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def tune(
    data: str | Path,
    out: str | Path,
    model: str = "sasrec",
    trials: int = 20,
    timeout: float | None = None,
    space: str | Path | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
    progress: bool = False,
    pruner: optuna.pruners.BasePruner | None = None,
) -> dict[str, Any]:
    """Search a model's hyper-parameters on a prepared dataset's validation split; return the trials and best.

    Every trial starts from the model's shipped config with `overrides` and `seed`, plus the values it
    samples from `space` (default `configs/<model>.search.yaml`). The search stops when `trials` trials
    have finished (those of earlier runs of the study included) or, between trials, once `timeout`
    seconds have passed. `pruner` replaces the default `MedianPruner`.
    """
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # lmrec logs each trial itself
    dataset = PreparedDataset.load(data)
    base = build_config(model, None, overrides, seed)
    space_file = Path(space) if space is not None else space_path(base.model_name)
    dimensions = load_space(space_file, base)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    busy = f"another `lmrec tune` is searching in {out}; wait for it or give another --out."
    with file_lock(out / ".lock", wait=0, busy=lambda: RunError(busy)):
        setup = {
            "model": base.model_name,
            "dataset": dataset.fingerprint,
            "space": _spec(dimensions),
            "base": base.model_dump(mode="json"),
        }
        study = _open_study(out, setup, base.seed, pruner or optuna.pruners.MedianPruner())
        ran = _search(study, Path(data), out, base, dimensions, trials, timeout, progress)
        return _summary(study, out, base.eval.metric, ran)


def _spec(dimensions: list[Dimension]) -> dict[str, Any]:
    """A search space as plain JSON values, to compare a rerun's space with the study's."""
    return {d.key: [d.kind, list(d.values), d.step, d.log] for d in dimensions}


def _open_study(out: Path, setup: dict[str, Any], seed: int, pruner: optuna.pruners.BasePruner) -> optuna.Study:
    """Create the study in `out/study.sqlite3`, or load it when it holds the same search; stale trials fail.

    The sampler's seed moves on with the number of trials already asked, so a resumed search does not
    repeat the samples of its first run.
    """
    storage = optuna.storages.RDBStorage(f"sqlite:///{out / 'study.sqlite3'}")
    known = STUDY in optuna.study.get_all_study_names(storage)
    asked = len(optuna.load_study(study_name=STUDY, storage=storage).trials) if known else 0
    sampler = optuna.samplers.TPESampler(seed=seed + asked)
    study = optuna.create_study(
        storage=storage, study_name=STUDY, direction="maximize", sampler=sampler, pruner=pruner, load_if_exists=True
    )
    if not known:
        study.set_user_attr("setup", setup)
    _check_same_search(out, study.user_attrs.get("setup", {}), setup)
    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):  # the lock is ours: nobody runs it
        study.tell(stale.number, state=TrialState.FAIL)
    return study


def _check_same_search(out: Path, saved: dict[str, Any], setup: dict[str, Any]) -> None:
    """Refuse to resume a study with another model, dataset, search space or settings."""
    names = {
        "model": "model",
        "dataset": "dataset preparation",
        "space": "search space",
        "base": "config (--set, --seed)",
    }
    changed = [names[key] for key in names if saved.get(key) != setup[key]]
    if changed:
        raise ConfigError(
            f"{out} holds a search that differs in its {changed[0]}; "
            "rerun the command that started it to resume it, or give another --out."
        )


def _finished(study: optuna.Study) -> int:
    """Trials that ran to the end or were pruned: what counts toward `--trials`."""
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def _search(
    study: optuna.Study,
    data: Path,
    out: Path,
    base: RunConfig,
    dimensions: list[Dimension],
    trials: int,
    timeout: float | None,
    progress: bool,
) -> int:
    """Run trials until `trials` have finished or the time is up; return how many this call ran."""
    started, ran = time.monotonic(), 0
    while _finished(study) < trials and (timeout is None or time.monotonic() - started < timeout):
        _trial(study, data, out, base, dimensions, progress)
        ran += 1
    return ran


def _trial(
    study: optuna.Study, data: Path, out: Path, base: RunConfig, dimensions: list[Dimension], progress: bool
) -> None:
    """Sample one config, train it into `trials/<n>/` with pruning, and tell the study how it ended."""
    trial = study.ask()
    config = trial_config(base, {d.key: d.suggest(trial) for d in dimensions})
    run = out / "trials" / str(trial.number)
    trial.set_user_attr("run", str(run.relative_to(out)))
    hook, pruned = _pruning_hook(trial, config.eval.metric)
    try:
        metrics = train(data, run, config=config, overwrite=True, progress=progress, on_validation=hook)
    except (Interrupted, KeyboardInterrupt) as exc:
        study.tell(trial, state=TrialState.FAIL)
        if isinstance(exc, Interrupted):
            exc.message = (
                f"search interrupted in trial {trial.number}; its {_finished(study)} finished trials are kept in "
                f"{out / 'study.sqlite3'}: rerun the same command to go on."
            )
        raise
    except Exception:
        study.tell(trial, state=TrialState.FAIL)
        raise
    told = (
        study.tell(trial, state=TrialState.PRUNED)
        if pruned
        else study.tell(trial, metrics["valid"][config.eval.metric])
    )
    ending = f"pruned after epoch {pruned[0] + 1}" if pruned else "finished"
    log.info(
        "trial %d %s: valid %s %.4f (%s)", trial.number, ending, config.eval.metric, told.value, describe(told.params)
    )


def _pruning_hook(trial: optuna.Trial, metric: str) -> tuple[Callable[[int, dict[str, float]], str | None], list[int]]:
    """The trainer's validation hook that reports `metric` to the trial, and the epochs it pruned at."""
    pruned: list[int] = []

    def report(epoch: int, metrics: dict[str, float]) -> str | None:
        if metric not in metrics:
            return None
        trial.report(metrics[metric], epoch)
        if not trial.should_prune():
            return None
        pruned.append(epoch)
        return f"pruning by the search (valid {metric} {metrics[metric]:.4f} after epoch {epoch + 1})"

    return report, pruned


def _summary(study: optuna.Study, out: Path, metric: str, ran: int) -> dict[str, Any]:
    """Every trial (number, state, value, sampled values) and the best one, written as best.yaml and best.json."""
    rows = [
        {"number": t.number, "state": t.state.name.lower(), "value": t.value, "params": t.params}
        for t in study.get_trials(deepcopy=False)
    ]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    best = _write_best(out, study.best_trial, metric) if complete else None
    return {"study": str(out / "study.sqlite3"), "metric": metric, "ran": ran, "trials": rows, "best": best}


def _write_best(out: Path, trial: optuna.trial.FrozenTrial, metric: str) -> dict[str, Any]:
    """Write the best trial's full config as best.yaml (its score in a comment) and its record as best.json."""
    run = out / trial.user_attrs["run"]
    header = f"# lmrec tune: trial {trial.number} of {out}, valid {metric} {trial.value:.4f} (run {run})\n"
    atomic_write_text(out / "best.yaml", header + RunDir(run).config_file.read_text())
    best = {"trial": trial.number, "metric": metric, "value": trial.value, "params": trial.params, "run": str(run)}
    atomic_write_json(out / "best.json", best)
    return {**best, "config": str(out / "best.yaml")}
