"""Configuration: frozen keyword-only dataclasses, every bad value refused at start-up."""

import ast
import dataclasses
import inspect
import math
from pathlib import Path
from typing import Any

import pytest
from conftest import OTHER_SECRET, SECRET

from bastion import (
    Bastion,
    Config,
    ConfigurationError,
    Environment,
    Limits,
    MemoryStore,
    Secret,
    SQLiteStore,
)
from bastion import config as config_module
from bastion.config import check_timeout

LIMIT_FIELDS = (
    "max_body_bytes",
    "max_pre_token_bytes",
    "max_fields",
    "max_field_name_length",
    "max_json_depth",
    "max_files",
    "max_file_bytes",
)


# --- Limits ----------------------------------------------------------------------------


def test_limits_defaults() -> None:
    """The default bounds: 1 MiB body (64 KiB of a form before its token), 1000 fields,
    128-char names, depth 32, 10 files of 10 MiB."""
    assert dataclasses.asdict(Limits()) == {
        "max_body_bytes": 1024 * 1024,
        "max_pre_token_bytes": 64 * 1024,
        "max_fields": 1000,
        "max_field_name_length": 128,
        "max_json_depth": 32,
        "max_files": 10,
        "max_file_bytes": 10 * 1024 * 1024,
    }


def test_limits_fields_are_all_checked() -> None:
    """Every Limits field is one this test file checks (a new field needs its tests)."""
    assert tuple(f.name for f in dataclasses.fields(Limits)) == LIMIT_FIELDS


@pytest.mark.parametrize("field", LIMIT_FIELDS)
@pytest.mark.parametrize("value", [0, -1, True, False, 1.5, 2.0, "10", None])
def test_limits_refuses_non_positive_and_non_int(field: str, value: Any) -> None:
    """Zero, negatives, bools, floats, strings and None are refused, naming the field."""
    with pytest.raises(ConfigurationError) as caught:
        Limits(**{field: value})
    assert str(caught.value) == f"Limits.{field} must be a positive integer, not {value!r}"


@pytest.mark.parametrize("field", LIMIT_FIELDS)
def test_limits_accepts_one(field: str) -> None:
    """1 is the smallest accepted bound."""
    assert getattr(Limits(**{field: 1}), field) == 1


def test_limits_is_keyword_only() -> None:
    """Limits cannot be built positionally (an argument's meaning is never guessed)."""
    with pytest.raises(TypeError):
        Limits(10)  # type: ignore[misc]


def test_limits_is_frozen() -> None:
    """A Limits cannot be changed after it is built."""
    limits = Limits()
    with pytest.raises(dataclasses.FrozenInstanceError):
        limits.max_body_bytes = 5  # type: ignore[misc]
    assert limits.max_body_bytes == 1024 * 1024


def test_limits_replace_is_checked() -> None:
    """dataclasses.replace runs the same checks as the constructor."""
    with pytest.raises(ConfigurationError, match=r"^Limits.max_files must be a positive integer"):
        dataclasses.replace(Limits(), max_files=-3)


def test_custom_limits_reach_the_config_and_actions() -> None:
    """Limits passed to Bastion become config.limits and every action's default."""
    limits = Limits(max_body_bytes=2048)
    bastion = Bastion(secret_key=SECRET, limits=limits)
    assert bastion.config.limits is limits

    @bastion.action(policy=lambda ctx: True, max_files=3)
    def upload() -> None: ...

    spec = bastion.registry.get(upload)
    assert spec.limits == Limits(max_body_bytes=2048, max_files=3)


# --- timeout ----------------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, 0.0, -1, -0.5, math.inf, -math.inf, math.nan])
def test_timeout_must_be_positive_and_finite(value: float) -> None:
    """Zero, negative, infinite and NaN timeouts are refused."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, timeout=value)
    assert str(caught.value) == (f"timeout must be a positive number of seconds, not {value!r}")


@pytest.mark.parametrize("value", [True, "5", None])
def test_timeout_must_be_a_number(value: Any) -> None:
    """A bool, a string or None is not a number of seconds."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, timeout=value)
    assert str(caught.value) == f"timeout must be a number of seconds, not {value!r}"


