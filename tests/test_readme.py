"""README.md runs as written: its app served by its own commands, its test passing, its
install lines naming the extras pyproject.toml declares, its make targets existing."""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

import readme

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def test_every_block_is_a_file_or_a_known_command() -> None:
    """No block escapes these tests: each is a file of the app or one of the three
    shell blocks checked below."""
    kinds = [(b.language, b.file or b.text.split("\n", 1)[0]) for b in readme.blocks()]
    files = [name for _, name in kinds if name.endswith((".py", ".html"))]
    assert files == ["app.py", "templates/index.html", "test_app.py"]
    shells = [first for language, first in kinds if language == "sh"]
    assert shells == [
        "pip install bastion                # from a checkout: pip install .",
        "make demo    # serve the demo on http://127.0.0.1:8000 (HOST=… PORT=… to change)",
        'export BASTION_SECRET_KEY="$(bastion keygen)" BASTION_ALLOWED_ORIGINS=http://127.0.0.1:8000',
    ]
    assert len(kinds) == len(files) + len(shells)


def test_the_quickstart_app_serves_and_runs_its_action(tmp_path: Path) -> None:
    """app.py and templates/index.html, served by the README's own commands: bastion.js,
    the page, a script's call, a plain form post and its flash, a forged call."""
    readme.write_files(tmp_path)
    with readme.serve(tmp_path, BIN, {}) as base:
        readme.exercise(base)


def test_the_readme_test_passes(tmp_path: Path) -> None:
    """test_app.py, next to app.py, passes under pytest."""
    readme.write_files(tmp_path)
    done = readme.run_readme_test(tmp_path, sys.executable)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^1 passed", done.stdout, flags=re.M), done.stdout


def test_the_install_lines_name_the_declared_extras() -> None:
    """Each ``pip install 'bastion[x]'`` names an extra pyproject.toml declares, and every
    extra meant for users is shown."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    shown = re.findall(r"pip install 'bastion\[(\w+)\]'", readme.shell_block("pip install"))
    assert shown == ["standard", "redis", "testing", "passkeys", "totp", "otel", "prometheus"]
    assert set(shown) <= set(extras)
    assert set(extras) - set(shown) == {"probe", "dev", "fuzz", "bench"}


def test_the_make_targets_exist() -> None:
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"^make (\w+)", readme.shell_block("make demo"), flags=re.M):
        assert re.search(rf"^{target}:", makefile, flags=re.M), target
