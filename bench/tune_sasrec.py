"""The Optuna bar of issue 15: does 30 minutes of `lmrec tune` for SASRec beat the shipped config?

On MovieLens-100K under protocol R (bench/quality.py's preparation and overrides), the script

1. runs `lmrec tune DATA --model sasrec --trials 200 --timeout 1800` in a fresh process, every trial the
   shipped config's budget (200 epochs, patience 20) with the protocol's overrides. `--timeout` is checked
   between trials, so the search is also stopped by SIGINT at `--hard-stop` seconds (default: the timeout);
   the trial it interrupts fails, and a second `lmrec tune` with `--trials <finished>` writes best.yaml;
2. trains best.yaml (`lmrec train --config`) and the shipped config with seeds 0..N-1, each with the same
   budget as bench/quality.py (the shipped config's: 200 epochs, patience 20);
3. chooses by the median validation NDCG@10 over the seeds, and only then reads the test split of both.

It writes bench/results/tune-sasrec-R.json. The search is not rerun once best.json exists (delete the
tuning folder to start over), and finished training runs are reused, so a rerun only summarises. Training
on CPU is deterministic, so `--seed0-from-trial` takes the best trial's own run as the tuned seed 0 (the
same config and seed) instead of training it again; `--shipped-from-results bench/results/quality-R.json`
takes the shipped side from bench/quality.py's results instead of training it. Not a test: run it by hand
(about an hour and a half on one CPU thread).

    OMP_WAIT_POLICY=PASSIVE LMREC_THREADS=1 python bench/tune_sasrec.py --seed0-from-trial
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table

import lmrec
from lmrec import api
from lmrec.evaluation.evaluator import EvalResult
from lmrec.evaluation.stats import bootstrap_ci, paired_test, seed_averaged, seed_averaged_deltas
from lmrec.registry.run import RunDir

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
from quality import PROTOCOLS, prepared, train_seeds  # noqa: E402  (bench/ is a folder of scripts, not a package)

PROTOCOL = "R"
MODEL = "sasrec"
METRIC = "ndcg@10"
METRICS = ("ndcg@10", "hr@10", "mrr@10")


def now() -> str:
    """The current UTC time, to the second."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def tune_command(data: Path, out: Path, trials: int, timeout: float | None, extra: list[str]) -> list[str]:
    """`lmrec tune` for SASRec with the protocol's overrides (and `extra`) fixed in every trial."""
    command = [sys.executable, "-m", "lmrec", "tune", str(data), "--model", MODEL, "--out", str(out)]
    command += ["--trials", str(trials), *(["--timeout", str(timeout)] if timeout is not None else [])]
    return command + [f"--set={item}" for item in [*PROTOCOLS[PROTOCOL]["overrides"], *extra]]


def search(data: Path, out: Path, trials: int, timeout: float, hard_stop: float | None, extra: list[str]) -> dict:
    """Run the search in a fresh process (its log in out/search.log), stopping it at `hard_stop` seconds;
    return what ran and when."""
    out.mkdir(parents=True, exist_ok=True)
    command = tune_command(data, out, trials, timeout, extra)
    record: dict = {"command": command, "started": now(), "hard_stop_s": hard_stop}
    started = time.monotonic()
    with (out / "search.log").open("a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            record["returncode"] = process.wait(timeout=hard_stop)
            record["stopped_by"] = "--timeout (checked between trials) or --trials"
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGINT)  # the running trial fails; finished trials stay in the study
            record["returncode"] = process.wait()
            record["stopped_by"] = f"SIGINT at the hard stop ({hard_stop:.0f} s)"
        record["wall_seconds"] = time.monotonic() - started
        record["ended"] = now()
        if not (out / "best.json").is_file():  # interrupted: write best.yaml from the finished trials
            log.flush()
            finished = sum(t.state in FINISHED for t in study(out).get_trials(deepcopy=False))
            if finished:  # with none, `--trials 0` is refused and `--trials 1` would start a trial
                rerun = tune_command(data, out, finished, None, extra)
                subprocess.run(rerun, stdout=log, stderr=subprocess.STDOUT, check=False)
    (out / "search.json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def study(out: Path) -> optuna.Study:
    """The tuning folder's Optuna study."""
    return optuna.load_study(study_name="lmrec-tune", storage=f"sqlite:///{out / 'study.sqlite3'}")


def trials_report(out: Path) -> dict:
    """Every trial (state, value, sampled values, epochs, seconds) and the counts by state."""
    rows = []
    for trial in study(out).get_trials(deepcopy=False):
        run = RunDir(out / "trials" / str(trial.number))
        metrics = run.metrics() if run.metrics_file.is_file() else {}
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                "valid_ndcg@10": trial.value,
                "params": trial.params,
                "epochs": metrics.get("epochs"),
                "best_epoch": metrics.get("best_epoch"),
                "stopped_by": metrics.get("stopped_by"),
                "seconds_per_epoch": metrics.get("seconds_per_epoch"),
                "wall_seconds": seconds,
            }
        )
    states = [row["state"] for row in rows]
    counts = {state: states.count(state) for state in ("complete", "pruned", "fail")}
    return {"counts": {"trials": len(rows), **counts}, "trials": rows}


