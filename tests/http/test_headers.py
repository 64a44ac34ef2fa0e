"""Security headers on every response of the app: ``bastion.add_security_headers(app)``.

Each value is asserted exactly. The attacks they answer: script injection (a CSP that
runs inline code only with this response's nonce, new for every response),
clickjacking (``frame-ancestors 'none'`` and ``X-Frame-Options: DENY``), MIME sniffing
(``nosniff``), leaking URLs to other sites (``Referrer-Policy``), powerful browser
features (``Permissions-Policy``), and downgrade to http (HSTS, over https only, decided
by the configuration or the connection and never by a request header).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import httpx2 as httpx
import jinja2
import pytest
from conftest import SECRET
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.templating import Jinja2Templates
from starlette.testclient import TestClient
from starlette.websockets import WebSocket

from bastion import Bastion, ConfigurationError, public
from bastion.http.headers import HSTS, NONCE_KEY, PERMISSIONS_POLICY, SecurityHeaders, default_csp
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
PAGE = """\
<script nonce="{{ csp_nonce() }}">boot()</script>\
<style nonce="{{ csp_nonce() }}">p{}</style>\
{{ bastion_script() }}"""
FORM = "{% call action_form('ping') %}<button>Go</button>{% endcall %}"


def csp(nonce: str) -> str:
    """The default policy, spelled out here rather than computed by the code under test."""
    return (
        "default-src 'self'; "
        f"script-src 'self' 'nonce-{nonce}'; "
        f"style-src 'self' 'nonce-{nonce}'; "
        "img-src 'self' data:; "
        "object-src 'none'; "
        "base-uri 'none'; "
        "form-action 'self'; "
        "frame-ancestors 'none'"
    )


def security_headers(nonce: str, *, hsts: bool = False) -> dict[str, str]:
    headers = {
        "content-security-policy": csp(nonce),
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        "referrer-policy": "strict-origin-when-cross-origin",
        "permissions-policy": ("camera=(), microphone=(), geolocation=(), payment=(), usb=()"),
    }
    if hsts:
        headers["strict-transport-security"] = "max-age=63072000; includeSubDomains"
    return headers


def nonce_of(reply: httpx.Response) -> str:
    """The nonce in the reply's CSP header."""
    found = re.search(r"'nonce-([^']*)'", reply.headers["content-security-policy"])
    assert found is not None
    return found.group(1)


def build(
    *,
    https: bool | None = None,
    headers: bool = True,
    csp: Callable[[str], str] | None = None,
    headers_first: bool = False,
) -> tuple[Bastion, Starlette]:
    """An app with pages (one with inline code, one that sets its own headers, one
    streamed, one that fails) and an action, with the security headers added."""
    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        https=https,
        allowed_origins=["http://127.0.0.1", "https://127.0.0.1"],
    )

    @bastion.action(policy=public)
    def ping() -> None: ...

    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.DictLoader({"page": PAGE, "form": FORM}), autoescape=True
        )
    )
    bastion.templates(templates)

    async def page(request: Request) -> Response:
        return templates.TemplateResponse(request, "page")

    async def form(request: Request) -> Response:
        return templates.TemplateResponse(request, "form")

    async def own(request: Request) -> Response:
        return PlainTextResponse(
            "embeddable",
            headers={
                "X-Frame-Options": "SAMEORIGIN",
                "Content-Security-Policy": "frame-ancestors 'self'",
                "Referrer-Policy": "no-referrer",
            },
        )

    async def stream(request: Request) -> Response:
        async def chunks() -> Any:
            yield b"one,"
            yield b"two"

        return StreamingResponse(chunks(), media_type="text/plain")

    async def nonce(request: Request) -> Response:
        return PlainTextResponse(request.scope.get(NONCE_KEY, "none"))

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(str(NONCE_KEY in websocket.scope))
        await websocket.close()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/form", form),
            Route("/own", own),
            Route("/stream", stream),
            Route("/nonce", nonce),
            WebSocketRoute("/ws", echo),
        ]
    )
    options: dict[str, Any] = {} if csp is None else {"csp": csp}
    if headers and headers_first:
        bastion.add_security_headers(app, **options)
    bastion.mount(app)
    if headers and not headers_first:
        bastion.add_security_headers(app, **options)
    return bastion, app


