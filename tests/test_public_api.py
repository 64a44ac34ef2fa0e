"""The public surface: ``bastion.__all__`` pinned, every name importable.

After httpx's ``tests/test_exported_members.py``: adding or removing a public name
is a deliberate change to this list.
"""

import types

import bastion
import bastion.testing

PUBLIC = [
    "ActionError",
    "ApiToken",
    "BadRequest",
    "Bastion",
    "BastionError",
    "Bound",
    "Config",
    "ConfigurationError",
    "Context",
    "Depends",
    "Environment",
    "Flash",
    "Forbidden",
    "Fragment",
    "Limits",
    "LoginName",
    "LoginThrottle",
    "MemoryStore",
    "Messages",
    "MethodNotAllowed",
    "NewLoginName",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
    "Principal",
    "RateLimited",
    "ReauthenticationRequired",
    "Redirect",
    "SQLiteStore",
    "Secret",
    "ServiceUnavailable",
    "Session",
    "SessionConfig",
    "Store",
    "Timeout",
    "Tokens",
    "Unauthorized",
    "UnsupportedMediaType",
    "Upload",
    "User",
    "ValidationFailed",
    "authenticated",
    "canonical_login",
    "check_new_login",
    "generate_secret_key",
    "get_session",
    "hash_password",
    "needs_rehash",
    "predicate",
    "public",
    "recent_login",
    "require",
    "verify_password",
]


def test_all_is_pinned() -> None:
    """bastion.__all__ is exactly the pinned list."""
    assert bastion.__all__ == PUBLIC


def test_all_is_sorted_without_duplicates() -> None:
    """__all__ is kept sorted (case-sensitive, as ruff's RUF022 does) with no repeats."""
    assert bastion.__all__ == sorted(set(bastion.__all__))


def test_every_name_in_all_is_importable() -> None:
    """Each name in __all__ exists on the package, as `from bastion import X` needs."""
    for name in bastion.__all__:
        assert hasattr(bastion, name), name
    namespace: dict[str, object] = {}
    exec("from bastion import *", namespace)  # noqa: S102
    assert sorted(k for k in namespace if k != "__builtins__") == PUBLIC


def test_every_public_attribute_is_in_all() -> None:
    """Nothing public is reachable on the package without being in __all__ (submodules aside)."""
    exposed = {
        name
        for name, value in vars(bastion).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert exposed == set(PUBLIC)


def test_exceptions_form_the_documented_tree() -> None:
    """Every error is a BastionError; refusals are ActionErrors, set-up mistakes are not."""
    refusals = [
        "BadRequest",
        "Forbidden",
        "MethodNotAllowed",
        "NotFound",
        "PayloadTooLarge",
        "RateLimited",
        "ServiceUnavailable",
        "Timeout",
        "Unauthorized",
        "UnsupportedMediaType",
        "ValidationFailed",
    ]
    for name in refusals:
        assert issubclass(getattr(bastion, name), bastion.ActionError), name
    assert issubclass(bastion.ActionError, bastion.BastionError)
    assert issubclass(bastion.ConfigurationError, bastion.BastionError)
    assert not issubclass(bastion.ConfigurationError, bastion.ActionError)
    assert issubclass(bastion.BastionError, Exception)


def test_public_classes_are_defined_in_bastion() -> None:
    """Public classes and functions come from bastion's own modules, not re-exports."""
    for name in PUBLIC:
        value = getattr(bastion, name)
        if isinstance(value, type | types.FunctionType):
            assert value.__module__.startswith("bastion."), name


def test_testing_module_surface() -> None:
    """bastion.testing exports ActionClient, its AUTO default and fast_passwords."""
    assert bastion.testing.__all__ == ["AUTO", "ActionClient", "fast_passwords"]
    assert bastion.testing.ActionClient.__module__ == "bastion.testing"
    assert repr(bastion.testing.AUTO) == "AUTO"


def test_package_is_typed() -> None:
    """The package ships py.typed, so users' type checkers read its annotations."""
    from importlib import resources

    assert resources.files("bastion").joinpath("py.typed").is_file()
