"""A typed TypeScript client for an app's actions, from its OpenAPI document.

``write_client(bastion.schema(), out_dir)`` (``bastion client --ts OUTDIR MODULE:ATTR``)
writes one file, ``bastion-client.ts``: a dependency-free module with a type per input
and output model and ``createClient(config)``, whose methods are the actions, camelCase
(``create_post`` is ``client.createPost(input, options)``). Each answers the envelope as
a union discriminated on ``ok``::

    {ok: true, data: Output, redirect?: string} | {ok: false, error: ActionError<Codes>}

``Codes`` is the union of the error codes the document lists for the action (plus
``"network"``), else ``string``. A refusal, a network failure or a reply that is not an
envelope resolves to ``ok: false`` (``code: "network"`` for the last two, as
``bastion.js``'s ``bastion.call`` does); nothing is thrown but for a token that would go
to another origin.

The types come from an emitter of our own rather than openapi-typescript or
json-schema-to-typescript: generating needs no Node toolchain (``pip install bastion``
is enough), the output is shaped around the envelope (a discriminated union, the
action's codes, the idempotency key only where the action takes one), and the subset
of JSON Schema pydantic emits is small: objects, arrays and tuples, enums and consts,
``anyOf``/``oneOf``, nullables, ``$ref``s and ``additionalProperties``. Anything else
becomes ``unknown``, never a guess. The output is deterministic (names sorted, schema
order kept for properties), names are made valid identifiers that shadow no keyword or
built-in type, and every string literal is JSON, which is valid TypeScript.

Only names, paths and types reach the file: no description, policy or rate.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

__all__ = ["CLIENT_FILE", "render", "write_client"]

CLIENT_FILE: Final = "bastion-client.ts"
NETWORK_CODE: Final = "network"
"""The code of a failure with no envelope (unreachable, not JSON): ``bastion.js``'s."""

_IDENTIFIER: Final = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
_COMPONENT_REF: Final = re.compile(r"#/(?:components/schemas|\$defs|definitions)/(.+)")
# Reserved words, and the names a type may not take (TypeScript's own types).
_WORDS: Final = (
    "break case catch class const continue debugger default delete do else enum export "
    "extends false finally for function if import in instanceof new null return super "
    "switch this throw true try typeof var void while with as implements interface let "
    "package private protected public static yield await any bigint boolean never number "
    "object string symbol undefined unknown type keyof readonly infer is asserts declare "
    "module namespace require global Array Record Promise Partial Required Readonly Pick "
    "Omit Exclude Extract NonNullable Object String Number Boolean Symbol Function Date "
    "Error JSON Math"
)
_RESERVED: Final = frozenset(_WORDS.split())
# What the module itself defines: a model of one of these names is renamed.
_RUNTIME_NAMES: Final = (
    "ActionError",
    "CallOptions",
    "Client",
    "ClientConfig",
    "Fetch",
    "FetchInit",
    "FetchResponse",
    "IdempotentCallOptions",
    "Result",
    "createClient",
)


def write_client(document: Mapping[str, Any], out_dir: Path) -> list[Path]:
    """Write the client for ``document`` (``bastion.schema()``'s OpenAPI 3.1) into
    ``out_dir`` (made if missing); the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / CLIENT_FILE
    path.write_text(render(document), encoding="utf-8")
    return [path]


def render(document: Mapping[str, Any]) -> str:
    """The client module's source."""
    return _Module(document).source()


# --- names ------------------------------------------------------------------------------


def identifier(name: str, *, pascal: bool = False) -> str:
    """``name`` as a TypeScript identifier: runs of other characters dropped (the next
    letter capitalized), a leading digit or a reserved word given an underscore."""
    parts = [p for p in re.split(r"[^A-Za-z0-9_$]+", name) if p]
    if not parts:
        return "_"
    joined = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    if pascal:
        joined = joined[:1].upper() + joined[1:]
    if joined[0].isdigit():
        joined = "_" + joined
    return joined + "_" if joined in _RESERVED else joined


