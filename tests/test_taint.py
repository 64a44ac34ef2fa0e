"""Taint: values that must never leave the server, whatever a handler returns.

The attack each test stands for is a handler (or a bug in one) putting a secret where
the client can read it: in the reply, however deeply nested, in a flash message kept
for the next page, in a redirect URL, in an error message or a debug trace. The reply
is replaced by the generic 500; the server log names the reason, never the value.
Taint cannot stop the handler from having run (it stops its reply), so these tests
assert what the client and the log see.

Below: ``ctx.taint`` for one call, ``taint_env``, and ``RedactingFilter`` masking
secrets in bastion's logs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2 as httpx
import jinja2
import pytest
from conftest import SECRET
from pydantic import BaseModel, ConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bastion import ActionError, Bastion, Context, public
from bastion.sessions import Session
from bastion.stores import MemoryStore
from bastion.taint import MIN_TAINT_LENGTH, RedactingFilter, TaintedOutput, TaintSet, redactor
from bastion.testing import ActionClient

API_KEY = "sk_live_51HtaintTESTkey0123456789"
QUOTED = 'pa"ss\\wo\nrd-taint-0001'
"""Needs JSON escaping: a quote, a backslash and a newline."""
ACCENTED = 'clé"secrète-taint-0002'
"""Non-ASCII and a quote: pydantic writes it as UTF-8 with an escaped quote."""
SPACED = "sk live taint 0003"
"""Percent-encoded in a redirect URL (the spaces)."""
MARKUP = "sec<r&e\"t'-taint-0004"
"""HTML's special characters: a fragment's autoescape changes every one of them."""
DIGEST = re.compile(r"[0-9a-f]{16}")
HTML = {"Accept": "text/html"}

Where = Literal[
    "nowhere",
    "top",
    "nested",
    "list",
    "deep",
    "dict",
    "quoted",
    "accented",
    "error-message",
    "exception",
]


class Show(BaseModel):
    model_config = ConfigDict(extra="forbid")
    where: Where


class Inner(BaseModel):
    note: str


class Middle(BaseModel):
    inner: Inner
    items: list[Inner] = []


class Shown(BaseModel):
    text: str = "nothing to see"
    middle: Middle | None = None
    items: list[str] = []
    deep: list[list[Middle]] = []
    labels: dict[str, str] = {}


class Echo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str


class Echoed(BaseModel):
    text: str


FRAGMENT = """\
<p>{{ data.text }}</p>
<p title="{{ data.text }}">in an attribute</p>
<script type="application/json">{{ data|tojson }}</script>
"""
"""The htmx fragment of ``card``: the text escaped as Jinja writes it in text, in an
attribute and through ``tojson``."""


@dataclass
class Site:
    bastion: Bastion
    app: Starlette
    calls: list[str] = field(default_factory=list)

    def client(self) -> ActionClient:
        return ActionClient(self.app, self.bastion)


def build(*, debug: bool = False) -> Site:
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), debug=debug)
    bastion.taint(API_KEY, "stripe key")
    bastion.taint(QUOTED, "quoted secret")
    bastion.taint(ACCENTED, "accented secret")
    bastion.taint(SPACED, "spaced secret")
    bastion.taint(MARKUP, "markup secret")
    calls: list[str] = []

    @bastion.action(policy=public, rate=None, fragment="card.html")
    def card(data: Echo) -> Echoed:
        """Returns the text; htmx gets it rendered into an HTML fragment (escaped)."""
        calls.append("card")
        return Echoed(text=MARKUP if data.text == "markup" else data.text)

    @bastion.action(policy=public, rate=None)
    def show(data: Show) -> Shown:
        """Puts the API key (or another tainted value) at the place named."""
        calls.append(data.where)
        key = API_KEY
        match data.where:
            case "nowhere":
                return Shown()
            case "top":
                return Shown(text=key)
            case "nested":
                return Shown(middle=Middle(inner=Inner(note=f"the key is {key}!")))
            case "list":
                return Shown(items=["a", "b", key])
            case "deep":
                hidden = Middle(inner=Inner(note="x"), items=[Inner(note="y"), Inner(note=key)])
                return Shown(deep=[[], [Middle(inner=Inner(note="z")), hidden]])
            case "dict":
                return Shown(labels={"innocent": key})
            case "quoted":
                return Shown(text=QUOTED)
            case "accented":
                return Shown(text=ACCENTED)
            case "error-message":
                raise ActionError(f"Upstream refused {key}", code="upstream", status=502)
            case "exception":
                raise RuntimeError(f"upstream refused key {key}")

    @bastion.action(policy=public, rate=None)
    def echo(ctx: Context, data: Echo) -> Echoed:
        """Taints the text for this call only when asked to, then returns it."""
        calls.append("echo")
        if data.text.startswith("taint:"):
            ctx.taint(data.text, "per-call secret")
        return Echoed(text=data.text)

    templates = Jinja2Templates(
        env=jinja2.Environment(
            loader=jinja2.DictLoader(
                {
                    "flash": "{{ 'flash' if flash() else 'no flash' }}",
                    "card.html": FRAGMENT,
                }
            ),
            autoescape=True,
        )
    )
    bastion.templates(templates)

    async def flash_page(request: Request) -> Response:
        return templates.TemplateResponse(request, "flash")

    app = Starlette(routes=[Route("/flash", flash_page)])
    bastion.mount(app)
    return Site(bastion, app, calls)


@pytest.fixture
def site() -> Site:
    return build()


@pytest.fixture
def client(site: Site) -> Iterator[ActionClient]:
    with site.client() as c:
        yield c


def assert_internal(reply: httpx.Response) -> str:
    """Exactly the generic 500 envelope; its digest is returned."""
    assert reply.status_code == 500
    digest = reply.json()["error"].get("digest", "")
    assert DIGEST.fullmatch(digest)
    assert reply.json() == {
        "ok": False,
        "error": {"code": "internal", "message": "Something went wrong.", "digest": digest},
    }
    assert reply.headers["content-type"] == "application/json"
    return digest


def assert_nothing_tainted_in(reply: httpx.Response) -> None:
    for value in (API_KEY, QUOTED, ACCENTED, SPACED, MARKUP):
        assert value not in reply.text
        assert json.dumps(value)[1:-1] not in reply.text
        for name, header in reply.headers.items():
            assert value not in header, name


def taint_failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "bastion" and r.exc_info and isinstance(r.exc_info[1], TaintedOutput)
    ]


# --- the reply --------------------------------------------------------------------------


def test_reply_without_tainted_values_is_sent(site: Site, client: ActionClient) -> None:
    """The guard is invisible to a reply that holds no tainted value."""
    reply = client.call("show", {"where": "nowhere"})
    assert reply.status_code == 200
    assert reply.json() == {
        "ok": True,
        "data": {"text": "nothing to see", "middle": None, "items": [], "deep": [], "labels": {}},
    }


@pytest.mark.parametrize(
    ("where", "reason"),
    [
        ("top", "stripe key"),
        ("nested", "stripe key"),
        ("list", "stripe key"),
        ("deep", "stripe key"),
        ("dict", "stripe key"),
        ("quoted", "quoted secret"),
        ("accented", "accented secret"),
        ("error-message", "stripe key"),
    ],
)
def test_tainted_value_anywhere_in_the_reply_becomes_the_generic_500(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture, where: str, reason: str
) -> None:
    """Attack: a handler returns a secret in a field, a nested model, a list, a list of
    lists of models, a dict value, JSON-escaped, or in its own error message. The reply
    is the generic 500 with a digest, and nothing of the value reaches the client."""
    with caplog.at_level(logging.ERROR, logger="bastion"):
        reply = client.call("show", {"where": where})
    digest = assert_internal(reply)
    assert_nothing_tainted_in(reply)
    assert site.calls == [where]
    [record] = taint_failures(caplog)
    assert record.digest == digest  # type: ignore[attr-defined]
    assert str(record.exc_info[1]) == (  # type: ignore[index]
        f"the reply held a value tainted as {reason!r}; it was not sent"
    )


def test_log_of_a_tainted_reply_names_the_reason_and_not_the_value(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """The server log says which action, which digest and why; the value is nowhere in it
    (message, exception text or traceback)."""
    with caplog.at_level(logging.ERROR, logger="bastion"):
        reply = client.call("show", {"where": "nested"})
    digest = assert_internal(reply)
    [record] = taint_failures(caplog)
    assert record.getMessage() == f"action show failed [digest {digest}]"
    assert "TaintedOutput: the reply held a value tainted as 'stripe key'; it was not sent" in (
        caplog.text
    )
    assert API_KEY not in caplog.text


def test_exception_holding_a_tainted_value_is_masked_in_the_traceback(
    site: Site, client: ActionClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Attack on the log: an exception whose message holds the key. The client gets the
    generic 500; the logged traceback shows ``[tainted]`` where the key was."""
    with caplog.at_level(logging.ERROR, logger="bastion"):
        reply = client.call("show", {"where": "exception"})
    assert_internal(reply)
    assert_nothing_tainted_in(reply)
    assert "RuntimeError: upstream refused key [tainted]" in caplog.text
    assert API_KEY not in caplog.text


