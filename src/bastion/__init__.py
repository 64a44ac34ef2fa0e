"""bastion: server actions for Python, secure by default.

Everything public is named here; the modules behind it are the pipeline's stages.
"""

from .app import Bastion
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
from .keys import Secret, generate_secret_key
from .policy import Policy, public
from .sessions import Session
from .stores import MemoryStore, SQLiteStore, Store
from .uploads import Upload

__all__ = [
    "ActionError",
    "BadRequest",
    "Bastion",
    "BastionError",
    "Config",
    "ConfigurationError",
    "Context",
    "Flash",
    "Forbidden",
    "Limits",
    "MemoryStore",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
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
    "ValidationFailed",
    "generate_secret_key",
    "public",
]
