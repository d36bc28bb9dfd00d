"""Built-in models; importing this package registers them by name."""

from lmrec.models import (
    bert4rec,  # noqa: F401
    gru4rec,  # noqa: F401
    itemknn,  # noqa: F401
    lmrec,  # noqa: F401
    multvae,  # noqa: F401
    pop,  # noqa: F401
    sasrec,  # noqa: F401
)