def camel(name: str) -> str:
    """``create_post`` → ``createPost`` (a method name: keywords are allowed there)."""
    head, *rest = [p for p in re.split(r"[^A-Za-z0-9$]+", name) if p] or ["_"]
    word = head[:1].lower() + head[1:] + "".join(p[:1].upper() + p[1:] for p in rest)
    return "_" + word if word[0].isdigit() else word


def pascal(name: str) -> str:
    return identifier(camel(name), pascal=True)


def property_name(name: str) -> str:
    """A property key: bare when it is an identifier, else a JSON string."""
    return name if _IDENTIFIER.fullmatch(name) else literal(name)


def literal(value: Any) -> str:
    """A JSON value as a TypeScript literal type (JSON is valid TypeScript; ASCII-only, so
    lone surrogates and line separators are escapes)."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int | float):
        return json.dumps(value) if math.isfinite(value) else "number"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(literal(v) for v in value) + "]"
    if isinstance(value, dict):
        members = (f"{property_name(str(k))}: {literal(v)}" for k, v in value.items())
        return "{ " + "; ".join(members) + " }" if value else "{}"
    return "unknown"


class Names:
    """Unique identifiers, handed out in a fixed order (so the output is the same for the
    same document): a second ``Page`` is ``Page_2``."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)

    def claim(self, wanted: str) -> str:
        name, n = wanted, 1
        while name in self._taken:
            n += 1
            name = f"{wanted}_{n}"
        self._taken.add(name)
        return name


# --- the emitter: JSON Schema (pydantic's subset) to a TypeScript type --------------------


class Emitter:
    """TypeScript types for the schemas of one document; ``refs`` maps a component's key
    to its TypeScript name, and records the ones used (``used``)."""

    def __init__(self, refs: Mapping[str, str]) -> None:
        self.refs = refs
        self.used: set[str] = set()

    def type(self, schema: Any) -> str:
        if schema is True or schema == {}:
            return "unknown"
        if schema is False:
            return "never"
        if not isinstance(schema, Mapping):
            return "unknown"
        nullable = schema.get("nullable") is True  # OpenAPI 3.0's spelling
        result = self._type(schema)
        return union([result, "null"]) if nullable else result

    def _type(self, schema: Mapping[str, Any]) -> str:
        if "$ref" in schema:
            return self._ref(schema["$ref"])
        if "const" in schema:
            return literal(schema["const"])
        if isinstance(schema.get("enum"), list):
            return union([literal(v) for v in schema["enum"]]) if schema["enum"] else "never"
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list):
                return union([self.type(s) for s in schema[key]])
        if isinstance(schema.get("allOf"), list):
            members = [self.type(s) for s in schema["allOf"]]
            if not members:
                return "unknown"
            return members[0] if len(members) == 1 else " & ".join(map(_grouped, members))
        kind = schema.get("type")
        if isinstance(kind, list):
            return union([self._type({**schema, "type": k}) for k in kind])
        if kind in ("string", "boolean", "null"):
            return str(kind)
        if kind in ("integer", "number"):
            return "number"
        if kind == "array" or (kind is None and ("items" in schema or "prefixItems" in schema)):
            return self._array(schema)
        if kind == "object" or (kind is None and "properties" in schema):
            return self.object(schema)
        return "unknown"

    def _ref(self, ref: Any) -> str:
        found = _COMPONENT_REF.fullmatch(ref) if isinstance(ref, str) else None
        key = found.group(1).replace("~1", "/").replace("~0", "~") if found else None
        if key is None or key not in self.refs:
            return "unknown"
        self.used.add(key)
        return self.refs[key]

    def _array(self, schema: Mapping[str, Any]) -> str:
        prefix = schema.get("prefixItems")
        items = schema.get("items", True)
        if not isinstance(prefix, list):
            return _grouped(self.type(items)) + "[]"
        required = schema.get("minItems", len(prefix))
        elements = [self.type(s) + ("" if i < required else "?") for i, s in enumerate(prefix)]
        closed = items is False or schema.get("maxItems") == len(prefix)
        if not closed:
            elements.append(f"...{_grouped(self.type(items))}[]")
        return "[" + ", ".join(elements) + "]"

    def object(self, schema: Mapping[str, Any]) -> str:
        """An object's members, inline: ``{ a: string; b?: number }``."""
        members = self.members(schema)
        return "{ " + "; ".join(members) + " }" if members else "{}"

    def members(self, schema: Mapping[str, Any]) -> list[str]:
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        members = [
            f"{property_name(str(name))}{'' if name in required else '?'}: {self.type(s)}"
            for name, s in properties.items()
        ]
        extra = schema.get("additionalProperties", not properties)
        if extra is not False:
            # Declared properties must fit the index signature: with both, it is unknown.
            value = "unknown" if properties or extra is True else self.type(extra)
            members.append(f"[key: string]: {value}")
        return members


