"""A synthetic behaviour log, prepared: the small dataset that the CLI, serving and export tests share."""

from __future__ import annotations

from pathlib import Path

from lmrec.cli import main


def synth_prepared(root: Path, users: int, items: int, events: int) -> Path:
    """A synthetic log (`lmrec data synth`) in `root`, prepared with the default leave-one-out split (root/d)."""
    log = str(root / "log.csv")
    main(["data", "synth", "--users", str(users), "--items", str(items), "--events", str(events), "--out", log])
    main(["data", "prepare", log, "--items", str(root / "log.items.csv"), "--out", str(root / "d")])
    return root / "d"