def train_tuned(data: Path, out: Path, work: Path, seeds: int, seed0_from_trial: bool) -> list[Path]:
    """best.yaml trained with seeds 0..N-1 (`lmrec train --config`); finished runs are reused. With
    `seed0_from_trial`, seed 0 is the best trial's own run (the same config and seed, trained by the search)."""
    config = out / "best.yaml"
    trial = Path(json.loads((out / "best.json").read_text())["run"])
    runs = []
    for seed in range(seeds):
        run = trial if seed == 0 and seed0_from_trial else work / f"{PROTOCOL}-{MODEL}-tuned-s{seed}"
        if not (run / "metrics.json").is_file():
            resume = RunDir(run).last_file.is_file()
            api.train(data, run, config_file=config, seed=seed, overwrite=not resume, resume=resume, progress=False)
        runs.append(run)
    return runs


def split_summary(runs: list[Path], split: str) -> dict:
    """Median over the seeds, per-seed values and the seed-averaged 95% bootstrap interval of each metric."""
    metrics = [RunDir(r).metrics() for r in runs]
    results = [EvalResult.load(RunDir(r).ranks_file(split)) for r in runs]
    out = {}
    for name in METRICS:
        ci = bootstrap_ci(seed_averaged(results, name))
        values = [m[split][name] for m in metrics]
        out[name] = {"median": statistics.median(values), "ci95": [ci.low, ci.high], "per_seed": values}
    return out


def paired(shipped: list[Path], tuned: list[Path], split: str) -> dict:
    """Per-user ΔNDCG@10 tuned − shipped, seed-averaged, with its paired bootstrap interval."""
    pairs = [
        (EvalResult.load(RunDir(a).ranks_file(split)), EvalResult.load(RunDir(b).ranks_file(split)))
        for a, b in zip(shipped, tuned, strict=True)
    ]
    test = paired_test(seed_averaged_deltas(pairs, METRIC))
    return {"delta": test.delta, "ci95": [test.low, test.high], "p_value": test.p_value}


def timing(runs: list[Path]) -> dict:
    """Training time, epochs and best epoch per seed."""
    metrics = [RunDir(r).metrics() for r in runs]
    return {key: [m[key] for m in metrics] for key in ("train_seconds", "seconds_per_epoch", "epochs", "best_epoch")}


def from_results(path: Path, split: str) -> dict:
    """The shipped config's medians, intervals and per-seed values of one split from quality-R.json."""
    model = json.loads(path.read_text())["models"][MODEL]
    return {name: model[split][name] for name in METRICS}


def code_fingerprint() -> dict:
    """Where lmrec was imported from and a SHA-256 over its sources, to tell which code trained the runs."""
    package = Path(lmrec.__file__).parent
    digest = hashlib.sha256()
    for file in sorted(package.rglob("*.py")) + sorted(package.rglob("*.yaml")):
        digest.update(str(file.relative_to(package)).encode() + b"\0" + file.read_bytes())
    return {"package": str(package), "sha256": digest.hexdigest()}