def test_timeout_int_becomes_float() -> None:
    """An int timeout is accepted and kept as a float."""
    assert check_timeout(5, "timeout") == 5.0
    assert isinstance(check_timeout(5, "timeout"), float)
    assert Bastion(secret_key=SECRET, timeout=2).config.timeout == 2.0


def test_action_inherits_or_overrides_the_timeout() -> None:
    """An action's timeout is Bastion's unless it names its own."""
    bastion = Bastion(secret_key=SECRET, timeout=7)

    @bastion.action(policy=lambda ctx: True)
    def default() -> None: ...

    @bastion.action(policy=lambda ctx: True, timeout=0.25)
    def quick() -> None: ...

    assert bastion.registry.get(default).timeout == 7.0
    assert bastion.registry.get(quick).timeout == 0.25


# --- prefix -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/_actions", "/api", "/api/v1/actions", "/a.b", "/x-y_z~"])
def test_valid_prefixes_are_accepted(prefix: str) -> None:
    """Plain paths starting with '/' become the prefix of every action URL."""
    bastion = Bastion(secret_key=SECRET, prefix=prefix)

    @bastion.action(policy=lambda ctx: True)
    def act() -> None: ...

    assert bastion.config.prefix == prefix
    assert bastion.url_for(act).startswith(prefix + "/")
    assert bastion.script_url == prefix + "/bastion.js"


@pytest.mark.parametrize(
    "prefix",
    ["", "/", "_actions", "/_actions/", "//evil", "/a//b", "/{tenant}", "/a b", "/a?b", "/a#b",
     "/%2e", "/..", "/.", "/a/../b", "/é", None, 5],
)  # fmt: skip
def test_invalid_prefixes_are_refused(prefix: Any) -> None:
    """Anything but a plain '/segment/…' path is refused at start-up, naming the value."""
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, prefix=prefix)
    assert str(caught.value) == (
        "prefix must be a plain path that starts with '/' and does not end with one "
        f"(letters, digits, '-', '_', '.', '~' between slashes), not {prefix!r}"
    )


# --- Config -----------------------------------------------------------------------------


def test_config_holds_what_bastion_was_given() -> None:
    """Bastion resolves its arguments into one Config."""
    limits = Limits(max_fields=9)
    bastion = Bastion(
        secret_key=SECRET,
        prefix="/rpc",
        limits=limits,
        timeout=3,
        secret_key_fallbacks=[],
        allowed_origins=["https://app.example"],
    )
    assert bastion.config == Config(
        secret_key=Secret(SECRET.encode()),
        secret_key_fallbacks=(),
        debug=False,
        prefix="/rpc",
        limits=limits,
        timeout=3.0,
        allowed_origins=("https://app.example:443",),
        trusted_hosts=("app.example",),
    )
    assert bastion.debug is False


def test_config_defaults_are_the_secure_ones() -> None:
    """Without arguments: no debug, /_actions, default limits, 30 s timeout."""
    config = Bastion(secret_key=SECRET).config
    assert (config.debug, config.prefix, config.limits, config.timeout) == (
        False,
        "/_actions",
        Limits(),
        30.0,
    )
    assert config.secret_key_fallbacks == ()


def test_config_is_frozen() -> None:
    """A Config cannot be changed after start-up."""
    config = Bastion(secret_key=SECRET).config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.debug = True  # type: ignore[misc]
    assert config.debug is False


def test_config_is_keyword_only() -> None:
    """Config cannot be built positionally."""
    with pytest.raises(TypeError):
        Config(Secret(SECRET.encode()))  # type: ignore[misc]


def test_config_checks_its_own_values() -> None:
    """Config built directly validates prefix and timeout as Bastion does."""
    with pytest.raises(ConfigurationError, match=r"^prefix must be a plain path"):
        Config(secret_key=Secret(SECRET.encode()), prefix="/x/")
    with pytest.raises(ConfigurationError, match=r"^timeout must be a positive number"):
        Config(secret_key=Secret(SECRET.encode()), timeout=-1)


def test_config_repr_never_shows_the_secret() -> None:
    """repr and str of the config mask the root secret and every fallback."""
    config = Bastion(secret_key=SECRET, secret_key_fallbacks=[OTHER_SECRET]).config
    for text in (repr(config), str(config)):
        assert SECRET not in text
        assert OTHER_SECRET not in text
        assert "secret_key=Secret('**********')" in text
        assert "secret_key_fallbacks=(Secret('**********'),)" in text