@pytest.fixture
def client() -> Iterator[ActionClient]:
    bastion, app = build()
    with ActionClient(app, bastion) as c:
        yield c


# --- every header, exactly --------------------------------------------------------------


def test_page_gets_every_header_exactly(client: ActionClient) -> None:
    """A page over http: exactly its own two headers plus the five security headers,
    and no HSTS."""
    reply = client.get("/")
    assert reply.status_code == 200
    nonce = nonce_of(reply)
    assert dict(reply.headers) == {
        "content-type": "text/html; charset=utf-8",
        "content-length": str(len(reply.content)),
        **security_headers(nonce),
    }


def test_csp_nonce_is_the_one_the_page_rendered(client: ActionClient) -> None:
    """Attack: injected inline script. Only code carrying the header's nonce runs, and
    ``csp_nonce()`` (and ``bastion_script()``) rendered exactly that nonce."""
    reply = client.get("/")
    nonce = nonce_of(reply)
    assert NONCE.fullmatch(nonce)
    assert reply.text == (
        f'<script nonce="{nonce}">boot()</script>'
        f'<style nonce="{nonce}">p{{}}</style>'
        f'<script src="/_actions/bastion.js" nonce="{nonce}" defer></script>'
    )


def test_every_response_gets_a_new_nonce(client: ActionClient) -> None:
    """Attack: reuse a nonce seen in one page to run code in another. Each response
    has its own; 50 responses, 50 nonces."""
    nonces = {nonce_of(client.get("/")) for _ in range(50)}
    assert len(nonces) == 50
    assert all(NONCE.fullmatch(n) for n in nonces)


def test_nonce_is_in_the_scope_for_the_app(client: ActionClient) -> None:
    """Routes read the nonce from the scope (``NONCE_KEY``), the same as in the header."""
    reply = client.get("/nonce")
    assert reply.text == nonce_of(reply)


def test_default_csp_is_exact() -> None:
    """``default_csp`` spells the policy above."""
    assert default_csp("abc") == csp("abc")
    assert PERMISSIONS_POLICY == ("camera=(), microphone=(), geolocation=(), payment=(), usb=()")
    assert HSTS == "max-age=63072000; includeSubDomains"


@pytest.mark.parametrize("path", ["/stream", "/missing-page"])
def test_streamed_and_not_found_responses_get_the_headers(client: ActionClient, path: str) -> None:
    """A streamed body and the router's own 404 carry the same headers."""
    reply = client.get(path)
    nonce = nonce_of(reply)
    for name, value in security_headers(nonce).items():
        assert reply.headers.get_list(name) == [value]


# --- action replies ---------------------------------------------------------------------


def test_action_json_reply_gets_the_headers_once(client: ActionClient) -> None:
    """An action's JSON reply: the security headers, its own no-store, and nosniff once
    (the reply sets it itself; it is not doubled)."""
    reply = client.call("ping")
    assert reply.status_code == 200
    nonce = nonce_of(reply)
    assert reply.headers.get_list("x-content-type-options") == ["nosniff"]
    assert dict(reply.headers) == {
        "content-type": "application/json",
        "content-length": str(len(reply.content)),
        "cache-control": "no-store",
        **security_headers(nonce),
    }


def test_plain_form_redirect_gets_the_headers(client: ActionClient) -> None:
    """A plain form's 303 carries them too (with its session cookie)."""
    reply = client.submit("ping")
    assert reply.status_code == 303
    nonce = nonce_of(reply)
    for name, value in security_headers(nonce).items():
        assert reply.headers.get_list(name) == [value]


def test_refusal_gets_the_headers(client: ActionClient) -> None:
    """A refused call (403, no token) is framed-refused and nosniff like any reply."""
    reply = client.call("ping", token=None)
    assert reply.status_code == 403
    nonce = nonce_of(reply)
    for name, value in security_headers(nonce).items():
        assert reply.headers.get_list(name) == [value]


