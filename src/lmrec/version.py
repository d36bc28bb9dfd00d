"""The package version, in a module of its own so that any layer can read it without importing `lmrec`'s
lazy API (which would make every package depend on every other in the import contracts)."""

__version__ = "0.1.0"