def union(members: list[str]) -> str:
    seen = list(dict.fromkeys(members))
    if "unknown" in seen:
        return "unknown"
    seen = [m for m in seen if m != "never"] or ["never"]
    return " | ".join(_grouped(m, keep_unions=True) for m in seen)


def _grouped(text: str, *, keep_unions: bool = False) -> str:
    """``text`` parenthesized where a suffix (``[]``) or an operator would bind inside it."""
    depth = 0
    for i, char in enumerate(text):
        if char in "([{<":
            depth += 1
        elif char in ")]}>" and text[i - 1 : i + 1] != "=>":
            depth -= 1
        elif depth == 0 and (char == "&" or (char == "|" and not keep_unions)):
            return f"({text})"
    return text


# --- the module -------------------------------------------------------------------------


class _Action:
    def __init__(self, path: str, operation: Mapping[str, Any]) -> None:
        self.path = path
        self.name = str(operation.get("operationId") or path)
        extension = operation.get("x-bastion")
        self.meta: Mapping[str, Any] = extension if isinstance(extension, Mapping) else {}
        self.method = camel(self.name)
        self.idempotent = self.meta.get("idempotent") is True
        body = operation.get("requestBody")
        content = body.get("content", {}) if isinstance(body, Mapping) else {}
        self.has_body = isinstance(body, Mapping)
        self.json_body = "application/json" in content or not self.has_body
        self.input = content.get("application/json", {}).get("schema") if content else None
        self.responses: Mapping[str, Any] = operation.get("responses") or {}
        self.operation = operation