def test_script_keeps_its_own_nosniff_once(client: ActionClient) -> None:
    """bastion.js sets nosniff and its cache policy itself: both kept, nothing doubled."""
    reply = client.get("/_actions/bastion.js")
    assert reply.status_code == 200
    assert reply.headers.get_list("x-content-type-options") == ["nosniff"]
    assert reply.headers["cache-control"] == "public, max-age=3600"
    assert reply.headers["x-frame-options"] == "DENY"


def test_form_page_posts_under_form_action_self(client: ActionClient) -> None:
    """The action form posts to a same-origin path, which ``form-action 'self'``
    allows: the CSP does not break bastion's own forms."""
    reply = client.get("/form")
    assert "form-action 'self'" in reply.headers["content-security-policy"]
    assert re.match(r'<form method="post" action="/_actions/[A-Za-z0-9_-]+"', reply.text)


# --- the app's own headers --------------------------------------------------------------


def test_headers_the_app_set_are_kept(client: ActionClient) -> None:
    """A page that sets its own X-Frame-Options, CSP and Referrer-Policy keeps them
    exactly, each once; the headers it did not set are added."""
    reply = client.get("/own")
    assert dict(reply.headers) == {
        "content-type": "text/plain; charset=utf-8",
        "content-length": "10",
        "x-frame-options": "SAMEORIGIN",
        "content-security-policy": "frame-ancestors 'self'",
        "referrer-policy": "no-referrer",
        "x-content-type-options": "nosniff",
        "permissions-policy": PERMISSIONS_POLICY,
    }
    for name in ("x-frame-options", "content-security-policy", "referrer-policy"):
        assert len(reply.headers.get_list(name)) == 1


def test_custom_csp_replaces_the_default() -> None:
    """``csp=`` builds the policy from the nonce; the page still renders that nonce."""
    bastion, app = build(csp=lambda nonce: f"script-src 'nonce-{nonce}' 'strict-dynamic'")
    with ActionClient(app, bastion) as client:
        reply = client.get("/")
    nonce = re.fullmatch(
        r"script-src 'nonce-([A-Za-z0-9_-]{22})' 'strict-dynamic'",
        reply.headers["content-security-policy"],
    )
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in reply.text
    assert reply.headers["x-frame-options"] == "DENY"


def test_order_of_mount_and_headers_does_not_matter() -> None:
    """Added before or after ``mount``, the headers and the nonce are the same."""
    bastion, app = build(headers_first=True)
    with ActionClient(app, bastion) as client:
        page = client.get("/")
        call = client.call("ping")
    assert page.text.startswith(f'<script nonce="{nonce_of(page)}">')
    for reply in (page, call):
        for name, value in security_headers(nonce_of(reply)).items():
            assert reply.headers.get_list(name) == [value]


def test_without_security_headers_there_is_no_nonce() -> None:
    """Not added: no header, ``csp_nonce()`` renders empty and the script tag has no
    nonce attribute."""
    bastion, app = build(headers=False)
    with ActionClient(app, bastion) as client:
        reply = client.get("/")
    assert "content-security-policy" not in reply.headers
    assert "x-frame-options" not in reply.headers
    assert reply.text == (
        '<script nonce="">boot()</script><style nonce="">p{}</style>'
        '<script src="/_actions/bastion.js" defer></script>'
    )


def test_websocket_passes_through_untouched() -> None:
    """Only HTTP responses are changed; a WebSocket connection works and gets no nonce."""
    bastion, app = build()
    with ActionClient(app, bastion) as client, client.websocket_connect("/ws") as ws:
        assert ws.receive_text() == "False"


