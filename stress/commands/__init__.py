"""Subcommands. Each module here defines ``register(subparsers)`` that adds its parser and sets
``func`` (``args -> int``); ``stress.cli`` discovers them, so adding a command touches no other file.
Command modules import heavy things (torch, matplotlib) inside ``func``, never at import time."""
