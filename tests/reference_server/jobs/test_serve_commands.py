"""``runwire serve jobs-dispatcher`` and ``jobs-agent`` as commands: their options, the
dispatcher's configuration errors, and the shipped example (examples/jobs) run as its
README says, each server in a subprocess of its own (ports picked at run time)."""

from __future__ import annotations

import io
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import pytest

from runwire.main import build_parser, main
from runwire.reference_server.jobs.agent_main import DEV_AGENT_FILE
from runwire.reference_server.jobs.dispatcher import load_config
from runwire.reference_server.jobs.tls import ensure_dev_certificate

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "jobs"
SERVER_S = 60.0
"""Bound on each wait for a server (a line of its output, its exit)."""

SERVERS = ("jobs-dispatcher", "jobs-agent")


# --- options ------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", SERVERS)
def test_an_unknown_log_level_is_a_usage_error(
    server: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", server, "--log-level", "bogus"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "argument --log-level: invalid choice: 'BOGUS'" in err and "Traceback" not in err


@pytest.mark.parametrize("server", SERVERS)
def test_log_levels_are_the_same_for_both_servers_in_any_case(server: str) -> None:
    parser = build_parser()
    assert parser.parse_args(["serve", server]).log_level == "INFO"
    for given, level in [("debug", "DEBUG"), ("Warning", "WARNING"), ("CRITICAL", "CRITICAL")]:
        assert parser.parse_args(["serve", server, "--log-level", given]).log_level == level


# --- the dispatcher's configuration errors --------------------------------------------------------


def write_config(folder: Path, hosts: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "dispatcher.toml"
    config.write_text('[dispatcher]\ndatabase = ":memory:"\n\n' + hosts)
    return config


HOST = '[hosts.web01]\naddress = "127.0.0.1"\nuser = "d"\n'


def test_a_missing_password_file_names_the_config_and_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path / "etc", HOST + 'password_file = "web01.password"\n')
    with pytest.raises(ValueError) as raised:
        load_config(config)
    assert str(raised.value) == (
        f"{config}: hosts.web01.password_file: {tmp_path / 'etc' / 'web01.password'}: no such file"
    )


def test_a_missing_or_broken_ca_file_names_the_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, HOST + 'password = "p"\nca_file = "agent.pem"\n')
    with pytest.raises(ValueError, match=r"hosts\.web01\.ca_file: .*agent\.pem: no such file$"):
        load_config(config)
    (tmp_path / "agent.pem").write_text("not a certificate\n")
    with pytest.raises(ValueError, match=r"hosts\.web01\.ca_file: .*: not a PEM certificate"):
        load_config(config)


