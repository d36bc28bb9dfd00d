"""Process-wide runtime settings: thread counts that behave well on small shared machines."""

from __future__ import annotations

import os


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default `LMREC_THREADS`, else 1) and passive OpenMP waiting.

    Spinning OpenMP threads next to another busy process made training several times slower on a
    2-core machine, so OMP_WAIT_POLICY defaults to PASSIVE before torch starts its pool.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    n = threads if threads is not None else int(os.environ.get("LMREC_THREADS", "1") or 1)
    n = max(1, n)
    torch.set_num_threads(n)
    return n