def test_debug_trace_holding_a_tainted_value_is_not_sent() -> None:
    """Attack: debug mode puts the exception's message in the reply; holding the key, the
    whole reply is replaced by the plain generic 500 (no debug block)."""
    site = build(debug=True)
    with site.client() as client:
        plain = client.call("show", {"where": "top"})
        reply = client.call("show", {"where": "exception"})
    assert_internal(plain)
    assert_internal(reply)
    assert "debug" not in reply.json()
    assert_nothing_tainted_in(reply)


def test_debug_trace_without_tainted_values_keeps_its_debug_block() -> None:
    """The guard replaces only what holds a tainted value: a debug 500 of another
    exception still carries its type and message."""
    site = build(debug=True)

    @site.bastion.action(policy=public)
    def broken() -> None:
        raise RuntimeError("plain failure")

    with site.client() as client:
        reply = client.call("broken")
    assert reply.status_code == 500
    assert reply.json()["debug"] == {"type": "RuntimeError", "message": "plain failure"}


# --- flash and redirect -----------------------------------------------------------------


def test_tainted_value_in_a_success_flash_is_not_kept(site: Site, client: ActionClient) -> None:
    """Attack: a plain form post whose result (kept in the flash for the next page) holds
    the key. The reply is the generic 500 instead of the 303, and the next page shows no
    flash: the value never reaches the session."""
    reply = client.submit("show", {"where": "list"})
    assert_internal(reply)
    assert_nothing_tainted_in(reply)
    assert client.get("/flash", headers=HTML).text == "no flash"


