"""The package version (one place: setup.cfg reads it, the command line prints it)."""

__version__ = "0.1.0"
