"""The schema manifest: ``Bastion.schema()``, ``serve_schema``, ``include_in_openapi`` and
``bastion schema`` / ``bastion client``.

The document is held to the OpenAPI 3.1 spec (openapi-spec-validator), to one action's
exact shape, to the refusals each feature adds, to carrying nothing secret, and, served,
to a 404 indistinguishable from an unknown path for anyone its policy refuses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pytest
from conftest import SECRET, mounted
from fastapi import FastAPI
from openapi_spec_validator import validate
from pydantic import BaseModel, ConfigDict, Field, create_model

from bastion import (
    Bastion,
    Bound,
    Context,
    Redirect,
    Upload,
    authenticated,
    public,
    recent_login,
    require,
)
from bastion.actions.schema import ERROR_ENVELOPE
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

REPO = Path(__file__).resolve().parent.parent
BASTION = Path(sys.executable).with_name("bastion")
ENVELOPE = {"$ref": "#/components/schemas/ErrorEnvelope"}


@dataclass(frozen=True)
class Member:
    id: int
    roles: frozenset[str] = frozenset()
    permissions: frozenset[str] = frozenset()


MEMBERS = {1: Member(1, frozenset({"admin"})), 2: Member(2, frozenset({"author"}))}


class Note(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field(min_length=1, max_length=200)


class Saved(BaseModel):
    id: int
    text: str


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: int


class PostRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    post_id: int


class Avatar(BaseModel):
    model_config = ConfigDict(extra="forbid")
    picture: Upload


class Done(BaseModel):
    done: bool = True


def make_app(**options: Any) -> Bastion[Member]:
    bastion: Bastion[Member] = Bastion(
        secret_key=SECRET,
        allowed_origins=["http://127.0.0.1"],
        store=MemoryStore(),
        load_user=MEMBERS.get,
        **options,
    )

    @bastion.action(policy=public, rate="20/minute")
    def add_note(data: Note) -> Saved:
        """Add a note to the board.

        Anyone may; the text is kept as it is."""
        return Saved(id=1, text=data.text)

    @bastion.action(policy=public, rate=None)
    async def sign_in(ctx: Context[Member], data: SignIn) -> Done:
        await ctx.login(MEMBERS[data.user])
        return Done()

    @bastion.action(policy=authenticated, rate=None)
    def ping() -> None:
        return None

    @bastion.action(policy=require("post:delete"), idempotent=True, tokens="posts:write")
    def delete_post(ref: Annotated[PostRef, Bound]) -> Redirect:
        return Redirect("/")

    @bastion.action(policy=recent_login(300), max_file_bytes=1000)
    def set_avatar(data: Avatar) -> Done:
        return Done()

    return bastion


@pytest.fixture
def bastion() -> Bastion[Member]:
    return make_app()


def operation(document: dict[str, Any], bastion: Bastion[Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = document["paths"][bastion.url_for(name)]["post"]
    return found


def codes(op: dict[str, Any]) -> dict[str, list[str]]:
    return {
        status: reply["x-bastion-errors"]
        for status, reply in op["responses"].items()
        if status != "200"
    }


def test_the_document_is_valid_openapi_3_1(bastion: Bastion[Member]) -> None:
    """openapi-spec-validator accepts it; every action is one POST at its url_for path."""
    document = bastion.schema(title="Board", version="2.0")
    validate(document)
    assert document["openapi"] == "3.1.0"
    assert document["info"] == {"title": "Board", "version": "2.0"}
    assert sorted(document["paths"]) == sorted(bastion.url_for(s.name) for s in bastion.registry)
    assert all(list(item) == ["post"] for item in document["paths"].values())


def test_one_action_exactly(bastion: Bastion[Member]) -> None:
    """add_note: its name, docstring, CSRF header, bodies, envelope, refusals, summary."""
    document = bastion.schema()
    op = operation(document, bastion, "add_note")
    assert op["operationId"] == "add_note"
    assert op["summary"] == "Add a note to the board."
    assert op["description"] == "Anyone may; the text is kept as it is."
    assert op["parameters"] == [
        {
            "name": "X-CSRF-Token",
            "in": "header",
            "required": True,
            "description": (
                "The CSRF token bound to the caller's session (a page's csrf_meta(), "
                "bastion.csrf_token(request)); a plain form sends it in _csrf instead. "
                "Every call with the session cookie needs it."
            ),
            "schema": {"type": "string"},
        }
    ]
    note = {
        "additionalProperties": False,
        "properties": {
            "text": {"maxLength": 200, "minLength": 1, "title": "Text", "type": "string"}
        },
        "required": ["text"],
        "title": "Note",
        "type": "object",
    }
    assert document["components"]["schemas"]["Note"] == note
    body = op["requestBody"]
    assert body["required"] is True
    assert list(body["content"]) == ["application/json", "application/x-www-form-urlencoded"]
    assert body["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Note"}
    form = body["content"]["application/x-www-form-urlencoded"]["schema"]
    assert list(form["properties"]) == ["text", "_csrf", "_next"]
    assert form["required"] == ["text", "_csrf"]
    assert form["additionalProperties"] is False
    assert op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "properties": {"ok": {"const": True}, "data": {"$ref": "#/components/schemas/Saved"}},
        "required": ["ok", "data"],
        "additionalProperties": False,
    }
    assert codes(op) == {
        "400": ["malformed", "forwarding_refused", "token_in_url", "token_with_cookie"],
        "403": ["cross_origin", "csrf_failed", "no_session", "token_not_accepted"],
        "408": ["request_timeout"],
        "413": ["payload_too_large"],
        "415": ["unsupported_media_type"],
        "422": ["invalid"],
        "429": ["rate_limited"],
        "500": ["internal"],
        "503": ["unavailable"],
        "504": ["timeout"],
    }
    for status, reply in op["responses"].items():
        if status != "200":
            assert reply["content"] == {"application/json": {"schema": ENVELOPE}}, status
    assert op["security"] == [{"sessionCookie": []}]
    assert op["x-bastion"] == {
        "name": "add_note",
        "policy": "public",
        "rate": "20/minute",
        "idempotent": False,
        "tokens": None,
        "step_up_seconds": None,
        "content_types": ["application/json", "application/x-www-form-urlencoded"],
    }
    assert document["components"]["schemas"]["ErrorEnvelope"] == ERROR_ENVELOPE
    cookie = document["components"]["securitySchemes"]["sessionCookie"]
    assert cookie["name"] == "bastion_session"


def test_refusals_follow_each_feature() -> None:
    """No input: no 422; a signed-in policy: 401; idempotent: its key, 409 and 422; a
    bound value: _bound and bound_invalid; tokens: bearer with scopes; step-up:
    reauthentication_required; uploads: multipart; no limit anywhere: no 429."""
    bastion = make_app(refusal_rate=None)
    document = bastion.schema()
    validate(document)

    ping = operation(document, bastion, "ping")
    assert set(codes(ping)) == {"400", "401", "403", "408", "413", "415", "500", "503", "504"}
    assert codes(ping)["401"] == ["unauthorized"]
    assert "forbidden" in codes(ping)["403"]
    assert ping["requestBody"]["content"]["application/json"]["schema"] == {
        "type": "object",
        "properties": {},
        "additionalProperties": False,
    }
    assert ping["responses"]["200"]["content"]["application/json"]["schema"]["properties"][
        "data"
    ] == {"type": "null"}

    sign_in = operation(document, bastion, "sign_in")
    assert "401" not in codes(sign_in)
    assert "forbidden" not in codes(sign_in)["403"]
    assert "429" not in codes(sign_in)

    delete = operation(document, bastion, "delete_post")
    assert [p["name"] for p in delete["parameters"]] == ["X-CSRF-Token", "Idempotency-Key"]
    assert delete["parameters"][0]["required"] is False  # a token call sends none
    assert codes(delete)["409"] == ["idempotency_in_progress"]
    assert codes(delete)["422"] == ["idempotency_key_reused"]  # no input: no "invalid"
    assert {"bound_invalid", "idempotency_key_invalid"} <= set(codes(delete)["400"])
    assert codes(delete)["401"] == ["unauthorized", "invalid_token"]
    assert "insufficient_scope" in codes(delete)["403"]
    assert "token_not_accepted" not in codes(delete)["403"]
    assert codes(delete)["429"] == ["rate_limited"]  # tokens are counted (token_rate)
    assert delete["security"] == [
        {"sessionCookie": []},
        {"bearerAuth": ["delete_post", "posts:write"]},
    ]
    json_body = delete["requestBody"]["content"]["application/json"]["schema"]
    assert json_body["required"] == ["_bound"]
    form = delete["requestBody"]["content"]["application/x-www-form-urlencoded"]["schema"]
    assert list(form["properties"]) == ["_csrf", "_next", "_idem", "_bound"]
    success = delete["responses"]["200"]["content"]["application/json"]["schema"]
    assert success["properties"]["redirect"]["type"] == "string"
    assert delete["x-bastion"]["tokens"] == ["delete_post", "posts:write"]
    assert delete["x-bastion"]["idempotent"] is True
    assert delete["x-bastion"]["policy"] == "require('post:delete')"
    assert document["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"

    avatar = operation(document, bastion, "set_avatar")
    assert codes(avatar)["401"] == ["unauthorized", "reauthentication_required"]
    assert avatar["x-bastion"]["step_up_seconds"] == 300
    assert list(avatar["requestBody"]["content"]) == [
        "application/json",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ]
    picture = document["components"]["schemas"]["Avatar"]["properties"]["picture"]
    assert picture["format"] == "binary"


def test_an_app_over_https_names_the_host_prefixed_cookie() -> None:
    """Over https the session cookie is __Host-bastion_session, so the scheme says so."""
    document = make_app(https=True).schema()
    assert document["components"]["securitySchemes"]["sessionCookie"]["name"] == (
        "__Host-bastion_session"
    )


def test_nothing_secret_reaches_the_document(bastion: Bastion[Member]) -> None:
    """No key, no sealed value, no tainted value, no session: only what code decides."""
    bastion.taint_env("PATH", "a stand-in for an API key")
    sealed = bastion.seal("delete_post", {"post_id": 4242})
    with ActionClient(mounted(bastion), bastion) as client:
        assert client.call("sign_in", {"user": 1}).status_code == 200
        session_id = client.session_id
        token = client.token()
    text = json.dumps(bastion.schema())
    assert session_id is not None
    for secret in (SECRET, sealed, session_id, token, os.environ["PATH"], "4242"):
        assert secret not in text
    assert "fallback" not in text.lower()


# --- served behind a policy -----------------------------------------------------------


@pytest.fixture
def served() -> Iterator[tuple[Bastion[Member], ActionClient, str]]:
    bastion = make_app()
    path = bastion.serve_schema(policy=require(roles={"admin"}), title="Board")
    with ActionClient(mounted(bastion), bastion) as client:
        yield bastion, client, path


def unknown(client: ActionClient) -> tuple[int, dict[str, str], bytes]:
    """What an unknown path under the prefix answers."""
    reply = client.get("/_actions/no-such-thing")
    return reply.status_code, dict(reply.headers), reply.content


def test_the_manifest_is_not_served_by_default() -> None:
    """Without serve_schema, {prefix}/openapi.json is the unknown path's 404."""
    bastion = make_app()
    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.get("/_actions/openapi.json")
        assert (reply.status_code, dict(reply.headers), reply.content) == unknown(client)
        assert reply.status_code == 404