def test_tainted_value_in_a_failure_flash_is_not_kept(site: Site, client: ActionClient) -> None:
    """Attack: a plain form post refused with a message that holds the key (the failure
    flash): the same 500, no flash left."""
    reply = client.submit("show", {"where": "error-message"})
    assert_internal(reply)
    assert client.get("/flash", headers=HTML).text == "no flash"


def test_clean_flash_is_kept(site: Site, client: ActionClient) -> None:
    """Control: the same form post without a tainted value leaves its flash (303)."""
    reply = client.submit("show", {"where": "nowhere"})
    assert reply.status_code == 303
    assert client.get("/flash", headers=HTML).text == "flash"


@pytest.mark.parametrize("value", [API_KEY, SPACED], ids=["raw", "percent-encoded"])
def test_tainted_value_in_the_redirect_url_is_not_sent(
    site: Site, client: ActionClient, value: str
) -> None:
    """Attack: a redirect whose URL (``_next``) carries the value, as is or
    percent-encoded by the Location header (spaces become %20): 500, no Location."""
    reply = client.submit("show", {"where": "nowhere", "_next": f"/done?k={value}"})
    assert_internal(reply)
    assert "location" not in reply.headers
    assert_nothing_tainted_in(reply)
    assert client.get("/flash", headers=HTML).text == "no flash"


def test_tainted_value_in_the_referer_redirect_is_not_sent(
    site: Site, client: ActionClient
) -> None:
    """A refused plain form goes back to the Referer's path: with the key in it, 500."""
    reply = client.submit(
        "show", {"where": "bogus"}, headers={"Referer": f"http://127.0.0.1/form?k={API_KEY}"}
    )
    assert_internal(reply)
    assert "location" not in reply.headers


# --- a value with HTML's special characters, by every way out ---------------------------


@pytest.mark.parametrize("where", ["script", "htmx-fragment", "plain-form-flash"])
def test_a_tainted_value_with_html_characters_is_refused(
    site: Site, client: ActionClient, where: str
) -> None:
    """Attack (found in review): a tainted value holding ``<``, ``&``, ``"`` and ``'``
    leaves HTML-escaped in an htmx fragment (``&lt;``, ``&amp;``, ``&#34;``, ``&#39;``, or
    ``\\u003c`` through ``tojson``), where a search for the raw or JSON spelling misses it.
    Through a script's JSON, the fragment and a plain form's flash: the generic 500 with a
    digest, and the value in no spelling."""
    if where == "script":
        reply = client.call("card", {"text": "markup"})
    elif where == "htmx-fragment":
        reply = client.call("card", {"text": "markup"}, headers={"HX-Request": "true"})
    else:
        reply = client.submit("card", {"text": "markup"})
    assert reply.status_code == 500
    if where == "htmx-fragment":
        assert "digest" in reply.text
    else:
        assert_internal(reply)
    for spelling in ("sec<r", "sec&lt;r", "sec\\u003cr", "taint-0004"):
        assert spelling not in reply.text, spelling
    assert client.get("/flash", headers=HTML).text == "no flash"
    assert site.calls == ["card"]


