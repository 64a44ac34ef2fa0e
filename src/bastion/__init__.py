"""bastion: server actions for Python, secure by default.

Everything public is named here; the modules behind it are the pipeline's stages.
"""

from bastion.actions.depends import Depends
from bastion.actions.policy import (
    Policy,
    authenticated,
    predicate,
    public,
    recent_login,
    require,
)
from bastion.actions.spec import Bound, Fragment, Redirect
from bastion.app import Bastion
from bastion.auth import LoginThrottle, Principal, User
from bastion.config import Config, Environment, Limits, SessionConfig
from bastion.context import Context
from bastion.crypto.keys import Secret, generate_secret_key
from bastion.errors import (
    ActionError,
    BadRequest,
    BastionError,
    ConfigurationError,
    Forbidden,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ReauthenticationRequired,
    ServiceUnavailable,
    Timeout,
    Unauthorized,
    UnsupportedMediaType,
    ValidationFailed,
)
from bastion.http.multipart import Upload
from bastion.identity import LoginName, NewLoginName, canonical_login, check_new_login
from bastion.messages import Messages
from bastion.passwords import hash_password, needs_rehash, verify_password
from bastion.pipeline.flash import Flash
from bastion.sessions import Session, get_session
from bastion.stores import MemoryStore, SQLiteStore, Store
from bastion.tokens import ApiToken, Tokens

__all__ = [
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