def test_anonymous_gets_the_unknown_paths_404(
    served: tuple[Bastion[Member], ActionClient, str],
) -> None:
    """An anonymous visitor cannot tell the manifest from nothing: same status, headers
    and body as an unknown path."""
    _, client, path = served
    assert path == "/_actions/openapi.json"
    reply = client.get(path)
    assert reply.status_code == 404
    assert reply.json() == {"ok": False, "error": {"code": "not_found", "message": "Not found."}}
    assert (reply.status_code, dict(reply.headers), reply.content) == unknown(client)


def test_a_signed_in_user_without_the_role_gets_the_same_404(
    served: tuple[Bastion[Member], ActionClient, str],
) -> None:
    """The policy's 403 is not shown either: every refusal is the unknown path's 404."""
    _, client, path = served
    assert client.call("sign_in", {"user": 2}).status_code == 200
    reply = client.get(path)
    assert (reply.status_code, dict(reply.headers), reply.content) == unknown(client)


def test_an_admin_gets_the_manifest(served: tuple[Bastion[Member], ActionClient, str]) -> None:
    """The policy allows: 200, JSON, no-store, and the document schema() gives."""
    bastion, client, path = served
    assert client.call("sign_in", {"user": 1}).status_code == 200
    reply = client.get(path)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    assert reply.json() == bastion.schema(title="Board")


