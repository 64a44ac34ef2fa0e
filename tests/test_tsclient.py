"""bastion.tsclient: the TypeScript the emitter writes for each kind of schema, the client
module for a document shaped as ``Bastion.schema()``'s, and that module under the real
compiler (``tsc --strict``: a right call compiles, a wrong one does not) and under Node
(what it sends, what it answers for a refusal, a network failure, a reply not JSON).

TypeScript is ``make``'s ``build/npm/node_modules/.bin/tsc``; without it these tests are
skipped, unless ``CI`` is set: then they fail."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from bastion.tsclient import CLIENT_FILE, Emitter, camel, identifier, literal, render, write_client

ROOT = Path(__file__).resolve().parent.parent
TSC = ROOT / "build" / "npm" / "node_modules" / ".bin" / "tsc"
CALLER = ROOT / "examples" / "ts" / "caller.ts"
# No DOM library: the client must compile without it (Node, a worker, a test runner).
TSC_FLAGS = ("--strict", "--target", "es2022", "--lib", "es2022", "--module", "commonjs")


def tool(name: str) -> str:
    """The path of ``tsc`` or ``node``; skipped without it, failed in CI."""
    found = str(TSC) if name == "tsc" and TSC.exists() else shutil.which(name)
    if found is None:
        message = f"{name} is not installed (make {TSC.relative_to(ROOT)})"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def tsc(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("tsc"), *TSC_FLAGS, "--pretty", "false", *args],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# --- the emitter ------------------------------------------------------------------------------

REFS = {"Tree": "Tree", "Color": "Color"}


@pytest.mark.parametrize(
    ("schema", "typescript"),
    [
        ({"type": "string", "format": "date-time"}, "string"),
        ({"type": "integer"}, "number"),
        ({"type": "number"}, "number"),
        ({"type": "boolean"}, "boolean"),
        ({"type": "null"}, "null"),
        ({}, "unknown"),
        ({"type": "string", "contentEncoding": "base64", "x-odd": 1, "not": {}}, "string"),
        ({"frobnicate": True}, "unknown"),
        (
            {
                "type": "object",
                "properties": {
                    "a": {"type": "string"},
                    "b": {"anyOf": [{"type": "integer"}, {"type": "null"}], "default": None},
                },
                "required": ["a"],
                "additionalProperties": False,
            },
            "{ a: string; b?: number | null }",
        ),
        ({"type": ["string", "null"]}, "string | null"),
        ({"$ref": "#/components/schemas/Tree", "nullable": True}, "Tree | null"),
        ({"allOf": [{"$ref": "#/components/schemas/Color"}]}, "Color"),
        ({"$ref": "#/components/schemas/Elsewhere"}, "unknown"),
        ({"$ref": "https://example.com/schema.json"}, "unknown"),
        ({"enum": ["a", 'b"c', 1, None, True]}, '"a" | "b\\"c" | 1 | null | true'),
        ({"const": "x\u2028y</script>"}, '"x\\u2028y</script>"'),
        ({"const": {"k": [1, "two"]}}, '{ k: [1, "two"] }'),
        (
            {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
            "(string | number)[]",
        ),
        ({"type": "array", "items": {"type": "array", "items": {"type": "number"}}}, "number[][]"),
        (
            {
                "type": "array",
                "prefixItems": [{"type": "integer"}, {"type": "string"}],
                "minItems": 2,
                "maxItems": 2,
            },
            "[number, string]",
        ),
        (
            {"type": "array", "prefixItems": [{"type": "integer"}], "items": {"type": "string"}},
            "[number, ...string[]]",
        ),
        (
            {"type": "array", "prefixItems": [{"type": "integer"}], "minItems": 0, "items": False},
            "[number?]",
        ),
        (
            {"type": "object", "additionalProperties": {"type": "integer"}},
            "{ [key: string]: number }",
        ),
        ({"type": "object"}, "{ [key: string]: unknown }"),
        (
            {
                "type": "object",
                "properties": {"x": {"type": "integer"}},
                "additionalProperties": {"type": "string"},
            },
            "{ x?: number; [key: string]: unknown }",
        ),
        (
            {
                "type": "object",
                "properties": {"weird-name": {"type": "integer"}, "class": {}, "é": {}, "$ok": {}},
                "required": ["weird-name"],
            },
            '{ "weird-name": number; class?: unknown; "\\u00e9"?: unknown; $ok?: unknown }',
        ),
        ({"anyOf": [{"type": "string"}, {}]}, "unknown"),
        ({"anyOf": [{"type": "string"}, {"type": "string"}]}, "string"),
        ({"enum": []}, "never"),
        ({"const": float("nan")}, "number"),
    ],
)
def test_each_schema_becomes_its_typescript_type(schema: dict[str, Any], typescript: str) -> None:
    assert Emitter(REFS).type(schema) == typescript


@pytest.mark.parametrize(
    ("name", "pascal", "expected"),
    [
        ("Draft-Input", True, "DraftInput"),
        ("Page[int]", True, "PageInt"),
        ("model.Tree", True, "ModelTree"),
        ("class", False, "class_"),
        ("string", False, "string_"),
        ("Record", True, "Record_"),
        ("1st", False, "_1st"),
        ("", True, "_"),
    ],
)
def test_names_become_identifiers_that_shadow_nothing(
    name: str, pascal: bool, expected: str
) -> None:
    assert identifier(name, pascal=pascal) == expected


def test_action_names_become_camel_case_methods() -> None:
    assert [camel(n) for n in ("create_post", "login", "delete", "2fa_setup")] == [
        "createPost",
        "login",
        "delete",
        "_2faSetup",
    ]


def test_string_literals_are_json_and_ascii() -> None:
    """Quotes, backslashes, line separators and lone surrogates are escaped as
    JSON.stringify reads them back."""
    assert literal('a"b\\c\n\u2028\ud800') == '"a\\"b\\\\c\\n\\u2028\\ud800"'


# --- the module -------------------------------------------------------------------------------


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    return {
        "description": "Done.",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"ok": {"const": True}, "data": data},
                    "required": ["ok", "data"],
                    "additionalProperties": False,
                }
            }
        },
    }


def refusals(**codes: list[str]) -> dict[str, Any]:
    return {
        status.removeprefix("s"): {
            "description": "Refused.",
            "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}
            },
            "x-bastion-errors": listed,
        }
        for status, listed in codes.items()
    }


def operation(name: str, body: Any, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    found: dict[str, Any] = {
        "operationId": name,
        "summary": f"internal notes about {name}",
        "x-bastion": {"name": name, "policy": "require(roles={'admin'})", "rate": "5/minute"},
        "responses": {
            "200": envelope(data),
            **refusals(s403=["csrf_failed", "no_session"], s422=["invalid"]),
        },
        **extra,
    }
    if body is not None:
        found["requestBody"] = {"required": True, "content": body}
    return found


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "The board", "version": "1"},
    "paths": {
        "/_actions/id-login": {
            "post": operation(
                "login",
                json_body(ref("Credentials")),
                {"anyOf": [ref("SignedIn"), ref("SecondStep")]},
            )
        },
        "/_actions/id-create": {
            "post": operation(
                "create_post",
                json_body(ref("Draft-Input")),
                ref("PostSaved"),
                **{"x-bastion": {"name": "create_post", "idempotent": True}},
            )
        },
        "/_actions/id-logout": {"post": operation("logout", None, ref("Notice"))},
        "/_actions/id-tree": {"post": operation("plant", json_body(ref("Tree")), ref("Result"))},
        "/_actions/id-upload": {
            "post": operation(
                "upload", {"multipart/form-data": {"schema": {"type": "object"}}}, ref("Notice")
            )
        },
    },
    "components": {
        "schemas": {
            "Credentials": {
                "type": "object",
                "properties": {
                    "email": {"type": "string", "maxLength": 254},
                    "password": {"type": "string", "format": "password", "writeOnly": True},
                },
                "required": ["email", "password"],
                "additionalProperties": False,
                "description": "Never copied into the client.",
            },
            "Draft-Input": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "body": {"type": "string"}},
                "required": ["title", "body"],
                "additionalProperties": False,
            },
            "PostSaved": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "title": {"type": "string"},
                    "message": {"type": "string"},
                },
                "required": ["id", "title", "message"],
            },
            "SignedIn": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "message": {"type": "string"}},
                "required": ["name", "message"],
            },
            "SecondStep": {
                "type": "object",
                "properties": {"message": {"type": "string"}, "next": {"type": "string"}},
                "required": ["message", "next"],
            },
            "Notice": {
                "type": "object",
                "properties": {"message": {"type": "string"}},
                "required": ["message"],
            },
            "Tree": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "color": ref("Color"),
                    "children": {"type": "array", "items": ref("Tree")},
                },
                "required": ["name"],
            },
            "Color": {"enum": ["red", "blue"], "type": "string"},
            "Result": {"type": "object", "properties": {"planted": {"type": "boolean"}}},
            "Unused": {"type": "object", "properties": {"x": {"type": "integer"}}},
            "ErrorEnvelope": {"type": "object", "properties": {"ok": {"const": False}}},
        }
    },
}


def test_the_module_types_each_action_and_its_envelope() -> None:
    source = render(DOCUMENT)
    assert (
        "export type Result<T, C extends string = string> =\n"
        "  | { ok: true; data: T; redirect?: string }\n"
        "  | { ok: false; error: ActionError<C> };\n"
    ) in source
    assert (
        '// "create_post": POST /_actions/id-create\n'
        "export type CreatePostInput = DraftInput;\n"
        "export type CreatePostOutput = PostSaved;\n"
        'export type CreatePostErrorCode = "csrf_failed" | "no_session" | "invalid" | "network"'
        " | (string & {});\n"
    ) in source
    assert "export type LoginOutput = SignedIn | SecondStep;\n" in source
    assert (
        "  createPost(input: CreatePostInput, options?: IdempotentCallOptions): "
        "Promise<Result<CreatePostOutput, CreatePostErrorCode>>;\n"
        "  login(input: LoginInput, options?: CallOptions): "
        "Promise<Result<LoginOutput, LoginErrorCode>>;\n"
        "  logout(input?: LogoutInput, options?: CallOptions): "
        "Promise<Result<LogoutOutput, LogoutErrorCode>>;\n"
    ) in source
    assert "export type LogoutInput = Record<string, never>;\n" in source
    assert '    login: (input, options) => call("/_actions/id-login", input, options),\n' in source


def test_models_are_named_interfaces_and_recursion_goes_by_name() -> None:
    source = render(DOCUMENT)
    assert (
        "export interface Tree {\n  name: string;\n  color?: Color;\n  children?: Tree[];\n}\n"
    ) in source
    assert 'export type Color = "red" | "blue";\n' in source
    # A model named like the module's own Result is renamed, and referred to by that name.
    assert "export interface Result_2 {\n  planted?: boolean;\n}\n" in source
    assert "export type PlantOutput = Result_2;\n" in source


def test_only_names_paths_and_types_reach_the_module() -> None:
    """No description, summary, policy or rate; no model the actions do not use; no
    action that takes no JSON (a file upload), only a note naming it."""
    source = render(DOCUMENT)
    for absent in ("internal notes", "Never copied", "require(", "5/minute", "Unused"):
        assert absent not in source
    assert "interface ErrorEnvelope" not in source
    assert '// "upload" takes no JSON body (a file upload): not in the client.\n' in source
    assert "upload(" not in source


def test_the_module_is_the_same_for_the_same_document() -> None:
    """Deterministic: the order of paths and components in the document changes nothing."""
    shuffled = json.loads(json.dumps(DOCUMENT))
    shuffled["paths"] = dict(reversed(shuffled["paths"].items()))
    schemas = shuffled["components"]["schemas"]
    shuffled["components"]["schemas"] = dict(reversed(schemas.items()))
    assert render(shuffled) == render(DOCUMENT)


def test_write_client_writes_one_module(tmp_path: Path) -> None:
    written = write_client(DOCUMENT, tmp_path / "out")
    assert written == [tmp_path / "out" / CLIENT_FILE]
    assert written[0].read_text(encoding="utf-8") == render(DOCUMENT)


# --- under tsc and node -----------------------------------------------------------------------


def client_dir(tmp_path: Path, document: dict[str, Any] = DOCUMENT) -> Path:
    write_client(document, tmp_path)
    shutil.copy(CALLER, tmp_path / "caller.ts")
    return tmp_path


def test_the_module_and_its_caller_compile_under_strict(tmp_path: Path) -> None:
    done = tsc(client_dir(tmp_path), "--noEmit", CLIENT_FILE, "caller.ts")
    assert done.returncode == 0, done.stdout + done.stderr


WRONG_CALLER = """\
import { createClient } from "./bastion-client.js";