def render(report: dict) -> Table:
    """Shipped against tuned: validation (the choice), then test."""
    table = Table(title=f"SASRec on MovieLens-100K, protocol {PROTOCOL}: shipped vs `lmrec tune` (median of seeds)")
    for column in ("config", "valid ndcg@10", "valid per seed", "test ndcg@10", "test hr@10", "train s"):
        table.add_column(column, justify="left" if column == "config" else "right")
    for name in ("shipped", "tuned"):
        side = report[name]
        valid, test = side["valid"][METRIC], side["test"]
        table.add_row(
            name + (" *" if report["chosen"] == name else ""),
            f"{valid['median']:.4f}",
            ", ".join(f"{v:.4f}" for v in valid["per_seed"]),
            f"{test[METRIC]['median']:.4f} [{test[METRIC]['ci95'][0]:.3f}, {test[METRIC]['ci95'][1]:.3f}]",
            f"{test['hr@10']['median']:.4f}",
            f"{statistics.median(side['timing']['train_seconds']):.0f}" if side.get("timing") else "",
        )
    table.caption = "* chosen by median validation NDCG@10; intervals: 95% bootstrap over users, seed-averaged"
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "work")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=1800.0, help="lmrec tune --timeout (between trials)")
    parser.add_argument("--hard-stop", type=float, default=None, help="SIGINT the search after this (default timeout)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--search-only", action="store_true", help="stop after the search")
    parser.add_argument("--seed0-from-trial", action="store_true", help="tuned seed 0: the best trial's run")
    parser.add_argument(
        "--shipped-from-results",
        type=Path,
        default=None,
        help="take the shipped side from bench/quality.py's quality-R.json instead of training it",
    )
    parser.add_argument("--set", action="append", default=[], help="extra override of every run (smoke tests)")
    parser.add_argument("--result", type=Path, default=ROOT / "results" / f"tune-{MODEL}-{PROTOCOL}.json")
    args = parser.parse_args()
    data_dir = Path(os.environ.get("LMREC_DATA_DIR", ROOT.parent.parent / "shared" / "data"))
    data = prepared(PROTOCOL, data_dir, args.work)
    out = args.work / f"tune-{MODEL}-{PROTOCOL}"
    console = Console()
    if not (out / "best.json").is_file():
        hard_stop = args.hard_stop if args.hard_stop is not None else args.timeout
        console.print(f"searching until {args.timeout:.0f} s (hard stop {hard_stop:.0f} s) → {out}")
        search(data, out, args.trials, args.timeout, hard_stop or None, args.set)
    if args.search_only:
        return
    record = json.loads((out / "search.json").read_text()) if (out / "search.json").is_file() else {}
    best = json.loads((out / "best.json").read_text())

    started = time.time()
    tuned = train_tuned(data, out, args.work, args.seeds, args.seed0_from_trial)
    reused = args.shipped_from_results
    shipped = [] if reused else train_seeds(MODEL, data, PROTOCOL, args.seeds, args.work, args.set)
    # The choice: validation only.
    report: dict = {"shipped": {"runs": [str(r) for r in shipped]}, "tuned": {"runs": [str(r) for r in tuned]}}
    report["tuned"] |= {"valid": split_summary(tuned, "valid"), "timing": timing(tuned)}
    if reused:
        report["shipped"] |= {"valid": from_results(reused, "valid"), "from": str(reused)}
    else:
        report["shipped"] |= {"valid": split_summary(shipped, "valid"), "timing": timing(shipped)}
    medians = {name: report[name]["valid"][METRIC]["median"] for name in ("shipped", "tuned")}
    chosen = "tuned" if medians["tuned"] > medians["shipped"] else "shipped"
    deltas = {"valid": paired(shipped, tuned, "valid")} if shipped else {}
    # Only now the test split, once.
    report["tuned"]["test"] = split_summary(tuned, "test")
    report["shipped"]["test"] = from_results(reused, "test") if reused else split_summary(shipped, "test")
    if shipped:
        deltas["test"] = paired(shipped, tuned, "test")
    full = {
        "protocol": PROTOCOL,
        "model": MODEL,
        "data": str(data),
        "overrides": PROTOCOLS[PROTOCOL]["overrides"],
        "seeds": list(range(args.seeds)),
        "tuned_seed0": "the best trial's run" if args.seed0_from_trial else "retrained from best.yaml",
        "search": {**record, **trials_report(out), "best": best},
        "bar": "median valid NDCG@10 over the seeds: tuned > shipped",
        "bar_met": chosen == "tuned",
        "chosen": chosen,
        "valid_medians": medians,
        "paired_tuned_minus_shipped": deltas,
        **report,
        "compare_wall_seconds": time.time() - started,
        "torch_threads": os.environ.get("LMREC_THREADS"),
        "code": code_fingerprint(),
        "load_average_end": os.getloadavg()[0],
    }
    result = args.result
    result.write_text(json.dumps(full, indent=2) + "\n")
    counts = full["search"]["counts"]
    console.print(
        f"search: {counts['trials']} trials ({counts['complete']} complete, {counts['pruned']} pruned, "
        f"{counts['fail']} failed); best trial {best['trial']} valid {best['value']:.4f} {best['params']}"
    )
    console.print(render(full))
    console.print(f"bar met: {full['bar_met']}; wrote {result}")


if __name__ == "__main__":
    main()
