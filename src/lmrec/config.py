"""Typed run configuration (pydantic) loaded from YAML, with `--set section.key=value` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from lmrec.errors import ConfigError

EXCLUDE_SEEN_DEFAULT = True
"""Whether recommendations leave out items the user already has: shared by the CLI, API and service."""

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

RESUME_MAY_CHANGE = ("train.epochs", "train.max_seconds", "train.threads")
"""Settings a resumed run may change: how long it trains and on how many threads, never what it learns."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Strict):
    """How to optimise: objective, optimiser, schedule, stopping and resources."""

    epochs: int = Field(200, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    clip_norm: float | None = 5.0
    loss: Literal["auto", "ce", "bce", "sampled_softmax"] = Field(
        "ce", description="auto: full-softmax ce up to 30,000 items, sampled softmax with logQ correction above"
    )
    negatives: int = Field(256, ge=1)
    window_stride: int | None = Field(None, ge=1)
    user_fraction: float = Field(1.0, gt=0, le=1, description="train on a seeded share of the users' sequences")
    freeze: list[str] = Field([], description="parameter-name prefixes kept frozen, e.g. [blocks, pos_emb]")
    patience: int = Field(10, ge=1)
    eval_every: int = Field(1, ge=1)
    max_seconds: float | None = None
    threads: int | None = Field(None, ge=1)


class EvalConfig(_Strict):
    """How to evaluate: cut-offs, masking of seen items, batch size."""

    ks: list[int] = [5, 10, 20]
    mask_history: bool | None = Field(
        None,
        description="leave history items out of the ranking; null: the dataset's protocol (masked, given examples not)",
    )
    batch_size: int = Field(512, ge=1)
    metric: str = "ndcg@10"


class RunConfig(_Strict):
    """Everything a training run needs besides the data: model name and parameters, training, evaluation."""

    model: dict[str, Any] = {"name": "sasrec"}
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    seed: int = Field(0, ge=0, lt=2**32, description="numpy and torch take seeds in [0, 2**32)")

    @property
    def model_name(self) -> str:
        """The registered model name."""
        return str(self.model.get("name", "sasrec"))

    @property
    def model_params(self) -> dict[str, Any]:
        """Model hyper-parameters without the name."""
        return {k: v for k, v in self.model.items() if k != "name"}


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ["model.hidden=128", "train.lr=3e-4"] into a nested dict; values are parsed as YAML."""
    nested: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {pair!r} is not of the form section.key=value (e.g. model.hidden=128).")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(
                    f"override {pair!r} sets a key inside {part!r}, which another override set to a value."
                )
        try:
            node[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {pair}: the value does not parse as YAML ({_yaml_problem(exc)}).") from None
    return nested


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """What a YAML parser objected to, with the line and column, in one line."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}".strip()


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `extra` into a copy of `base`."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error when the file is missing or not a mapping."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {_yaml_problem(exc)}.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc}.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of sections (model, train, eval, seed).")
    return data


def default_config_path(model: str) -> Path | None:
    """The shipped `configs/<model>.yaml`, when it exists."""
    path = CONFIG_DIR / f"{model}.yaml"
    return path if path.is_file() else None


def build_config(
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> RunConfig:
    """Compose defaults ← configs/<model>.yaml ← --config FILE ← --set overrides ← --seed."""
    data: dict[str, Any] = {}
    if config_file is not None:
        data = load_yaml(config_file)
    name = model or data.get("model", {}).get("name") or "sasrec"
    shipped = default_config_path(name)
    if shipped is not None and config_file is None:
        data = load_yaml(shipped)
    data = merge(data, {"model": {"name": name}})
    data = merge(data, parse_overrides(overrides or []))
    if seed is not None:
        data["seed"] = seed
    return validate_config(data)


def resume_config(
    saved: RunConfig,
    model: str | None = None,
    config_file: Path | None = None,
    overrides: list[str] | None = None,
    seed: int | None = None,
) -> tuple[RunConfig, dict[str, list[Any]]]:
    """The saved config of a run being resumed, with the explicitly asked changes that resuming allows.

    Returns the config and the changes as {key: [saved, new]}. Asking for anything else that differs from
    the saved config (another model, learning rate, seed...) is refused: a resumed run continues as it was.
    """
    asked: dict[str, Any] = load_yaml(config_file) if config_file is not None else {}
    if model is not None:
        asked = merge(asked, {"model": {"name": model}})
    asked = merge(asked, parse_overrides(overrides or []))
    if seed is not None:
        asked["seed"] = seed
    before = saved.model_dump(mode="json")
    config = validate_config(merge(before, asked))
    old, new = _flatten(before), _flatten(config.model_dump(mode="json"))
    changes = {
        key: [old.get(key), new.get(key)] for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)
    }
    refused = [key for key in changes if key not in RESUME_MAY_CHANGE]
    if refused:
        key = refused[0]
        raise ConfigError(
            f"cannot resume with {key}={changes[key][1]!r}: the run was configured with {key}={changes[key][0]!r}, "
            f"and a resumed run continues as it was configured (it may change only {', '.join(RESUME_MAY_CHANGE)}); "
            "start a new run with another --out to train differently."
        )
    return config, changes


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"lr": 1}} as {"train.lr": 1}."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, name + "."))
        else:
            out[name] = value
    return out


def validate_config(data: dict[str, Any]) -> RunConfig:
    """Validate a config mapping, naming the bad key and the allowed ones."""
    try:
        return RunConfig(**data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = [str(p) for p in first["loc"]]
        section = {"train": TrainConfig, "eval": EvalConfig}.get(loc[0]) if loc else None
        allowed = sorted((section or RunConfig).model_fields)
        raise ConfigError(
            f"invalid setting {'.'.join(loc)}: {first['msg']}; allowed keys"
            f"{' in ' + loc[0] if section else ''}: {', '.join(allowed)}."
        ) from None


def dump_config(config: RunConfig) -> str:
    """YAML text of a config, as written to a run directory."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
