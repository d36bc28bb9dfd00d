"""Search spaces of `lmrec tune`: a YAML mapping of dotted config keys to distributions, read and checked.

A space (`configs/<model>.search.yaml` beside the model's shipped config, or any file) maps each key
(`model.hidden`, `train.lr`, …) to one of `{int: [lo, hi], step: 1, log: false}`, `{float: [lo, hi],
step: null, log: false}` or `{choice: [a, b, …]}`. Every key must be a setting of the model or of the
`train` / `eval` sections, and both ends of every range (each choice) must be a valid value of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from lmrec.config import CONFIG_DIR, EvalConfig, RunConfig, TrainConfig, load_yaml, merge, validate_config
from lmrec.errors import ConfigError
from lmrec.models.base import model_class

KINDS = ("int", "float", "choice")
OPTIONS = {"int": ("step", "log"), "float": ("step", "log"), "choice": ()}


@dataclass(frozen=True)
class Dimension:
    """One searched setting: its dotted key and distribution (a range with step / log, or choices)."""

    key: str
    kind: str
    values: tuple[Any, ...]  # (lo, hi) for int and float, the choices for choice
    step: float | None = None
    log: bool = False

    def suggest(self, trial: optuna.Trial) -> Any:
        """The value an Optuna trial samples for this setting."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.values))
        lo, hi = self.values
        if self.kind == "int":
            return trial.suggest_int(self.key, lo, hi, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, lo, hi, step=self.step, log=self.log)


def describe(values: dict[str, Any]) -> str:
    """Sampled values in one short line, floats to four significant digits: `model.hidden=64, train.lr=0.00123`."""
    return ", ".join(
        f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}" for key, value in values.items()
    )


def space_path(model: str) -> Path:
    """The shipped search space of a model, `configs/<model>.search.yaml`; an error when it has none."""
    path = CONFIG_DIR / f"{model}.search.yaml"
    if not path.is_file():
        shipped = sorted(p.name.removesuffix(".search.yaml") for p in CONFIG_DIR.glob("*.search.yaml"))
        raise ConfigError(
            f"model {model!r} has no shipped search space (there are spaces for {', '.join(shipped)}); "
            "give one with --space FILE."
        )
    return path


def load_space(path: Path, base: RunConfig) -> list[Dimension]:
    """Read and check a search space against the config it varies; one-sentence errors name the file and key."""
    data = load_yaml(path)
    if not data:
        raise ConfigError(
            f"search space {path} is empty; give at least one key such as model.hidden: {{int: [32, 128]}}."
        )
    dimensions = [_dimension(path, str(key), spec) for key, spec in data.items()]
    for dimension in dimensions:
        _check_key(path, dimension, base)
    return dimensions


def _dimension(path: Path, key: str, spec: Any) -> Dimension:
    """One key's distribution, checked for shape: exactly one kind, its bounds or choices, known options."""
    where = f"search space {path}: {key}"
    kinds = [kind for kind in KINDS if isinstance(spec, dict) and kind in spec]
    if len(kinds) != 1:
        raise ConfigError(
            f"{where} needs exactly one of int, float or choice, e.g. {{int: [32, 128], step: 32}}, "
            f"{{float: [1.0e-4, 1.0e-2], log: true}} or {{choice: [0.0, 0.1]}}."
        )
    kind = kinds[0]
    unknown = sorted(set(spec) - {kind, *OPTIONS[kind]})
    if unknown:
        allowed = ", ".join(OPTIONS[kind]) or "none"
        raise ConfigError(f"{where} has unknown option {unknown[0]!r} for a {kind} distribution (allowed: {allowed}).")
    if kind == "choice":
        return Dimension(key, kind, _choices(where, spec["choice"]))
    return _range(where, key, kind, spec)


def _choices(where: str, choices: Any) -> tuple[Any, ...]:
    """The choices of a choice distribution: a non-empty list of plain values (numbers, strings, booleans, null)."""
    scalar = (bool, int, float, str, type(None))
    if not isinstance(choices, list) or not choices or not all(isinstance(c, scalar) for c in choices):
        raise ConfigError(f"{where}: choice must be a non-empty list of plain values such as [0.0, 0.1, 0.2].")
    return tuple(choices)


def _range(where: str, key: str, kind: str, spec: dict[str, Any]) -> Dimension:
    """An int or float range [lo, hi] with its optional step and log scale."""
    bounds, step, log = spec[kind], spec.get("step"), spec.get("log", False)
    number, noun = (int, "integer") if kind == "int" else ((int, float), "number")
    if not (isinstance(bounds, list) and len(bounds) == 2 and all(_is(b, number) for b in bounds)):
        raise ConfigError(f"{where}: {kind} must be a list [lo, hi] of two {noun}s.")
    lo, hi = bounds
    if lo >= hi:
        raise ConfigError(f"{where}: the range [{lo}, {hi}] is empty; lo must be below hi.")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, not {log!r}.")
    if step is not None and not (_is(step, number) and step > 0):
        raise ConfigError(f"{where}: step must be a positive {noun}, not {step!r}.")
    if log and (step is not None or lo <= 0):
        raise ConfigError(f"{where}: a log scale needs a range above zero and no step.")
    return Dimension(key, kind, (lo, hi), step, log)


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    """Whether a YAML value is of a numeric type, booleans (which YAML reads as ints) excluded."""
    return isinstance(value, types) and not isinstance(value, bool)


def _check_key(path: Path, dimension: Dimension, base: RunConfig) -> None:
    """The key must name a setting of the model, `train` or `eval`, and each end of its range must be valid."""
    section, _, name = dimension.key.partition(".")
    fields = {
        "model": set(model_class(base.model_name).Config.model_fields),
        "train": set(TrainConfig.model_fields),
        "eval": set(EvalConfig.model_fields),
    }
    if section not in fields:
        raise ConfigError(
            f"search space {path}: {dimension.key} is not a dotted config key; keys start with model., train. or eval."
        )
    if name.partition(".")[0] not in fields[section]:  # a nested key (model.neighbourhood.decay) is checked below
        known = ", ".join(f"{section}.{f}" for f in sorted(fields[section] - {"name"}))
        raise ConfigError(f"search space {path}: {dimension.key} is not a {base.model_name} setting; known: {known}.")
    for value in dimension.values:
        try:
            trial_config(base, {dimension.key: value})
        except ConfigError as exc:
            raise ConfigError(f"search space {path}: {dimension.key} = {value!r} is not valid: {exc}") from None


def trial_config(base: RunConfig, values: dict[str, Any]) -> RunConfig:
    """The base config with sampled values (dotted keys) set, checked by the config and the model."""
    nested: dict[str, Any] = {}
    for key, value in values.items():
        for part in reversed(key.split(".")):
            value = {part: value}
        nested = merge(nested, value)
    config = validate_config(merge(base.model_dump(mode="json"), nested))
    model_class(config.model_name).from_params(1, config.model_params)
    return config
