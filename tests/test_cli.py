"""``bastion`` on the command line."""

import base64
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bastion import Bastion, Secret
from bastion.cli import main

SCRIPT = Path(sys.executable).with_name("bastion")
KEY = re.compile(r"[A-Za-z0-9_-]{64}\n")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "BASTION_SECRET_KEY"}
    return subprocess.run(argv, capture_output=True, text=True, check=False, env=env)


def assert_usable_key(output: str) -> str:
    assert KEY.fullmatch(output), output
    key = output.strip()
    assert len(base64.urlsafe_b64decode(key)) == 48
    assert len(key.encode()) >= 32
    assert Bastion(secret_key=key).config.secret_key == Secret(key.encode())
    return key


def test_keygen_console_script_prints_an_accepted_key() -> None:
    """`bastion keygen` (the installed console script) prints one accepted key, no stderr."""
    done = run(str(SCRIPT), "keygen")
    assert (done.returncode, done.stderr) == (0, "")
    assert_usable_key(done.stdout)


def test_keygen_as_module_prints_an_accepted_key() -> None:
    """`python -m bastion.cli keygen` works the same."""
    done = run(sys.executable, "-m", "bastion.cli", "keygen")
    assert (done.returncode, done.stderr) == (0, "")
    assert_usable_key(done.stdout)


def test_keygen_prints_a_new_key_each_time() -> None:
    """Two runs, two different keys."""
    first = run(sys.executable, "-m", "bastion.cli", "keygen").stdout
    second = run(sys.executable, "-m", "bastion.cli", "keygen").stdout
    assert assert_usable_key(first) != assert_usable_key(second)


def test_keygen_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    """main(["keygen"]) returns 0 and writes the key to stdout only."""
    assert main(["keygen"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert_usable_key(out)


def test_key_works_as_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The printed key, set as BASTION_SECRET_KEY, starts a Bastion with no arguments."""
    key = run(sys.executable, "-m", "bastion.cli", "keygen").stdout.strip()
    monkeypatch.setenv("BASTION_SECRET_KEY", key)
    assert Bastion().config.secret_key == Secret(key.encode())


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command, argparse exits 2 with the usage on stderr."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("usage: bastion [-h] {keygen,audit,schema,client,probe} ...\n")
    assert err.endswith("error: the following arguments are required: command\n")


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown command exits 2 and names the valid choices."""
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: bastion [-h] {keygen,audit,schema,client,probe} ...\n")
    # Python versions differ on quoting the choices.
    assert re.search(
        r"invalid choice: 'frobnicate' \(choose from '?keygen'?, '?audit'?, '?schema'?, "
        r"'?client'?, '?probe'?\)\n$",
        err,
    ), err


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    """--help exits 0 and describes every command: keygen, audit, schema, client, probe."""
    with pytest.raises(SystemExit) as caught:
        main(["--help"])
    assert caught.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # however argparse wraps the lines
    assert "attack a running app's forms (CSRF, hostile input, leaks); exit 1 on any" in out
    assert "Server actions, secure by default." in out
    assert "print a new random secret key (for BASTION_SECRET_KEY)" in out
    assert "list every action of an app and exit 1 on any violation" in out
    assert "print every action of an app as an OpenAPI 3.1 document (JSON)" in out
    assert "write a typed client for an app's actions (from its schema)" in out
