"""Imported once, by the multiprocessing fork server the jobs agent starts; nowhere else.

:meth:`~.execution.ProcessLauncher.warm_up` starts the fork server with this module in its
preload list and two environment variables:

- ``RUNWIRE_FORKSERVER_MAIN``: the agent's main script. Recorded as the fork server's
  ``__main__.__file__``, so multiprocessing does not run that script again in every child
  (children of the agent never need it: the target and its arguments live in runwire
  modules). Without it each child would re-import the main script: slow, and unsafe for a
  script without an ``if __name__ == "__main__"`` guard.
- ``RUNWIRE_FORKSERVER_PRELOAD``: a JSON list of ``[kind, location]`` procedure module
  sources, imported here once so every child starts with them loaded (as harpd loaded its
  procedures once and forked per connection). A module that fails here is loaded again, and
  reported, by the child that needs it.
"""

from __future__ import annotations

import json
import os
import sys

MAIN_VARIABLE = "RUNWIRE_FORKSERVER_MAIN"
PRELOAD_VARIABLE = "RUNWIRE_FORKSERVER_PRELOAD"


def _prepare() -> None:
    main = sys.modules.get("__main__")
    path = os.environ.get(MAIN_VARIABLE)
    # The fork server runs as ``python -c ...``: its __main__ has no file of its own.
    if (
        path
        and main is not None
        and getattr(main, "__file__", None) is None
        and sys.argv[:1] == ["-c"]
    ):
        main.__file__ = path
    try:
        sources = json.loads(os.environ.get(PRELOAD_VARIABLE) or "[]")
    except ValueError:
        return
    from .procedures import ModuleSource

    for kind, location in sources:
        try:
            ModuleSource(kind, location).load()
        except BaseException:  # the child that needs the module reports the failure
            continue


_prepare()
