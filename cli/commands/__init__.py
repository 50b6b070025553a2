"""Subcommands of the ``runwire`` command, one module each.

Every module here exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returning the exit status).
"""
