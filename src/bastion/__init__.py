"""bastion: server actions for Python, secure by default.

Everything public is named here; the modules behind it are the pipeline's stages.
"""

from .app import Bastion
from .auth import LoginThrottle, Principal, User
from .binding import Bound
from .config import Config, Limits, SessionConfig
from .context import Context
from .errors import (
    ActionError,
    BadRequest,
    BastionError,
    ConfigurationError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from .flash import Flash
from .identity import LoginName, NewLoginName, canonical_login, check_new_login
from .keys import Secret, generate_secret_key
from .passwords import hash_password, needs_rehash, verify_password
from .policy import Policy, authenticated, predicate, public, require
from .sessions import Session
from .stores import MemoryStore, SQLiteStore, Store
from .uploads import Upload

__all__ = [
    "ActionError",
    "BadRequest",
    "Bastion",
    "BastionError",
    "Bound",
    "Config",
    "ConfigurationError",
    "Context",
    "Flash",
    "Forbidden",
    "Limits",
    "LoginName",
    "LoginThrottle",
    "MemoryStore",
    "MethodNotAllowed",
    "NewLoginName",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
    "Principal",
    "RateLimited",
    "SQLiteStore",
    "Secret",
    "ServiceUnavailable",
    "Session",
    "SessionConfig",
    "Store",
    "Timeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "Upload",
    "User",
    "ValidationFailed",
    "authenticated",
    "canonical_login",
    "check_new_login",
    "generate_secret_key",
    "hash_password",
    "needs_rehash",
    "predicate",
    "public",
    "require",
    "verify_password",
]
