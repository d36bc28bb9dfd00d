"""Training: the trainer loop, objectives, windows and pre-training (`lmrec.train(...)` is `lmrec.api.train`)."""