def test_bastion_repr_names_prefix_and_action_count() -> None:
    """repr(Bastion) shows the prefix and how many actions, never the key."""
    bastion = Bastion(secret_key=SECRET)

    @bastion.action(policy=lambda ctx: True)
    def one() -> None: ...

    assert repr(bastion) == "Bastion(prefix='/_actions', actions=1)"


def test_every_config_field_has_a_docstring() -> None:
    """Each Config and Limits field is documented in the source, right under it."""
    tree = ast.parse(inspect.getsource(config_module))
    for cls in (Config, Limits):
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls.__name__)
        documented = {
            stmt.target.id
            for stmt, following in zip(node.body, node.body[1:], strict=False)
            if isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        }
        assert documented == {f.name for f in dataclasses.fields(cls)}, cls.__name__


# --- the environment ---------------------------------------------------------------------

ENV_VARS = (
    "BASTION_SECRET_KEY",
    "BASTION_SECRET_KEY_FALLBACKS",
    "BASTION_ALLOWED_ORIGINS",
    "BASTION_TRUSTED_HOSTS",
    "BASTION_TRUSTED_PROXIES",
    "BASTION_HTTPS",
    "BASTION_STORE",
    "BASTION_DATA_DIR",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """None of bastion's variables set, whatever the test process had."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_environment_unset_and_empty_variables_are_none() -> None:
    """Nothing set, or set to blanks, is the same: ``None`` everywhere."""
    assert Environment.read({}) == Environment()
    assert Environment.read(dict.fromkeys(ENV_VARS, "  ")) == Environment()


def test_environment_reads_every_variable() -> None:
    """Each variable, lists split on commas with blanks dropped."""
    read = Environment.read(
        {
            "BASTION_SECRET_KEY": "k" * 40,
            "BASTION_SECRET_KEY_FALLBACKS": "o" * 40 + ", " + "p" * 40,
            "BASTION_ALLOWED_ORIGINS": "https://a.example, https://b.example,",
            "BASTION_TRUSTED_HOSTS": "a.example,b.example",
            "BASTION_TRUSTED_PROXIES": "10.0.0.0/8, 127.0.0.1",
            "BASTION_HTTPS": "TRUE",
            "BASTION_STORE": "redis://cache:6379/2",
            "BASTION_DATA_DIR": "/srv/bastion",
        }
    )
    assert read == Environment(
        secret_key="k" * 40,
        secret_key_fallbacks=("o" * 40, "p" * 40),
        allowed_origins=("https://a.example", "https://b.example"),
        trusted_hosts=("a.example", "b.example"),
        trusted_proxies=("10.0.0.0/8", "127.0.0.1"),
        https=True,
        store="redis://cache:6379/2",
        data_dir="/srv/bastion",
    )


@pytest.mark.parametrize(
    ("value", "https"), [("1", True), ("yes", True), ("on", True), ("0", False), ("False", False)]
)
def test_environment_https_spellings(value: str, https: bool) -> None:
    assert Environment.read({"BASTION_HTTPS": value}).https is https


def test_environment_https_that_means_nothing_stops_the_app() -> None:
    """``BASTION_HTTPS=maybe`` is refused at start-up, naming the variable (never read as
    false, which would drop the Secure cookie flag)."""
    with pytest.raises(ConfigurationError) as caught:
        Environment.read({"BASTION_HTTPS": "maybe"})
    assert str(caught.value) == "BASTION_HTTPS must be true or false (or 1/0, yes/no), not 'maybe'"


def test_bastion_takes_what_it_was_not_given_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    """Every variable reaches the app built with no arguments, as the quickstart and the
    board are: a token made under the old key still verifies with the fallback."""
    old = Bastion(secret_key=OTHER_SECRET, allowed_origins=["https://board.example"])
    clean_env.setenv("BASTION_SECRET_KEY", SECRET)
    clean_env.setenv("BASTION_SECRET_KEY_FALLBACKS", OTHER_SECRET)
    clean_env.setenv("BASTION_ALLOWED_ORIGINS", "https://board.example")
    clean_env.setenv("BASTION_TRUSTED_HOSTS", "board.example,internal.example")
    clean_env.setenv("BASTION_TRUSTED_PROXIES", "10.1.0.0/16")
    clean_env.setenv("BASTION_HTTPS", "true")
    clean_env.setenv("BASTION_STORE", "memory://")
    app = Bastion()
    assert app.config.secret_key == Bastion(secret_key=SECRET, debug=True).config.secret_key
    assert app.config.secret_key_fallbacks == (old.config.secret_key,)
    assert app.keys.all("csrf")[1] == old.keys.current("csrf")
    assert app.config.allowed_origins == ("https://board.example:443",)
    assert app.config.trusted_hosts == ("board.example", "internal.example")
    assert [str(n) for n in app.trusted_proxies] == ["10.1.0.0/16"]
    assert app.config.https is True
    assert isinstance(app.store, MemoryStore)


def test_arguments_win_over_the_environment(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An app that passes a value keeps it, whatever the environment says."""
    clean_env.setenv("BASTION_SECRET_KEY", OTHER_SECRET)
    clean_env.setenv("BASTION_SECRET_KEY_FALLBACKS", OTHER_SECRET)
    clean_env.setenv("BASTION_ALLOWED_ORIGINS", "https://env.example")
    clean_env.setenv("BASTION_TRUSTED_HOSTS", "env.example")
    clean_env.setenv("BASTION_TRUSTED_PROXIES", "10.1.0.0/16")
    clean_env.setenv("BASTION_HTTPS", "true")
    clean_env.setenv("BASTION_STORE", "memory://")
    store = SQLiteStore(str(tmp_path))
    app = Bastion(
        secret_key=SECRET,
        secret_key_fallbacks=[],
        allowed_origins=["https://app.example"],
        trusted_hosts=["app.example"],
        trusted_proxies=[],
        https=False,
        store=store,
    )
    assert app.config.secret_key == Bastion(secret_key=SECRET, debug=True).config.secret_key
    assert app.config.secret_key_fallbacks == ()
    assert app.config.allowed_origins == ("https://app.example:443",)
    assert app.config.trusted_hosts == ("app.example",)
    assert app.trusted_proxies == ()
    assert app.config.https is False
    assert app.store is store


def test_data_dir_places_the_default_store_and_bastion_store_wins(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``data_dir=`` (the board's own data directory) wins over ``BASTION_DATA_DIR`` for
    the default SQLite store; ``BASTION_STORE`` wins over both, so one variable moves a
    board's sessions to Redis."""
    clean_env.setenv("BASTION_DATA_DIR", str(tmp_path / "env"))
    app = Bastion(secret_key=SECRET, allowed_origins=["https://app.example"], data_dir=tmp_path)
    assert isinstance(app.store, SQLiteStore)
    assert app.store.path == tmp_path / "bastion.sqlite3"
    clean_env.setenv("BASTION_STORE", "memory://")
    moved = Bastion(secret_key=SECRET, allowed_origins=["https://app.example"], data_dir=tmp_path)
    assert isinstance(moved.store, MemoryStore)


def test_trusted_proxies_that_are_not_networks_name_the_variable(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("BASTION_TRUSTED_PROXIES", "10.0.0.1, proxy.internal")
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, allowed_origins=["https://app.example"])
    assert str(caught.value).startswith("BASTION_TRUSTED_PROXIES: ")
    assert "proxy.internal" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("redis:/cache:6379", "a value without a scheme"),
        ("postgres://user:hunter2@db/sessions", "postgres://"),
        ("rediss+cluster://a:1", "rediss+cluster://"),
    ],
)
def test_a_store_url_bastion_does_not_know_stops_the_app(
    clean_env: pytest.MonkeyPatch, value: str, named: str
) -> None:
    """A typo in BASTION_STORE used to mean SQLite beside each worker: sessions that
    quietly do not cross hosts. Now the app refuses to start, naming the scheme only
    (the rest of the URL may hold a password)."""
    clean_env.setenv("BASTION_STORE", value)
    with pytest.raises(ConfigurationError) as caught:
        Bastion(secret_key=SECRET, allowed_origins=["https://app.example"])
    assert str(caught.value).startswith(f"BASTION_STORE: {named} is not a store bastion knows")
    assert "hunter2" not in str(caught.value)