def test_relative_paths_are_relative_to_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    certificate, _ = ensure_dev_certificate(folder / "certs")
    config = write_config(
        folder,
        HOST + 'password_file = "secrets/web01"\nca_file = "certs/dev-cert.pem"\n',
    )
    (folder / "secrets").mkdir()
    (folder / "secrets" / "web01").write_text("s3cret\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    host = load_config(config).hosts["web01"]
    assert (host.password, host.ca_file) == ("s3cret", str(certificate))


def test_dev_agent_takes_the_entry_from_the_agents_record(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[hosts.localhost]\ndev_agent = "state"\n')
    record = tmp_path / "state" / "jobs-agent" / DEV_AGENT_FILE
    with pytest.raises(ValueError, match=rf"hosts\.localhost\.dev_agent: {record}: no such file"):
        load_config(config)
    certificate, _ = ensure_dev_certificate(record.parent)
    record.write_text(
        f'{{"address": "127.0.0.1", "port": 4999, "ca_file": "{certificate}", '
        '"user": "runwire", "password": "pw"}'
    )
    host = load_config(config).hosts["localhost"]
    assert (host.address, host.port, host.user, host.password) == (
        "127.0.0.1",
        4999,
        "runwire",
        "pw",
    )
    assert host.ca_file == str(certificate)
    record.write_text('{"address": "127.0.0.1", "port": 4999, "ca_file": "x"}')
    with pytest.raises(ValueError, match="no address or credentials in it"):
        load_config(config)
    both = write_config(tmp_path / "b", '[hosts.localhost]\ndev_agent = "s"\nport = 1\n')
    with pytest.raises(ValueError, match=r"dev_agent: give no other keys \(port\)"):
        load_config(both)


def test_serve_reports_a_config_error_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, HOST + 'password_file = "missing"\n')
    assert main(["serve", "jobs-dispatcher", "--config", str(config), "--port", "0"]) == 2
    assert capsys.readouterr().err == (
        f"runwire serve jobs-dispatcher: {config}: hosts.web01.password_file: "
        f"{tmp_path / 'missing'}: no such file\n"
    )


def test_the_example_dispatcher_config_names_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before the agent has run, the shipped dispatcher.toml says what to start first."""
    example = copy_example(tmp_path)
    assert main(["serve", "jobs-dispatcher", "--config", str(example / "dispatcher.toml")]) == 2
    err = capsys.readouterr().err
    assert "hosts.localhost.dev_agent: " in err and "runwire serve jobs-agent" in err


# --- the example, as its README runs it -----------------------------------------------------------


def copy_example(tmp_path: Path) -> Path:
    """examples/jobs without what running it in place leaves there."""
    target = tmp_path / "jobs"
    ignore = shutil.ignore_patterns("state", "dispatcher.password", "__pycache__")
    shutil.copytree(EXAMPLES, target, ignore=ignore)
    return target


class Server:
    """``runwire serve ARGV`` in a subprocess; both outputs read without blocking past a
    bound."""

    def __init__(self, *argv: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runwire", "serve", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self.streams: dict[str, IO[bytes]] = {
            "out": self.process.stdout,
            "err": self.process.stderr,
        }
        self.seen = {"out": b"", "err": b""}

    def wait_for(self, pattern: str, stream: str = "out") -> re.Match[str]:
        """Read until ``pattern`` matches what ``stream`` printed (at most SERVER_S)."""
        deadline = time.monotonic() + SERVER_S
        while (found := re.search(pattern, self.seen[stream].decode())) is None:
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} within {SERVER_S} s: {self.seen}"
            fds = {s.fileno(): name for name, s in self.streams.items()}
            ready, _, _ = select.select(list(fds), [], [], left)
            for fd in ready:
                chunk = os.read(fd, 65536)
                assert chunk, f"{fds[fd]} closed before {pattern!r}: {self.seen}"
                self.seen[fds[fd]] += chunk
        return found

    def stop(self, signum: signal.Signals) -> tuple[int, list[str]]:
        """Send ``signum``; return the exit status and every line it printed on stdout."""
        self.process.send_signal(signum)
        out, _ = self.process.communicate(timeout=SERVER_S)
        return self.process.returncode, (self.seen["out"] + out).decode().splitlines()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=SERVER_S)


def jobs(capsys: pytest.CaptureFixture[str], port: int, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    status = main([*argv[:2], "--dispatcher", f"127.0.0.1:{port}", *argv[2:]])
    return status, capsys.readouterr().out


def test_the_example_runs_as_its_readme_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    example = copy_example(tmp_path)
    monkeypatch.chdir(tmp_path)  # paths in the configs are relative to their folder
    # The shipped files, with the ports picked at run time instead of 4306 and 3502.
    agent = Server("jobs-agent", "--config", "jobs/agent.toml", "--port", "0")
    dispatcher: Server | None = None
    try:
        listening = agent.wait_for(r"jobs agent listening on 127\.0\.0\.1:(\d+) \(TLS\)")
        agent_port = int(listening.group(1))
        dispatcher = Server("jobs-dispatcher", "--config", "jobs/dispatcher.toml", "--port", "0")
        listening = dispatcher.wait_for(r"listening on 127\.0\.0\.1:(\d+); .*hosts: localhost\n")
        port = int(listening.group(1))
        status, out = jobs(capsys, port, "jobs", "submit", "--follow", "localhost", "echo", "hi")
        assert (status, out) == (0, '["hi"]\n')

        # "A host with explicit credentials"
        password = "correct horse battery staple"
        (example / "dispatcher.password").write_text(password + "\n")
        monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
        passwd = example / "state" / "jobs-agent" / "passwd"
        argv = ["jobs", "agent-passwd", "--password-file", str(passwd), "--stdin", "dispatcher"]
        assert main(argv) == 0
        config = example / "dispatcher.toml"
        text = config.read_text()
        start = text.index("# [hosts.web01]")
        table = re.sub(
            r"^# (?=\[hosts|address|port|user|password_file|ca_file|server_name)",
            "",
            text[start:],
            flags=re.MULTILINE,
        )
        assert "\nport = 4306\n" in table
        table = table.replace("\nport = 4306\n", f"\nport = {agent_port}\n")
        config.write_text(text[:start] + table)
        dispatcher.process.send_signal(signal.SIGHUP)
        dispatcher.wait_for(r"hosts reloaded: localhost, web01", stream="err")
        status, out = jobs(capsys, port, "jobs", "submit", "--follow", "web01", "echo", "hi")
        assert (status, out) == (0, '["hi"]\n')

        # Both say they stopped, on SIGINT as on SIGTERM.
        status, lines = dispatcher.stop(signal.SIGINT)
        assert (status, lines[-1]) == (0, "runwire jobs dispatcher stopped")
        status, lines = agent.stop(signal.SIGTERM)
        assert (status, lines[-1]) == (0, "runwire jobs agent stopped")
    finally:
        agent.kill()
        if dispatcher is not None:
            dispatcher.kill()