def test_serve_schema_needs_a_policy() -> None:
    """No policy is a ConfigurationError, as an action without one is."""
    from bastion import ConfigurationError

    with pytest.raises(ConfigurationError, match="serve_schema: policy"):
        make_app().serve_schema(policy=None)  # type: ignore[arg-type]


# --- FastAPI's own document -------------------------------------------------------------


FastAPINote = create_model("Note", body=(str, ...))
"""A FastAPI route's model that FastAPI names Note too, with other fields."""


def test_include_in_openapi_merges_into_fastapis_document() -> None:
    """FastAPI's /openapi.json gets the actions' paths, schemas and security schemes; a
    component FastAPI already names differently is ours as bastion_Note, refs and all;
    the result is valid and built once."""
    bastion = make_app()
    app = FastAPI(title="Notes", version="3")

    @app.post("/api/notes")
    async def create(note: FastAPINote) -> Saved:
        return Saved(id=1, text=note.body)

    bastion.mount(app)
    bastion.include_in_openapi(app)
    document = app.openapi()
    validate(document)
    assert document is app.openapi()
    assert document["info"]["title"] == "Notes"
    assert "/api/notes" in document["paths"]
    add = document["paths"][bastion.url_for("add_note")]["post"]
    assert add["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/bastion_Note"
    }
    schemas = document["components"]["schemas"]
    assert schemas["Note"]["properties"] == {"body": {"title": "Body", "type": "string"}}
    assert list(schemas["bastion_Note"]["properties"]) == ["text"]
    assert schemas["Saved"]["properties"]["id"] == {"title": "Id", "type": "integer"}
    assert set(document["components"]["securitySchemes"]) == {"sessionCookie", "bearerAuth"}
    with ActionClient(app, bastion) as client:
        assert client.get("/openapi.json").json() == document