# --- HSTS: https only -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("https", "base_url", "expected"),
    [
        (None, "http://127.0.0.1", False),
        (None, "https://127.0.0.1", True),
        (True, "http://127.0.0.1", True),
        (False, "https://127.0.0.1", False),
    ],
    ids=["http", "https-connection", "https-configured", "https-configured-off"],
)
def test_hsts_only_over_https(https: bool | None, base_url: str, expected: bool) -> None:
    """HSTS is sent when the app is served over https: by configuration
    (``Bastion(https=...)`` wins) or else by the connection's own scheme."""
    bastion, app = build(https=https)
    with ActionClient(app, bastion, base_url=base_url, origin=base_url) as client:
        replies = [client.get("/"), client.get("/stream")]
        if not (https and base_url.startswith("http:")):
            # (A Secure session cookie is not sent back over plain http: no action call.)
            replies.append(client.call("ping"))
            assert replies[-1].status_code == 200
    for reply in replies:
        if expected:
            assert reply.headers.get_list("strict-transport-security") == [
                "max-age=63072000; includeSubDomains"
            ]
        else:
            assert "strict-transport-security" not in reply.headers
        assert (
            dict(reply.headers).items() >= security_headers(nonce_of(reply), hsts=expected).items()
        )


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-Proto": "https"},
        {"X-Forwarded-Ssl": "on"},
        {"Forwarded": "proto=https"},
        {"X-Url-Scheme": "https"},
    ],
)
def test_a_request_header_never_turns_hsts_on(header: dict[str, str]) -> None:
    """Attack: a client claiming https by header (to pin HSTS on a host that has no
    https, locking its users out). Over a plain http connection: no HSTS."""
    bastion, app = build()
    with ActionClient(app, bastion) as client:
        reply = client.get("/", headers=header)
    assert "strict-transport-security" not in reply.headers


def test_middleware_can_be_used_on_its_own() -> None:
    """``SecurityHeaders`` wraps any ASGI app; ``https`` is a callable of the scope."""

    async def hello(request: Request) -> Response:
        return PlainTextResponse("hi")

    inner = Starlette(routes=[Route("/", hello)])
    app = SecurityHeaders(inner, https=lambda scope: True, csp=lambda n: f"default-src 'nonce-{n}'")
    with TestClient(app) as client:
        reply = client.get("/")
    nonce = re.fullmatch(r"default-src 'nonce-(\S+)'", reply.headers["content-security-policy"])
    assert nonce is not None
    assert NONCE.fullmatch(nonce.group(1))
    assert reply.headers["strict-transport-security"] == HSTS


# --- a policy per path (csp_for) ----------------------------------------------------------

DOCS_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline'; frame-ancestors 'none'"
OAUTH_CSP = "default-src 'none'; script-src 'unsafe-inline'; frame-ancestors 'none'"


def relaxed_app(**options: Any) -> SecurityHeaders:
    """Every path answers its own path, under the headers with ``options``."""

    async def echo(request: Request) -> Response:
        return PlainTextResponse(request.url.path)

    app = Starlette(routes=[Route("/{path:path}", echo)])
    return SecurityHeaders(app, https=lambda scope: False, **options)


def policy_at(app: Any, path: str, **request: Any) -> str:
    with TestClient(app, **request) as client:
        reply = client.get(path)
    assert reply.status_code == 200
    policy: str = reply.headers["content-security-policy"]
    return policy


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/docs", DOCS_CSP),
        ("/docs/", DOCS_CSP),
        ("/docs/swagger.css", DOCS_CSP),
        ("/docs/oauth2-redirect", OAUTH_CSP),
        ("/docs/oauth2-redirect/x", OAUTH_CSP),
        ("/docsearch", None),
        ("/doc", None),
        ("/DOCS", None),
        ("/", None),
        ("/api/docs", None),
        ("/openapi.json", None),
    ],
)
def test_csp_for_relaxes_the_named_paths_and_only_those(path: str, expected: str | None) -> None:
    """A named path covers itself and what is below it, whole segments only; the longest
    match decides; everything else keeps the strict default (case matters: /DOCS is not
    /docs, so the mistake is strict, never relaxed)."""
    app = relaxed_app(csp_for={"/docs": DOCS_CSP, "/docs/oauth2-redirect": OAUTH_CSP})
    policy = policy_at(app, path)
    if expected is None:
        assert policy == csp(policy.split("'nonce-", 1)[1].split("'", 1)[0])
    else:
        assert policy == expected


