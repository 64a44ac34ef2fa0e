"""A software WebAuthn authenticator: what a browser and a passkey send back, made here.

For the tests of bastion.passkeys and of the board's passkey actions over HTTP, where no
browser is driven. It answers ``navigator.credentials.create()`` with a ``none``
attestation of a new ES256 key and ``navigator.credentials.get()`` with an assertion
signed by it, as Chromium's own virtual authenticator does (the browser tests use that
one). Every field an attacker could change can be changed: the origin and rp_id the
answer claims, the user-verified flag, the counter, the challenge, the user handle.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator", "b64url", "unb64url"]

UP, UV, AT = 0x01, 0x04, 0x40
AAGUID = bytes(16)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Key:
    """One passkey the authenticator holds: its ID, private key, user and counter."""

    id: bytes
    private: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    count: int = 0

    def cose(self) -> bytes:
        numbers = self.private.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,  # kty: EC2
                3: -7,  # alg: ES256
                -1: 1,  # crv: P-256
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )


@dataclass
class SoftAuthenticator:
    """Answers options JSON (what ``Passkeys.*_options`` returns) as ``origin`` would."""

    origin: str
    keys: list[Key] = field(default_factory=list)
    counting: bool = True
    """Whether the counter goes up at each use (synced passkeys leave it at 0)."""

    def create(
        self,
        options_json: str,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
        challenge: str | None = None,
    ) -> str:
        """The JSON a page sends back after ``navigator.credentials.create(options)``."""
        options = json.loads(options_json)
        rp = rp_id or options["rp"]["id"]
        key = Key(
            id=secrets.token_bytes(16),
            private=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp,
            user_handle=unb64url(options["user"]["id"]),
        )
        self.keys.append(key)
        client_data = self._client_data(
            "webauthn.create", challenge or options["challenge"], origin
        )
        flags = UP | AT | (UV if verified else 0)
        attested = AAGUID + len(key.id).to_bytes(2, "big") + key.id + key.cose()
        auth_data = hashlib.sha256(rp.encode()).digest() + bytes([flags]) + bytes(4) + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps(
            {
                "id": b64url(key.id),
                "rawId": b64url(key.id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "attestationObject": b64url(attestation),
                    "transports": ["internal", "hybrid"],
                },
                "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
            }
        )

    def get(
        self,
        options_json: str,
        *,
        key: Key | None = None,
        origin: str | None = None,
        rp_id: str | None = None,
        verified: bool = True,
        challenge: str | None = None,
        user_handle: bytes | None = None,
        count: int | None = None,
    ) -> str:
        """The JSON a page sends back after ``navigator.credentials.get(options)``, signed
        by ``key`` (by default the last one made)."""
        options = json.loads(options_json)
        key = key or self.keys[-1]
        if self.counting:
            key.count += 1
        rp = rp_id or options["rpId"]
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin)
        flags = UP | (UV if verified else 0)
        signed = key.count if count is None else count
        auth_data = (
            hashlib.sha256(rp.encode()).digest() + bytes([flags]) + signed.to_bytes(4, "big")
        )
        signature = key.private.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return json.dumps(
            {
                "id": b64url(key.id),
                "rawId": b64url(key.id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "authenticatorData": b64url(auth_data),
                    "signature": b64url(signature),
                    "userHandle": b64url(key.user_handle if user_handle is None else user_handle),
                },
                "authenticatorAttachment": "platform",
                "clientExtensionResults": {},
            }
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data: dict[str, Any] = {
            "type": kind,
            "challenge": challenge,
            "origin": origin or self.origin,
            "crossOrigin": False,
        }
        return json.dumps(data, separators=(",", ":")).encode()
