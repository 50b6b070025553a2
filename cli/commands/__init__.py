"""Subcommands of the ``runwire`` command, one module each.

Every module here exposes ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace, returning the exit status).
:data:`runwire.main.SUBCOMMANDS` lists them with their one-line help, and a module is
imported only when its subcommand is on the command line; keep heavy imports (generated
models, reference servers, pyzmq) inside the functions that need them all the same.
"""