class _Module:
    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        components = (document.get("components") or {}).get("schemas") or {}
        self.components: Mapping[str, Any] = components
        actions = [
            _Action(str(path), item["post"])
            for path, item in (document.get("paths") or {}).items()
            if isinstance(item, Mapping) and isinstance(item.get("post"), Mapping)
        ]
        methods = Names()
        self.actions = sorted(actions, key=lambda a: (a.method, a.path))
        for action in self.actions:
            action.method = methods.claim(action.method)
        names = Names([*_RUNTIME_NAMES, *_RESERVED])
        self.aliases = {
            action.path: (
                names.claim(pascal(action.method) + "Input"),
                names.claim(pascal(action.method) + "Output"),
                names.claim(pascal(action.method) + "ErrorCode"),
            )
            for action in self.actions
        }
        refs = {key: identifier(str(key), pascal=True) for key in components}
        self.refs = {
            key: names.claim(refs[key]) for key in sorted(components, key=refs.__getitem__)
        }
        self.emitter = Emitter(self.refs)

    def source(self) -> str:
        action_parts = [self._action_types(a) for a in self.actions if a.json_body]
        parts = [_HEADER.format(title=_comment(str(self._title()))), _RUNTIME_TYPES]
        parts.append(self._models())
        parts.extend(action_parts)
        parts.append(self._client())
        parts.append(_RUNTIME)
        return "\n".join(p for p in parts if p)

    def _title(self) -> str:
        info = self.document.get("info")
        return str(info.get("title", "the app")) if isinstance(info, Mapping) else "the app"

    def _models(self) -> str:
        """Every component the actions' types reach (and nothing else: the error envelope
        is ``ActionError``), in name order."""
        done: set[str] = set()
        out: list[str] = []
        pending = set(self.emitter.used)
        while pending - done:
            for key in sorted(pending - done, key=self.refs.__getitem__):
                done.add(key)
                out.append(self._model(key))
            pending = set(self.emitter.used)
        blocks = sorted(out, key=lambda text: text.split(" ", 3)[2])
        return "// --- models ---\n\n" + "\n".join(blocks) if blocks else ""

    def _model(self, key: str) -> str:
        schema = self.components[key]
        name = self.refs[key]
        if (
            isinstance(schema, Mapping)
            and isinstance(schema.get("properties"), Mapping)
            and not any(k in schema for k in ("$ref", "anyOf", "oneOf", "allOf", "nullable"))
        ):
            lines = [f"  {m};\n" for m in self.emitter.members(schema)]
            return f"export interface {name} {{\n{''.join(lines)}}}\n"
        return f"export type {name} = {self.emitter.type(schema)};\n"

    def _action_types(self, action: _Action) -> str:
        name_in, name_out, name_codes = self.aliases[action.path]
        empty = {"type": "object", "properties": {}, "additionalProperties": False}
        given = action.input if action.has_body else empty
        input_type = self.emitter.type(given)
        if input_type == "{}":
            input_type = "Record<string, never>"
        output = self.emitter.type(self._output_schema(action))
        # The document lists bastion's own codes; a handler's ActionError adds its own, so
        # the union stays open: `(string & {})` keeps the listed ones as suggestions.
        codes = [literal(c) for c in self._codes(action)]
        code_type = " | ".join([*codes, "(string & {})"]) if codes else "string"
        return (
            f"// {literal(action.name)}: POST {_comment(action.path)}\n"
            f"export type {name_in} = {input_type};\n"
            f"export type {name_out} = {output};\n"
            f"export type {name_codes} = {code_type};\n"
        )

    def _resolve(self, schema: Any) -> Any:
        for _ in range(32):  # a chain of $refs, never a loop
            if not (isinstance(schema, Mapping) and isinstance(schema.get("$ref"), str)):
                return schema
            found = _COMPONENT_REF.fullmatch(schema["$ref"])
            schema = self.components.get(found.group(1)) if found else None
        return None

    def _json_schema(self, response: Any) -> Any:
        response = self._resolve_response(response)
        content = response.get("content") if isinstance(response, Mapping) else None
        media = content.get("application/json") if isinstance(content, Mapping) else None
        return media.get("schema") if isinstance(media, Mapping) else None

    def _resolve_response(self, response: Any) -> Any:
        ref = response.get("$ref") if isinstance(response, Mapping) else None
        if isinstance(ref, str) and ref.startswith("#/components/responses/"):
            responses = (self.document.get("components") or {}).get("responses") or {}
            return responses.get(ref.rsplit("/", 1)[1])
        return response

    def _output_schema(self, action: _Action) -> Any:
        envelope = self._resolve(self._json_schema(action.responses.get("200")))
        if not isinstance(envelope, Mapping):
            return True
        for schema in (envelope, *(envelope.get("allOf") or ())):
            schema = self._resolve(schema)
            properties = schema.get("properties") if isinstance(schema, Mapping) else None
            if isinstance(properties, Mapping) and "data" in properties:
                return properties["data"]
        return True

    def _codes(self, action: _Action) -> list[str]:
        """The error codes the document lists for the action, in its order, else none."""
        codes: list[str] = []
        sources: list[Any] = [action.operation.get("x-bastion-errors")]
        for status, response in action.responses.items():
            if str(status).startswith("2"):
                continue
            response = self._resolve_response(response)
            if isinstance(response, Mapping):
                sources.append(response.get("x-bastion-errors"))
            sources.append(self._error_codes(self._json_schema(response)))
        for source in sources:
            for item in source if isinstance(source, list) else ():
                code = item.get("code") if isinstance(item, Mapping) else item
                if isinstance(code, str) and code not in codes:
                    codes.append(code)
        return [*codes, NETWORK_CODE] if codes and NETWORK_CODE not in codes else codes

    def _error_codes(self, schema: Any, depth: int = 0) -> list[Any]:
        schema = self._resolve(schema)
        if not isinstance(schema, Mapping) or depth > 8:
            return []
        found: list[Any] = []
        for member in (*(schema.get("allOf") or ()), *(schema.get("anyOf") or ())):
            found.extend(self._error_codes(member, depth + 1))
        error = self._resolve((schema.get("properties") or {}).get("error"))
        code = self._resolve((error.get("properties") or {}).get("code")) if error else None
        if isinstance(code, Mapping):
            found.extend(code.get("enum") or ())
            if "const" in code:
                found.append(code["const"])
            for member in code.get("anyOf") or code.get("oneOf") or ():
                member = self._resolve(member)
                if isinstance(member, Mapping) and "const" in member:
                    found.append(member["const"])
        return found

    def _client(self) -> str:
        members, methods, skipped = [], [], []
        for action in self.actions:
            if not action.json_body:
                skipped.append(action.name)
                continue
            name_in, name_out, name_codes = self.aliases[action.path]
            options = "IdempotentCallOptions" if action.idempotent else "CallOptions"
            optional = "?" if self._input_optional(action) else ""
            key = property_name(action.method)
            members.append(
                f"  {key}(input{optional}: {name_in}, options?: {options}): "
                f"Promise<Result<{name_out}, {name_codes}>>;\n"
            )
            methods.append(
                f"    {key}: (input, options) => call({literal(action.path)}, input, options),\n"
            )
        note = "".join(
            f"// {literal(name)} takes no JSON body (a file upload): not in the client.\n"
            for name in skipped
        )
        return (
            "// --- the client ---\n\n"
            f"{note}"
            "/** One method per action: each resolves to the action's envelope. */\n"
            f"export interface Client {{\n{''.join(members)}}}\n\n"
            "/** A client for the app at `config.baseUrl` (this page's origin by default). */\n"
            "export function createClient(config: ClientConfig = {}): Client {\n"
            "  const call = caller(config);\n"
            f"  return {{\n{''.join(methods)}  }};\n"
            "}\n"
        )

    def _input_optional(self, action: _Action) -> bool:
        schema = self._resolve(action.input) if action.has_body else {}
        required = schema.get("required") if isinstance(schema, Mapping) else None
        return isinstance(schema, Mapping) and not required and "anyOf" not in schema