def test_a_tainted_value_with_html_characters_in_a_redirect_is_refused(
    client: ActionClient,
) -> None:
    """The same value percent-encoded in the redirect a plain form goes to: 500, no
    Location."""
    reply = client.submit("card", {"text": "plain", "_next": f"/done?k={MARKUP}"})
    assert_internal(reply)
    assert "location" not in reply.headers


def test_a_clean_fragment_is_sent(client: ActionClient) -> None:
    """Control: the fragment without a tainted value renders, escaped."""
    reply = client.call("card", {"text": "<b>bold</b>"}, headers={"HX-Request": "true"})
    assert reply.status_code == 200
    assert "<p>&lt;b&gt;bold&lt;/b&gt;</p>" in reply.text


# --- ctx.taint: one call only -----------------------------------------------------------


def test_ctx_taint_blocks_this_calls_reply(site: Site, client: ActionClient) -> None:
    """A value the handler tainted with ``ctx.taint`` (a hash it loaded) cannot be in its
    own reply."""
    reply = client.call("echo", {"text": "taint:hash-of-a-password"})
    assert_internal(reply)
    assert "hash-of-a-password" not in reply.text


def test_ctx_taint_lasts_one_call(site: Site, client: ActionClient) -> None:
    """A value tainted in one call is not tainted in the next (nor app-wide): the same
    text untainted goes through."""
    assert_internal(client.call("echo", {"text": "taint:per-call-value"}))
    site.calls.clear()

    @site.bastion.action(policy=public, rate=None)
    def plain(data: Echo) -> Echoed:
        return Echoed(text=data.text)

    reply = client.call(plain, {"text": "taint:per-call-value"})
    assert reply.status_code == 200
    assert reply.json() == {"ok": True, "data": {"text": "taint:per-call-value"}}
    assert site.bastion.taints.find("taint:per-call-value") is None


def test_ctx_taints_start_empty_and_collect_per_call() -> None:
    """``ctx.taints`` is ``None`` until the first ``ctx.taint``; then a set of that call."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    scope: dict[str, Any] = {"type": "http", "headers": [], "client": ("192.0.2.1", 1)}
    ctx = Context(
        action="a",
        scope=scope,
        session=Session(),
        client=bastion.client_address(scope),
        load_user=bastion.load_user,
        password_check=bastion.password_check,
    )
    assert ctx.taints is None
    ctx.taint("loaded-hash-value")
    assert ctx.taints is not None
    assert ctx.taints.find("…loaded-hash-value…") == "tainted in this call"
    assert len(ctx.taints) == 1


# --- TaintSet, taint_env ----------------------------------------------------------------


def test_taint_set_finds_raw_and_escaped_spellings() -> None:
    """A value is found as is, JSON-escaped (ASCII or UTF-8), and percent-encoded."""
    taints = TaintSet()
    taints.add('a"é\nsecret', "why")
    assert taints.find('{"x":"a\\"é\\nsecret"}') == "why"  # as pydantic writes it
    assert taints.find(json.dumps({"x": 'a"é\nsecret'})) == "why"  # as json.dumps does
    assert taints.find(b'raw: a"\xc3\xa9\nsecret') == "why"
    assert taints.find("/next?v=a%22%C3%A9%0Asecret") == "why"
    assert taints.find("a secret", None, b"") is None


def test_taint_set_counts_values_and_never_prints_them() -> None:
    """``len`` and ``repr`` count values (not spellings); the values are never shown."""
    taints = TaintSet()
    assert not taints
    taints.add("plain-value-123", "a")
    taints.add('needs "escaping"', "b")
    taints.add(b"bytes-value-456", "c")
    taints.add("plain-value-123", "a again")
    assert len(taints) == 3
    assert repr(taints) == "TaintSet(values=3)"
    assert bool(taints)


@pytest.mark.parametrize("value", ["", "short", b"12345"])
def test_values_shorter_than_the_minimum_cannot_be_tainted(value: str | bytes) -> None:
    """Five characters or fewer would match innocent text everywhere: ValueError."""
    with pytest.raises(ValueError, match=rf"^only text of {MIN_TAINT_LENGTH}\+ characters"):
        TaintSet().add(value, "why")


def test_taint_env_reads_and_taints_a_variable(
    site: Site, client: ActionClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``bastion.taint_env(NAME)`` returns the value and taints it under the variable's
    name: a reply holding it is refused."""
    monkeypatch.setenv("PAYMENT_API_KEY", "pk_env_value_7777")
    assert site.bastion.taint_env("PAYMENT_API_KEY") == "pk_env_value_7777"
    assert site.bastion.taints.find("x pk_env_value_7777 x") == "PAYMENT_API_KEY"

    @site.bastion.action(policy=public)
    def config() -> Echoed:
        return Echoed(text="pk_env_value_7777")

    assert_internal(client.call(config))


