"""Argparse subcommands whose parsers are built only when chosen.

``runwire --help`` lists every subcommand with its one-line help, but building each
subcommand's real parser means importing its module, and some of those import heavy things
(the reference servers, the generated pydantic models, pyzmq). :class:`LazySubParsersAction`
lists a light placeholder per subcommand and runs the subcommand's loader only when argparse
selects it, so a command line imports the modules of the subcommands it names and no others::

    commands = add_lazy_subparsers(parser, dest="command", required=True, metavar="COMMAND")
    commands.add_lazy_parser("serve", "run a reference server", load_serve)

``load_serve(commands)`` must call ``commands.add_parser("serve", ...)`` exactly as an eager
registration would; that parser replaces the placeholder (keeping its place in the listing),
and its ``help``, if given, replaces the placeholder's one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

__all__ = ["LazySubParsersAction", "Loader", "add_lazy_subparsers"]

Loader = Callable[["LazySubParsersAction"], None]
"""Adds the real parser of one lazy subcommand: called with the subparsers action, it calls
``add_parser(name, ...)`` on it (and may import whatever the subcommand needs)."""


if TYPE_CHECKING:  # generic in typeshed only
    _SubParsersAction = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    _SubParsersAction = argparse._SubParsersAction


class LazySubParsersAction(_SubParsersAction):
    """A subparsers action whose entries may be placeholders until chosen.

    A placeholder is an empty parser under the subcommand's name, listed with its one-line
    help; when argparse selects it (``runwire serve ...``, ``runwire serve --help``), the
    action runs the entry's loader and then parses with the real parser. Entries added with
    plain :meth:`add_parser` behave as in argparse.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._loaders: dict[str, Loader] = {}
        self._loading: str | None = None

    def add_lazy_parser(self, name: str, help: str, load: Loader) -> None:
        """List subcommand `name` with the one line `help`; `load` adds its real parser when
        the subcommand is chosen (see :data:`Loader`). Raises argparse.ArgumentError if the
        name is taken."""
        self.add_parser(name, help=help)
        self._loaders[name] = load

    def is_loaded(self, name: str) -> bool:
        """False while `name` is a placeholder whose loader has not run."""
        return name not in self._loaders

    def load(self, name: str) -> argparse.ArgumentParser:
        """Run the loader of `name` if it has not run yet; returns the real parser.

        Raises KeyError for an unknown name and RuntimeError when the loader does not add the
        parser of `name`; whatever the loader raises (ImportError...) propagates.
        """
        load = self._loaders.pop(name, None)
        if load is not None:
            placeholder = self._name_parser_map[name]
            self._loading = name
            try:
                load(self)
            finally:
                self._loading = None
            if self._name_parser_map[name] is placeholder:
                raise RuntimeError(f"the loader of subcommand {name!r} did not add its parser")
        return self._name_parser_map[name]

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """As argparse's, except that the loader of a lazy entry replaces its placeholder."""
        if name != self._loading:
            return super().add_parser(name, **kwargs)
        self._loading = None  # a second add_parser(name) is a conflict, as in argparse
        help_text = kwargs.pop("help", None)
        order = list(self._name_parser_map)
        del self._name_parser_map[name]
        parser = super().add_parser(name, **kwargs)
        # Keep the listing order (argparse's "choose from" message follows the map's order).
        entries = {key: self._name_parser_map[key] for key in order}
        entries.update(self._name_parser_map)  # aliases the real parser added
        self._name_parser_map.clear()
        self._name_parser_map.update(entries)
        if help_text is not None:
            for choice in self._choices_actions:
                if choice.dest == name:
                    choice.help = help_text
        return parser

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if isinstance(values, list) and values and values[0] in self._loaders:
            self.load(values[0])
        super().__call__(parser, namespace, values, option_string)


def add_lazy_subparsers(parser: argparse.ArgumentParser, **kwargs: Any) -> LazySubParsersAction:
    """``parser.add_subparsers(**kwargs)`` with a :class:`LazySubParsersAction`."""
    action = parser.add_subparsers(action=LazySubParsersAction, **kwargs)
    assert isinstance(action, LazySubParsersAction)
    return action
