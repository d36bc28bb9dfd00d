"""Fuzzing the command line: each argument and option of every command given each garbage value in turn,
then random argument lists built from the real commands and option names, with random values and files of
random bytes, never give a traceback and never exit 0 (every file they name
is garbage, so no such command can succeed). Bounded in examples; commands that could succeed on no input
(`data synth`, `registry list`) or that serve forever (`serve`) are left out."""

from __future__ import annotations

import contextlib
import io
import logging
import shutil
from pathlib import Path

import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmrec import cli

LEFT_OUT = {("data", "synth"), ("registry", "list"), ("serve",)}
EXAMPLES = 500


def _commands() -> dict[tuple[str, ...], list[str]]:
    """Every leaf command's words and its option names (without --help)."""
    cli._register_groups()
    found: dict[tuple[str, ...], list[str]] = {}

    def walk(command, words: tuple[str, ...]) -> None:
        subcommands = getattr(command, "commands", None)
        if subcommands:
            for name, sub in subcommands.items():
                walk(sub, (*words, name))
        elif words not in LEFT_OUT:
            found[words] = [opt for p in command.params for opt in p.opts + p.secondary_opts if opt.startswith("-")]
            found[words] = [opt for opt in found[words] if opt != "--help"]

    walk(typer.main.get_command(cli.app), ())
    return found


COMMANDS = _commands()