def test_taint_env_with_a_reason(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reason given to taint_env is the one the log will name."""
    monkeypatch.setenv("WEBHOOK_SECRET", "whsec_abcdef")
    site.bastion.taint_env("WEBHOOK_SECRET", "webhook signing secret")
    assert site.bastion.taints.find("whsec_abcdef") == "webhook signing secret"


def test_taint_env_of_an_unset_variable_is_a_key_error(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unset (or empty) variable is an error at start-up, not an untainted ``None``."""
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    monkeypatch.setenv("SET_BUT_EMPTY", "")
    with pytest.raises(KeyError, match="environment variable NOT_SET_ANYWHERE is not set"):
        site.bastion.taint_env("NOT_SET_ANYWHERE")
    with pytest.raises(KeyError, match="environment variable SET_BUT_EMPTY is not set"):
        site.bastion.taint_env("SET_BUT_EMPTY")


# --- RedactingFilter --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("login failed password=hunter2 for ada", "login failed password=*** for ada"),
        ("PASSWORD: hunter2", "PASSWORD: ***"),
        ('{"password": "hunter2", "user": "ada"}', '{"password": "***", "user": "ada"}'),
        ("pwd='hunter2'", "pwd='***'"),
        ("token=abc.def&next=/", "token=***&next=/"),
        ("api_key=k1 api-key=k2 apikey=k3", "api_key=*** api-key=*** apikey=***"),
        ("Authorization: Bearer eyJhbGciOi", "Authorization: ***"),
        ("authorization=Basic dXNlcjpwYXNz", "authorization=***"),
        ("cookie: session=abc123; theme=dark", "cookie: ***; theme=dark"),
        ("secret=s3cr3t, csrf=tok", "secret=***, csrf=***"),
        ("nothing to hide here", "nothing to hide here"),
        ("the password policy changed", "the password policy changed"),
    ],
)
def test_redactor_masks_secret_like_pairs(line: str, masked: str) -> None:
    """``name=value`` pairs for passwords, tokens, keys, cookies and sessions are
    masked; words that merely mention them are not."""
    assert RedactingFilter().redact(line) == masked


def test_redactor_masks_every_app_wide_tainted_value(site: Site) -> None:
    """Every Bastion's ``taint()`` values are masked in any text the filter sees."""
    assert site.bastion.taints in redactor.taint_sets
    assert redactor.redact(f"calling with {API_KEY} now") == "calling with [tainted] now"


def test_bastion_loggers_mask_message_arguments(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """A record on bastion's loggers is masked after formatting: an argument holding a
    password pair or a tainted value is masked in the message, and no args remain."""
    with caplog.at_level(logging.INFO):
        for name in ("bastion", "bastion.security", "bastion.audit"):
            logging.getLogger(name).info("user said %s with %s", "password=hunter2", API_KEY)
    assert [r.getMessage() for r in caplog.records] == ["user said password=*** with [tainted]"] * 3
    assert all(r.args == () for r in caplog.records)
    assert "hunter2" not in caplog.text


def test_bastion_logger_masks_tracebacks(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """An exception logged on bastion's logger has its formatted traceback masked."""
    with caplog.at_level(logging.ERROR):
        try:
            raise ValueError(f"db url postgres://app:{API_KEY}@db token=t0k3n")
        except ValueError:
            logging.getLogger("bastion").exception("failed")
    assert "ValueError: db url postgres://app:[tainted]@db token=***" in caplog.text
    assert API_KEY not in caplog.text
    assert "t0k3n" not in caplog.text


def test_redactor_on_an_apps_own_handler_masks_its_logs(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    """The filter covers bastion's loggers; added to a handler, it covers the app's own."""
    app_logger = logging.getLogger("tests.myapp")
    caplog.handler.addFilter(redactor)
    try:
        with caplog.at_level(logging.INFO):
            app_logger.info("charging with %s, password=%s", API_KEY, "hunter2")
    finally:
        caplog.handler.removeFilter(redactor)
    assert caplog.records[0].getMessage() == "charging with [tainted], password=***"