# --- the command line -------------------------------------------------------------------


def board_env(data_dir: str) -> dict[str, str]:
    """The Makefile's `audit` environment: a throwaway key and data directory."""
    key = subprocess.run(
        [str(BASTION), "keygen"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_ALLOWED_ORIGINS": "http://127.0.0.1",
        "BASTION_SECRET_KEY": key,
        "BOARD_DATA_DIR": data_dir,
    }


def test_bastion_schema_of_the_board_is_valid_and_complete(tmp_path: Path) -> None:
    """`bastion schema board.app:bastion`: valid OpenAPI 3.1, every board action at its
    path with its input and output schemas (read from the board's own registry)."""
    env = board_env(str(tmp_path))
    done = subprocess.run(
        [str(BASTION), "schema", "board.app:bastion"],
        cwd=REPO / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(done.stdout)
    validate(document)
    assert done.stdout == json.dumps(document, indent=2) + "\n"
    # The registry, as the same environment builds it, in a process of its own.
    listing = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json; from board.app import bastion; print(json.dumps([[s.name, "
            "bastion.url_for(s.name), s.data_param is not None, s.output is not None] "
            "for s in bastion.registry]))",
        ],
        cwd=REPO / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    actions = json.loads(listing.stdout)
    assert len(actions) == len(document["paths"]) > 10
    schemas = document["components"]["schemas"]
    for name, path, has_input, has_output in actions:
        op = document["paths"][path]["post"]
        assert op["operationId"] == name
        body = op["requestBody"]["content"]["application/json"]["schema"]
        success = op["responses"]["200"]["content"]["application/json"]["schema"]
        data = success["properties"]["data"]
        if has_input:
            ref = body.get("$ref") or body["title"]
            assert ref.rsplit("/", 1)[-1] in schemas, name
        if has_output:
            assert data != {"type": "null"}, name
            for ref in _refs(data):
                assert ref.removeprefix("#/components/schemas/") in schemas, name


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def test_schema_out_writes_the_file_and_bad_targets_are_usage_errors(tmp_path: Path) -> None:
    """--out FILE gets the same JSON; a target that is not MODULE:ATTR exits 2."""
    env = board_env(str(tmp_path))
    out = tmp_path / "schema.json"
    done = subprocess.run(
        [str(BASTION), "schema", "board.app:bastion", "--out", str(out)],
        cwd=REPO / "examples",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    validate(json.loads(out.read_text()))
    bad = subprocess.run(
        [str(BASTION), "schema", "board.app"],
        cwd=REPO / "examples",
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (bad.returncode, bad.stderr) == (2, "bastion schema: 'board.app' is not MODULE:ATTR\n")


def test_bastion_client_writes_the_typescript_client(tmp_path: Path) -> None:
    """`bastion client --ts OUTDIR MODULE:ATTR` hands the schema to bastion.tsclient and
    prints the files it wrote."""
    env = board_env(str(tmp_path / "data"))
    with tempfile.TemporaryDirectory() as out:
        done = subprocess.run(
            [str(BASTION), "client", "--ts", out, "board.app:bastion"],
            cwd=REPO / "examples",
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        written = [Path(line) for line in done.stdout.splitlines()]
        assert written
        assert all(path.is_file() and path.parent == Path(out) for path in written)