@pytest.fixture(scope="module")
def garbage(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Paths to try: files and folders of random-looking content, and paths that do not exist."""
    return make_garbage(tmp_path_factory.mktemp("fuzz"))


def make_garbage(root: Path) -> list[str]:
    """Write the garbage files and folders under `root`; their paths and some that do not exist."""
    contents = {
        "a.csv": "user,item\n\x00\xff,1\n",
        "b.yaml": "model: [\n",
        "c.json": '{"versions": 3}',
        "d.parquet": "PAR1 not really",
        "e.pt": "\x80\x04garbage",
        "f.txt": "",
    }
    for name, text in contents.items():
        (root / name).write_text(text, encoding="utf-8", errors="surrogateescape")
    run = root / "run"
    run.mkdir()
    (run / "run.json").write_text('{"dataset": "/nonexistent", "model": "sasrec"}')
    (run / "config.yaml").write_text("seed: !!python/name:os.system\n")
    dataset = root / "dataset"
    dataset.mkdir()
    (dataset / "manifest.json").write_text('{"format_version": 1, "fingerprint": [')
    (dataset / "interactions.parquet").write_bytes(b"PAR1\x00PAR1")
    registry = root / "registry"
    registry.mkdir()
    (registry / "index.json").write_text('{"versions": [{"version": "x"}], "promoted": 7}')
    (root / "empty-dir").mkdir()
    names = [*contents, "run", "dataset", "registry", "empty-dir", "missing", "missing/deeper.csv"]
    return [str(root / name) for name in names]


def _random_file(root: Path, suffixes: list[str]) -> st.SearchStrategy[str]:
    """A new file of random bytes with a suffix the readers look at."""

    @st.composite
    def make(draw) -> str:
        path = root / f"random-{len(list(root.iterdir()))}{draw(st.sampled_from(suffixes))}"
        path.write_bytes(draw(st.binary(max_size=300)))
        return str(path)

    return make()


def _values(paths: list[str]) -> st.SearchStrategy[str]:
    root = Path(paths[0]).parent / "random"
    root.mkdir(exist_ok=True)
    return st.one_of(
        st.sampled_from(paths),
        _random_file(root, [".csv", ".tsv", ".jsonl", ".parquet", ".yaml", ".inter", ""]),
        st.integers(-3, 10**6).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
        st.sampled_from(["", "-", "--", "=", "x=y", "model.hidden=abc", "train.epochs=-1", "rating>=4"]),
        st.text(max_size=12),
    )


@st.composite
def argv(draw, paths: list[str]) -> list[str]:
    words = draw(st.sampled_from(sorted(COMMANDS)))
    tokens = draw(st.lists(st.one_of(st.sampled_from(COMMANDS[words] or ["--bogus"]), _values(paths)), max_size=8))
    return [*words, *tokens]


def _run(args: list[str]) -> tuple[int, str]:
    """Run the CLI in-process; its exit code and everything it printed or logged."""
    out, logged = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(logged)
    logging.getLogger().addHandler(handler)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                cli.main(args)
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
    finally:
        logging.getLogger().removeHandler(handler)
    return code, out.getvalue() + logged.getvalue()


def _sweep(words: tuple[str, ...], paths: list[str]) -> list[list[str]]:
    """Argument lists that give each argument and option of a command each garbage value in turn, with the
    required options given garbage too."""
    command = typer.main.get_command(cli.app)
    for word in words:
        command = command.commands[word]
    arguments = [p for p in command.params if p.param_type_name == "argument"]
    options = [p for p in command.params if p.param_type_name == "option" and not p.is_flag and p.name != "help"]
    filler = paths[-2]  # a path that does not exist
    runs = []
    for target in [*arguments, *options]:
        for value in [*paths, "0", "-1", "abc", "", "1e400"]:
            argv = [*words, *(value if a is target else filler for a in arguments)]
            for option in options:
                if option.required and option is not target:
                    argv += [option.opts[0], filler]
            runs.append([*argv, target.opts[0], value] if target in options else argv)
    return runs


@pytest.mark.parametrize("words", sorted(COMMANDS), ids=" ".join)
def test_every_option_given_garbage_is_refused_in_a_sentence(
    words: tuple[str, ...], garbage: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LMREC_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "no-data"))
    for args in _sweep(words, garbage):
        code, output = _run(args)
        assert "Traceback" not in output and code != 0, (args, output)


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A real prepared dataset and a finished run on it, so that garbage meets the code past the first check."""
    import lmrec
    from lmrec.data.synth import write_synthetic_log

    root = tmp_path_factory.mktemp("valid")
    write_synthetic_log(root / "log.csv", 40, 20, 600, seed=0)
    data = lmrec.prepare(root / "log.csv", root / "data")
    lmrec.train(root / "data", root / "run", model="pop")
    return {"data": str(root / "data"), "run": str(root / "run"), "user": str(data.user_ids[0]), "root": str(root)}


def _valid_bases(valid: dict[str, str]) -> dict[tuple[str, ...], list[str]]:
    """For the commands that read what they are given: arguments that make them succeed."""
    run, data = valid["run"], valid["data"]
    return {
        ("evaluate",): [run],
        ("recommend",): [run, "--user", valid["user"]],
        ("compare",): [run, run],
        ("data", "stats"): [data],
        ("train",): [data, "--model", "pop", "--out", str(Path(valid["root"]) / "new-run")],
        ("registry", "add"): [run, "--registry", str(Path(valid["root"]) / "registry")],
    }


@pytest.mark.parametrize("words", [("evaluate",), ("recommend",), ("compare",), ("data", "stats"), ("train",),
                                   ("registry", "add")], ids=" ".join)  # fmt: skip
def test_garbage_beside_valid_input_never_crashes(
    words: tuple[str, ...], valid: dict[str, str], garbage: list[str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    base = _valid_bases(valid)[words]
    command = typer.main.get_command(cli.app)
    for word in words:
        command = command.commands[word]
    options = [p.opts[0] for p in command.params if p.param_type_name == "option" and p.name != "help"]
    for option in options:
        for value in [*garbage[:6], garbage[-2], valid["data"], valid["run"], "0", "-1", "abc", ""]:
            shutil.rmtree(Path(valid["root"]) / "new-run", ignore_errors=True)
            args = [*words, *base, option, value]
            code, output = _run(args)
            assert "Traceback" not in output and code in (0, 1, 2), (args, output)


def test_random_argument_lists_never_crash_or_succeed(garbage: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # anything a command writes by default lands here
    monkeypatch.setenv("LMREC_REGISTRY", str(tmp_path / "registry"))
    monkeypatch.setenv("LMREC_DATA_DIR", str(tmp_path / "no-data"))
    monkeypatch.setenv("LMREC_CACHE_DIR", str(tmp_path / "cache"))

    @given(args=argv(garbage))
    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(args: list[str]) -> None:
        code, output = _run(args)
        assert "Traceback" not in output, (args, output)
        assert code != 0, (args, output)

    check()
