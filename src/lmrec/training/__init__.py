"""Training: the trainer loop, objectives and windows. `lmrec.train(...)` calls `lmrec.api.train`."""

from lmrec._callable import callable_package

callable_package(__name__, "train")
