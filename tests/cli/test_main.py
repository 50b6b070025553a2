"""The ``runwire`` parser: subcommands are built lazily, and help stays complete.

The import checks run in a fresh interpreter (``sys.executable -c ...``) because this test
process has imported everything already; they look at ``sys.modules`` after the command, not
at timings.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from runwire.commands.serve import SERVERS
from runwire.lazy_subparsers import LazySubParsersAction, Loader, add_lazy_subparsers
from runwire.main import SUBCOMMANDS, build_parser, main

#: Module prefixes that building the top-level parser, and its help, must not import.
HEAVY = (
    "runwire.reference_server",
    "runwire.generated",
    "runwire.conformance",
    "runwire.runtime",
    "runwire.compat",
    "runwire.codegen",
    "zmq",
    "pydantic",
    "jsonschema",
    "yaml",
    "cryptography",
    "argon2",
    "asyncio",
)

#: Runs ``runwire.main.main(argv)`` and prints the exit status and the loaded modules.
PROBE = """
import contextlib, io, json, sys
from runwire.main import main
out, err = io.StringIO(), io.StringIO()
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        status = main(json.loads(sys.argv[1]))
    except SystemExit as exc:
        status = exc.code
print(json.dumps({"status": status, "out": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def probe(*argv: str) -> tuple[int, str, set[str]]:
    """(exit status, stdout with its whitespace runs made single spaces (help wraps at the
    terminal's width), modules loaded) of ``runwire ARGV`` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result = json.loads(done.stdout)
    return result["status"], " ".join(result["out"].split()), set(result["modules"])


def loaded(modules: set[str], *prefixes: str) -> set[str]:
    """The modules in `modules` that are one of `prefixes` or under one."""
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes)}


def test_top_level_help_imports_no_subcommand_module() -> None:
    status, out, modules = probe("--help")
    assert status == 0
    for name, (_, help_text) in SUBCOMMANDS.items():
        assert name in out and help_text in out
    assert loaded(modules, *HEAVY) == set()
    assert loaded(modules, "runwire.commands") == set()


def test_building_the_parser_imports_nothing_heavy() -> None:
    code = (
        "import sys; from runwire.main import build_parser; build_parser(); "
        "print('\\n'.join(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    modules = set(done.stdout.split())
    assert "runwire.main" in modules
    assert loaded(modules, *HEAVY, "runwire.commands.serve") == set()


@pytest.mark.parametrize(
    ("argv", "command_module"),
    [
        (("serve", "--help"), "runwire.commands.serve"),
        (("jobs", "--help"), "runwire.commands.jobs"),
        (("jobs", "submit", "--help"), "runwire.commands.jobs"),
        (("workflow", "status", "--help"), "runwire.commands.workflow"),
        (("codegen", "--help"), "runwire.commands.codegen"),
    ],
)
def test_a_subcommand_imports_only_its_module(argv: tuple[str, ...], command_module: str) -> None:
    status, out, modules = probe(*argv)
    assert status == 0
    assert out.startswith(f"usage: runwire {' '.join(argv[:-1])} ")
    others = {module for module, _ in SUBCOMMANDS.values()} - {command_module}
    assert loaded(modules, *others) == set()
    assert loaded(modules, *HEAVY) == set()


def test_serve_help_lists_every_server_without_importing_one() -> None:
    status, out, modules = probe("serve", "--help")
    assert status == 0
    for name, (_, description) in SERVERS.items():
        assert name in out and description in out
    assert loaded(modules, *(module for module, _ in SERVERS.values())) == set()


def test_serve_workflow_help_imports_only_the_workflow_server() -> None:
    status, out, modules = probe("serve", "workflow", "--help")
    assert status == 0
    assert out.startswith("usage: runwire serve workflow ")
    assert "DEFINITION" in out and "--workflow-id ID" in out and "--run-root DIR" in out
    assert SERVERS["workflow"][1] in out
    assert "runwire.reference_server.workflow.serve_main" in modules
    assert loaded(modules, "runwire.reference_server.jobs") == set()


def test_usage_errors_keep_their_exit_status() -> None:
    status, _, modules = probe("nonsense")
    assert status == 2
    assert loaded(modules, "runwire.commands") == set()
    status, _, modules = probe("serve", "nonsense")
    assert status == 2
    assert loaded(modules, *(module for module, _ in SERVERS.values())) == set()


def _lazy_action(parser: argparse.ArgumentParser) -> LazySubParsersAction:
    actions = [a for a in parser._actions if isinstance(a, LazySubParsersAction)]
    assert len(actions) == 1
    return actions[0]


def test_the_help_tables_match_what_the_modules_register() -> None:
    """SUBCOMMANDS and SERVERS repeat each module's one line: loading every entry (which
    replaces a placeholder's line with the module's own) must not change the help."""
    parser = build_parser()
    commands = _lazy_action(parser)
    before = parser.format_help()
    for name in SUBCOMMANDS:
        commands.load(name)
        assert commands.is_loaded(name)
    assert parser.format_help() == before

    serve = commands.load("serve")
    servers = _lazy_action(serve)
    before = serve.format_help()
    for name, (module_name, description) in SERVERS.items():
        servers.load(name)
        assert description == importlib.import_module(module_name).DESCRIPTION
    assert serve.format_help() == before


def test_every_server_parser_parses_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    for name, (module_name, _) in SERVERS.items():
        with pytest.raises(SystemExit) as exited:
            main(["serve", name, "--help"])
        assert exited.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: runwire serve {name} ")
        assert importlib.import_module(module_name).DESCRIPTION in out


@pytest.fixture
def lazy() -> Iterator[tuple[argparse.ArgumentParser, LazySubParsersAction, list[str]]]:
    """A parser with lazy subcommands ``a`` and ``b`` whose loaders record their calls."""
    calls: list[str] = []
    parser = argparse.ArgumentParser(prog="tool")
    sub = add_lazy_subparsers(parser, dest="command", required=True, metavar="COMMAND")

    def loader(name: str) -> Loader:
        def load(action: LazySubParsersAction) -> None:
            calls.append(name)
            real = action.add_parser(name, help=f"real {name}", description=f"all about {name}")
            real.add_argument(f"--{name}-option", default="x")
            real.set_defaults(func=name)

        return load

    sub.add_lazy_parser("a", "line a", loader("a"))
    sub.add_lazy_parser("b", "line b", loader("b"))
    yield parser, sub, calls


def test_only_the_chosen_loader_runs_and_once(
    lazy: tuple[argparse.ArgumentParser, LazySubParsersAction, list[str]],
) -> None:
    parser, sub, calls = lazy
    args = parser.parse_args(["b", "--b-option", "y"])
    assert (args.command, args.b_option, args.func) == ("b", "y", "b")
    assert calls == ["b"] and sub.is_loaded("b") and not sub.is_loaded("a")
    parser.parse_args(["b"])
    assert calls == ["b"]


def test_a_loaded_entry_keeps_its_place_and_takes_the_modules_line(
    lazy: tuple[argparse.ArgumentParser, LazySubParsersAction, list[str]],
) -> None:
    parser, sub, _ = lazy
    assert list(sub.choices) == ["a", "b"]
    assert "line a" in parser.format_help()
    real = sub.load("a")
    assert real.description == "all about a"
    assert list(sub.choices) == ["a", "b"]
    help_text = parser.format_help()
    assert "real a" in help_text and "line a" not in help_text
    assert help_text.index("real a") < help_text.index("line b")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exited:
        parser.parse_args(["c"])
    assert exited.value.code == 2
    assert "(choose from 'a', 'b')" in err.getvalue()


def test_a_loader_that_adds_no_parser_is_an_error() -> None:
    parser = argparse.ArgumentParser(prog="tool")
    sub = add_lazy_subparsers(parser, dest="command")
    sub.add_lazy_parser("a", "line a", lambda action: None)
    with pytest.raises(RuntimeError, match="did not add its parser"):
        parser.parse_args(["a"])


def test_a_name_is_registered_once() -> None:
    parser = argparse.ArgumentParser(prog="tool")
    sub = add_lazy_subparsers(parser, dest="command")
    sub.add_lazy_parser("a", "line a", lambda action: None)
    with pytest.raises(argparse.ArgumentError, match="conflicting subparser"):
        sub.add_lazy_parser("a", "again", lambda action: None)


# --- exits every subcommand shares ----------------------------------------------------------


def run_with_closed_stdout(*argv: str, unbuffered: bool) -> tuple[int, bytes]:
    """(exit status, stderr) of ``runwire ARGV`` writing to a pipe whose reader has gone, as
    in ``runwire ... | head -1`` once head has exited; stdout buffered (Python's default for
    a pipe) or not (``PYTHONUNBUFFERED``), whatever the environment of the tests says."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {key: value for key, value in os.environ.items() if key != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    try:
        done = subprocess.run(
            [sys.executable, "-m", "runwire", *argv],
            stdin=subprocess.DEVNULL,
            stdout=write_end,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


@pytest.mark.parametrize(
    ("argv", "unbuffered", "status"),
    [
        (("conformance", "jobs", "--list"), False, 141),  # written by the subcommand
        (("conformance", "jobs", "--list"), True, 141),
        (("jobs", "submit", "--help"), False, 141),  # the final flush fails
        (("jobs", "submit", "--help"), True, 0),  # argparse ignores its write error, exits 0
    ],
)
def test_a_closed_standard_output_exits_quietly(
    argv: tuple[str, ...], unbuffered: bool, status: int
) -> None:
    assert run_with_closed_stdout(*argv, unbuffered=unbuffered) == (status, b"")


def test_ctrl_c_in_any_subcommand_prints_one_line_and_exits_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import runwire.commands.codegen as codegen

    def interrupted(parser_or_args: object) -> int:
        raise KeyboardInterrupt

    parser = build_parser()
    args = parser.parse_args(["codegen", "--check"])
    monkeypatch.setattr(args, "func", interrupted)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", lambda self, argv=None: args)
    try:
        status = main(["codegen", "--check"])
    except KeyboardInterrupt:  # would stop the whole test run
        pytest.fail("KeyboardInterrupt escaped runwire.main.main")
    assert status == 130
    assert capsys.readouterr().err == "runwire codegen: interrupted\n"
    assert codegen  # imported by parsing: the name is its parser's