def test_csp_for_policy_may_be_a_function_of_the_nonce() -> None:
    """A callable gets this response's nonce, as ``csp=`` does."""
    app = relaxed_app(csp_for={"/docs": lambda nonce: f"script-src 'nonce-{nonce}'"})
    assert re.fullmatch(r"script-src 'nonce-[A-Za-z0-9_-]{22}'", policy_at(app, "/docs/x"))


def test_csp_for_keeps_every_other_header() -> None:
    """Only the CSP is relaxed: framing, nosniff, Referrer- and Permissions-Policy stay."""
    with TestClient(relaxed_app(csp_for={"/docs": DOCS_CSP})) as client:
        reply = client.get("/docs")
    assert {k: reply.headers[k] for k in security_headers("x")} == {
        **security_headers("x"),
        "content-security-policy": DOCS_CSP,
    }


def test_csp_for_matches_the_path_below_root_path() -> None:
    """Behind a proxy that serves the app under /app, the names are the app's own paths."""
    app = relaxed_app(csp_for={"/docs": DOCS_CSP})
    assert policy_at(app, "/app/docs", root_path="/app") == DOCS_CSP
    assert policy_at(app, "/app/other", root_path="/app") != DOCS_CSP


def test_a_fixed_string_is_accepted_as_the_default_policy() -> None:
    """``csp=`` takes a fixed string as well as a function of the nonce."""
    assert policy_at(relaxed_app(csp="default-src 'self'"), "/x") == "default-src 'self'"


def test_add_security_headers_takes_csp_for(client: ActionClient) -> None:
    """Through the facade: ``bastion.add_security_headers(app, csp_for=...)``."""
    bastion, app = build()
    bastion.add_security_headers(app, csp_for={"/own": DOCS_CSP})
    with ActionClient(app, bastion) as fresh:
        # The page's own CSP header still wins over any bastion adds.
        assert fresh.get("/own").headers["content-security-policy"] == "frame-ancestors 'self'"
        assert fresh.get("/stream").headers["content-security-policy"].startswith("default-src")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"csp_for": {"docs": DOCS_CSP}}, "csp_for: 'docs' is not a path like /docs"),
        ({"csp_for": {"//evil": DOCS_CSP}}, "csp_for: '//evil' is not a path like /docs"),
        ({"csp_for": {"/docs?x": DOCS_CSP}}, r"csp_for: '/docs\?x' is not a path like /docs"),
        ({"csp_for": {"/do cs": DOCS_CSP}}, "csp_for: '/do cs' is not a path like /docs"),
        ({"csp_for": {"/": DOCS_CSP}}, "csp_for: '/' is every path: give the policy as csp="),
        ({"csp_for": {"/docs": DOCS_CSP, "/docs/": DOCS_CSP}}, "csp_for: '/docs/' is given twice"),
        (
            {"csp_for": {"/docs": "default-src *\r\nSet-Cookie: a=b"}},
            r"csp_for\['/docs'\]: a CSP is one non-empty line of text",
        ),
        ({"csp_for": {"/docs": ""}}, r"csp_for\['/docs'\]: a CSP is one non-empty line of text"),
        (
            {"csp_for": {"/docs": "script-src \u2019self\u2019"}},
            r"csp_for\['/docs'\]: a CSP header is Latin-1 text",
        ),
        (
            {"csp_for": {"/docs": 42}},
            r"csp_for\['/docs'\]: a CSP is a string or a function of the nonce",
        ),
        ({"csp_for": "/docs"}, r'csp_for maps paths to policies: \{"/docs": policy\}'),
        ({"csp": "a\nb"}, "csp: a CSP is one non-empty line of text"),
    ],
)
def test_a_bad_path_or_policy_is_refused_at_start_up(options: dict[str, Any], message: str) -> None:
    """Header injection (a CR/LF in a policy) and paths that could never match (or match
    everything) are ConfigurationErrors when the app is built, not a broken header later."""
    bastion, app = build(headers=False)
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        bastion.add_security_headers(app, **options)
    with pytest.raises(ConfigurationError, match=f"^{message}$"):
        SecurityHeaders(app, https=lambda scope: False, **options)
