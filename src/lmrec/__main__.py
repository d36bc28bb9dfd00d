"""`python -m lmrec ...`: the same command as `lmrec ...`."""

from lmrec.cli import main

main()