def _comment(text: str) -> str:
    """Text safe on one line of a ``//`` comment."""
    return re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", text)


_HEADER: Final = """\
// bastion-client.ts: a typed client for {title}.
// Generated by bastion (bastion client --ts): do not edit, generate it again.
// No dependencies; runs in browsers and in Node 18+ (global fetch).
/* eslint-disable */
"""

_RUNTIME_TYPES: Final = """\
// --- the envelope ---

/** A refusal: `code` says which, `message` is for people. */
export interface ActionError<C extends string = string> {
  code: C;
  message: string;
  /** Field name to message, for a 422 validation_failed. */
  fields?: Record<string, string>;
  /** The reference of a 500 in the server's log. */
  digest?: string;
  /** Where to sign in again, for a 401 reauthentication_required. */
  page?: string;
}

/** The action's envelope, discriminated on `ok`. */
export type Result<T, C extends string = string> =
  | { ok: true; data: T; redirect?: string }
  | { ok: false; error: ActionError<C> };

export interface CallOptions {
  /** Headers of this call only (not Accept, Content-Type or X-CSRF-Token). */
  headers?: Record<string, string>;
}

export interface IdempotentCallOptions extends CallOptions {
  /** Sent as `Idempotency-Key`: a retry with the same key runs the action once. */
  idempotencyKey?: string;
}

/** What the client needs of `fetch`: the global one fits, and so does a wrapper. */
export interface FetchInit {
  method: "POST";
  headers: Record<string, string>;
  body: string;
  credentials: "omit" | "same-origin" | "include";
}

export interface FetchResponse {
  status: number;
  text(): Promise<string>;
}

export type Fetch = (url: string, init: FetchInit) => Promise<FetchResponse>;

export interface ClientConfig {
  /** The app's origin (and mount prefix, if any): "" (this page's origin) by default. */
  baseUrl?: string;
  /** The global `fetch` by default; in Node, one that keeps the session cookie. */
  fetch?: Fetch;
  /** The CSRF token, or a function answering it at each call. By default, in a
   * browser, the page's `<meta name="csrf-token">` (else its first `_csrf` field),
   * read at each call. */
  csrfToken?: string | (() => string | Promise<string>);
  /** Headers of every call (`Authorization: Bearer ...` for an API token). */
  headers?: Record<string, string>;
  /** `fetch`'s credentials: "same-origin" by default. */
  credentials?: "omit" | "same-origin" | "include";
}
"""

