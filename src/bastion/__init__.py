"""bastion: server actions for Python, secure by default.

Everything public is named here; the modules behind it are the pipeline's stages.
"""

from .app import Bastion
from .config import Config, Limits
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
from .keys import Secret, generate_secret_key
from .policy import Policy, public
from .uploads import Upload

__all__ = [
    "ActionError",
    "BadRequest",
    "Bastion",
    "BastionError",
    "Config",
    "ConfigurationError",
    "Context",
    "Forbidden",
    "Limits",
    "MethodNotAllowed",
    "NotFound",
    "PayloadTooLarge",
    "Policy",
    "RateLimited",
    "Secret",
    "ServiceUnavailable",
    "Timeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "Upload",
    "ValidationFailed",
    "generate_secret_key",
    "public",
]
