"""What a type checker makes of an app: ``Bastion`` and ``Context`` are generic in the
app's user class, inferred from ``load_user``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
AWAITS_MEMBER = "typing.Coroutine[Any, Any, typed_app.Member | None]"


def test_the_apps_user_class_is_the_type_of_ctx_user_and_bastion_user(tmp_path: Path) -> None:
    """mypy --strict passes on tests/typing/typed_app.py and reveals the app's class."""
    result = subprocess.run(
        # The cache goes to a throwaway directory, not into the checkout.
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), "typed_app.py"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    revealed = [
        line.split("note: ", 1)[1] for line in result.stdout.splitlines() if "note: " in line
    ]
    assert revealed == [
        'Revealed type is "bastion.app.Bastion[typed_app.Member]"',
        f'Revealed type is "def (request: Any) -> {AWAITS_MEMBER}"',
        'Revealed type is "typed_app.Member | None"',
    ], result.stdout
    # Only the three notes: no error, no cast or ignore needed.
    assert result.stdout.splitlines()[-1] == "Success: no issues found in 1 source file", (
        result.stdout
    )


def test_the_quickstart_checks_strictly_without_a_cast_or_an_ignore(tmp_path: Path) -> None:
    """The quickstart as shipped: mypy --strict clean, and not by silencing it."""
    quickstart = HERE.parents[1] / "examples" / "quickstart.py"
    text = quickstart.read_text()
    assert "type: ignore" not in text
    assert "cast(" not in text
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path), str(quickstart)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.stdout.splitlines()[-1] == "Success: no issues found in 1 source file", (
        result.stdout
    )


def test_the_board_checks_strictly_with_its_member_class(tmp_path: Path) -> None:
    """The demo board's app code (its tests aside): mypy --strict clean, ``ctx.user`` a
    ``Member`` through ``Context[Member]``, with no ``type: ignore``."""
    board = HERE.parents[1] / "examples" / "board"
    sources = [p for p in board.glob("*.py")]
    assert all("type: ignore" not in p.read_text() for p in sources)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            "--cache-dir",
            str(tmp_path),
            *map(str, sources),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=board.parent,
    )
    assert result.stdout.splitlines()[-1].startswith("Success: no issues found"), result.stdout