_RUNTIME: Final = """\
// --- the runtime ---

const OWN_HEADERS = ["accept", "content-type", "x-csrf-token", "idempotency-key"];

interface Page {
  document?: {
    querySelector(selector: string): { getAttribute(name: string): string | null } | null;
  };
  location?: { origin: string };
  fetch?: Fetch;
}

function unreachable<C extends string>(message: string): Result<never, C> {
  const error = { code: "network", message } as ActionError<C>;
  return { ok: false, error };
}

function isEnvelope(value: unknown): value is Result<unknown, string> {
  if (typeof value !== "object" || value === null) return false;
  const reply = value as { ok?: unknown; error?: unknown };
  if (reply.ok === true) return "data" in reply;
  return reply.ok === false && typeof reply.error === "object" && reply.error !== null;
}

// The page's own token never goes to another origin (as bastion.js: it is a secret of
// this visitor's session). A relative baseUrl is this page's origin.
function sameOrigin(baseUrl: string, page: Page): boolean {
  if (baseUrl === "" || (baseUrl.startsWith("/") && !baseUrl.startsWith("//"))) return true;
  const origin = page.location?.origin;
  return origin !== undefined && (baseUrl === origin || baseUrl.startsWith(origin + "/"));
}

async function tokenFor(config: ClientConfig, page: Page, baseUrl: string): Promise<string> {
  const given = config.csrfToken;
  if (typeof given === "function") return await given();
  if (typeof given === "string") return given;
  // As bastion.js: the page's <meta name="csrf-token">, else its first form's _csrf.
  const meta = page.document?.querySelector('meta[name="csrf-token"]')?.getAttribute("content");
  const field = page.document?.querySelector('input[name="_csrf"]')?.getAttribute("value");
  const token = meta || field || "";
  if (token && !sameOrigin(baseUrl, page)) {
    throw new TypeError(`bastion client: ${baseUrl} is not this page's origin`);
  }
  return token;
}

function caller(config: ClientConfig) {
  const baseUrl = (config.baseUrl ?? "").replace(/\\/+$/, "");
  return async function call<T, C extends string>(
    path: string,
    input: unknown,
    options: IdempotentCallOptions = {},
  ): Promise<Result<T, C>> {
    const page = globalThis as unknown as Page;
    const send = config.fetch ?? page.fetch;
    if (send === undefined) return unreachable("No fetch here: pass one to createClient.");
    const headers: Record<string, string> = {};
    for (const extra of [config.headers, options.headers]) {
      for (const [name, value] of Object.entries(extra ?? {})) {
        if (!OWN_HEADERS.includes(name.toLowerCase())) headers[name] = value;
      }
    }
    headers["Accept"] = "application/json";
    headers["Content-Type"] = "application/json";
    const token = await tokenFor(config, page, baseUrl);
    if (token) headers["X-CSRF-Token"] = token;
    if (options.idempotencyKey !== undefined) headers["Idempotency-Key"] = options.idempotencyKey;
    let text: string;
    let status: number;
    try {
      const response = await send(baseUrl + path, {
        method: "POST",
        headers,
        body: JSON.stringify(input ?? {}),
        credentials: config.credentials ?? "same-origin",
      });
      status = response.status;
      text = await response.text();
    } catch {
      return unreachable("The server could not be reached.");
    }
    let reply: unknown;
    try {
      reply = JSON.parse(text);
    } catch {
      reply = undefined;
    }
    if (!isEnvelope(reply)) return unreachable(`The server answered ${status}, not an envelope.`);
    return reply as Result<T, C>;
  };
}
"""