export async function publish(): Promise<void> {
  const draft = { title: 42, body: "Hello" };
  await createClient().createPost(draft);
}
"""


def test_a_call_with_a_wrong_field_type_does_not_compile(tmp_path: Path) -> None:
    (client_dir(tmp_path) / "wrong.ts").write_text(WRONG_CALLER)
    done = tsc(tmp_path, "--noEmit", CLIENT_FILE, "wrong.ts")
    print(done.stdout)  # the message quoted in the guide
    assert done.returncode == 2
    assert done.stdout == (
        "wrong.ts(5,35): error TS2345: Argument of type '{ title: number; body: string; }' "
        "is not assignable to parameter of type 'DraftInput'.\n"
        "  Types of property 'title' are incompatible.\n"
        "    Type 'number' is not assignable to type 'string'.\n"
    )


RUNTIME_CHECK = r"""
const assert = require("node:assert/strict");
const { createClient } = require("./bastion-client.js");

function fake(status, text) {
  const calls = [];
  const fetch = async (url, init) => {
    calls.push({ url, init });
    if (text instanceof Error) throw text;
    return { status, text: async () => text };
  };
  return { calls, fetch };
}

(async () => {
  const ok = fake(200, '{"ok":true,"data":{"id":7,"title":"T","message":"m"}}');
  const client = createClient({
    baseUrl: "http://board.test/", fetch: ok.fetch, csrfToken: async () => "tok",
    headers: { "X-Csrf-Token": "not this", Authorization: "Bearer b" },
  });
  const made = await client.createPost({ title: "T", body: "B" }, { idempotencyKey: "k1" });
  assert.deepEqual(made, { ok: true, data: { id: 7, title: "T", message: "m" } });
  assert.deepEqual(ok.calls, [{
    url: "http://board.test/_actions/id-create",
    init: {
      method: "POST",
      headers: {
        Authorization: "Bearer b", Accept: "application/json",
        "Content-Type": "application/json", "X-CSRF-Token": "tok", "Idempotency-Key": "k1",
      },
      body: '{"title":"T","body":"B"}',
      credentials: "same-origin",
    },
  }]);
  await client.logout();
  assert.equal(ok.calls[1].init.body, "{}");

  const refused = JSON.stringify({
    ok: false, error: { code: "invalid", message: "No.", fields: { title: "Too long." } },
  });
  const no = fake(422, refused);
  assert.deepEqual(await createClient({ fetch: no.fetch }).login({ email: "e", password: "p" }),
    JSON.parse(refused));

  for (const [status, text, message] of [
    [502, "<html>Bad gateway</html>", "The server answered 502, not an envelope."],
    [200, '{"data": 1}', "The server answered 200, not an envelope."],
    [0, new TypeError("fetch failed"), "The server could not be reached."],
  ]) {
    const reply = await createClient({ fetch: fake(status, text).fetch }).logout();
    assert.deepEqual(reply, { ok: false, error: { code: "network", message } });
  }

  // In a page: the token from its meta tag (else its first _csrf field), never sent to
  // another origin.
  const page = { "meta[name=\"csrf-token\"]": "from-meta", "input[name=\"_csrf\"]": "from-field" };
  globalThis.location = { origin: "https://board.test" };
  globalThis.document = {
    querySelector: (s) => (s in page ? { getAttribute: () => page[s] } : null),
  };
  const here = fake(200, '{"ok":true,"data":null}');
  await createClient({ fetch: here.fetch }).logout();
  await createClient({ fetch: here.fetch, baseUrl: "https://board.test" }).logout();
  delete page["meta[name=\"csrf-token\"]"];
  await createClient({ fetch: here.fetch, baseUrl: "/prefix" }).logout();
  assert.deepEqual(here.calls.map((c) => [c.url, c.init.headers["X-CSRF-Token"]]), [
    ["/_actions/id-logout", "from-meta"],
    ["https://board.test/_actions/id-logout", "from-meta"],
    ["/prefix/_actions/id-logout", "from-field"],
  ]);
  await assert.rejects(
    createClient({ fetch: here.fetch, baseUrl: "https://evil.test" }).logout(),
    { name: "TypeError", message: "bastion client: https://evil.test is not this page's origin" },
  );
  assert.equal(here.calls.length, 3);
  console.log("runtime ok");
})().catch((e) => { console.error(e); process.exit(1); });
"""


def test_the_client_sends_the_envelope_calls_and_answers_failures_as_envelopes(
    tmp_path: Path,
) -> None:
    """Under Node, with a fake fetch: the headers and body of a call (the caller's own
    headers never replace the client's), the envelope as the server sent it, and
    ``code: "network"`` for an unreachable server or a reply that is no envelope."""
    done = tsc(client_dir(tmp_path), "--outDir", "js", CLIENT_FILE)
    assert done.returncode == 0, done.stdout + done.stderr
    (tmp_path / "js" / "check.js").write_text(RUNTIME_CHECK)
    run = subprocess.run(
        [tool("node"), "check.js"],
        cwd=tmp_path / "js",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == "runtime ok\n"
