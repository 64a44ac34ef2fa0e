"""Stage 2, where a call comes from: ``parse_origin``, ``check`` and ``allowed_origins``.

The whole stack's answers (statuses and envelopes, with tokens) are in test_csrf.py's
matrix; here each rule of ``bastion.http.origin`` is checked on its own, then through the
app for what only the app decides (debug mode's loopback origins, Host ignored).
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from conftest import SECRET, mounted
from helpers import CROSS_ORIGIN
from starlette.datastructures import Headers

from bastion import Bastion, ConfigurationError, public
from bastion.http.origin import CrossOrigin, check, parse_origin
from bastion.stores import MemoryStore
from bastion.testing import ActionClient

ALLOWED = frozenset({"https://app.example:443", "http://127.0.0.1:8000"})


def headers(*pairs: tuple[str, str]) -> Headers:
    """Raw request headers, repeated names kept (as a server hands them over)."""
    return Headers(raw=[(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in pairs])


def security_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bastion.security"]


# --- parse_origin ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        ("https://app.example", "https://app.example:443"),
        ("http://app.example", "http://app.example:80"),
        ("https://app.example:443", "https://app.example:443"),
        ("https://app.example:8443", "https://app.example:8443"),
        ("HTTPS://App.Example", "https://app.example:443"),
        ("http://127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("http://[::1]:8000", "http://[::1]:8000"),
        ("https://xn--bcher-kva.example", "https://xn--bcher-kva.example:443"),
        ("http://localhost", "http://localhost:80"),
    ],
)
def test_parse_origin_makes_the_port_explicit(value: str, parsed: str) -> None:
    """A well-formed origin becomes scheme://host:port, lower-cased, default port written."""
    assert parse_origin(value) == parsed


@pytest.mark.parametrize(
    "value",
    [
        "",
        "null",
        "http://",
        "https://",
        "app.example",
        "//app.example",
        "https://app.example/",
        "https://app.example/path",
        "https://app.example?q",
        "https://app.example#f",
        "https://user@app.example",
        "https://user:pw@app.example",
        "http://[::1",
        "http://[not-ipv6]",
        "https://app.example:0",
        "https://app.example:65536",
        "https://app.example:99999",
        "https://app.example:",
        "https://app.example:http",
        "https://app..example",
        "https://.app.example",
        "https://app.example.",
        "https://-app.example",
        "https://*.app.example",
        "https://app_example",
        "https://bücher.example",
        "https://app example",
        " https://app.example",
        "https://app.example ",
        "ftp://app.example",
        "javascript://app.example",
        "file://",
        "https://app.example, https://evil.example",
    ],
)
def test_parse_origin_refuses_what_a_browser_never_sends(value: str) -> None:
    """Paths, user info, bad ports, bad hosts, other schemes, lists: None (so 403)."""
    assert parse_origin(value) is None


# --- check: Sec-Fetch-Site ------------------------------------------------------------


@pytest.mark.parametrize("site", ["cross-site", "same-site", "none", "Same-Origin", ""])
def test_sec_fetch_site_other_than_same_origin_is_refused(site: str) -> None:
    """Attack: a sibling sub-domain or another site posts; the browser says so. 403,
    even when Origin itself is allowed."""
    with pytest.raises(CrossOrigin):
        check(headers(("sec-fetch-site", site), ("origin", "https://app.example")), ALLOWED, "a")


def test_sec_fetch_site_same_origin_passes() -> None:
    """Sec-Fetch-Site: same-origin with an allowed Origin passes."""
    check(
        headers(("sec-fetch-site", "same-origin"), ("origin", "https://app.example")),
        ALLOWED,
        "a",
    )


def test_sec_fetch_site_repeated_is_refused() -> None:
    """Two Sec-Fetch-Site headers (one forged next to the browser's) are refused."""
    with pytest.raises(CrossOrigin):
        check(
            headers(("sec-fetch-site", "same-origin"), ("sec-fetch-site", "same-origin")),
            ALLOWED,
            "a",
        )


def test_sec_fetch_site_same_origin_does_not_excuse_a_foreign_origin() -> None:
    """Sec-Fetch-Site is a first filter; Origin is still compared after it."""
    with pytest.raises(CrossOrigin):
        check(
            headers(("sec-fetch-site", "same-origin"), ("origin", "https://evil.example")),
            ALLOWED,
            "a",
        )


# --- check: Origin and Referer --------------------------------------------------------


@pytest.mark.parametrize(
    "origin", ["https://app.example", "https://app.example:443", "http://127.0.0.1:8000"]
)
def test_allowed_origin_passes(origin: str) -> None:
    """An Origin equal to an allowed one (after normalising the port) passes."""
    check(headers(("origin", origin)), ALLOWED, "a")


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://evil.app.example",
        "http://app.example",
        "https://app.example:8443",
        "http://127.0.0.1",
        "http://localhost:8000",
        "null",
        "",
        "https://app.example/",
    ],
)
def test_other_origin_is_refused(origin: str) -> None:
    """Another host, a sub-domain, another scheme or port, null, empty, malformed: 403."""
    with pytest.raises(CrossOrigin):
        check(headers(("origin", origin)), ALLOWED, "a")


def test_repeated_origin_is_refused_even_if_both_are_allowed() -> None:
    """Two Origin headers are never a browser's: 403, not a pick of either."""
    with pytest.raises(CrossOrigin):
        check(
            headers(("origin", "https://app.example"), ("origin", "https://app.example")),
            ALLOWED,
            "a",
        )


def test_no_origin_no_referer_passes_this_stage() -> None:
    """Neither header (old clients, privacy tools): stage 2 passes; the token decides."""
    check(headers(), ALLOWED, "a")


@pytest.mark.parametrize(
    "referer",
    [
        "https://app.example/",
        "https://app.example/page?x=1#top",
        "https://app.example:443/deep/path",
        "http://127.0.0.1:8000/form",
    ],
)
def test_allowed_referer_without_origin_passes(referer: str) -> None:
    """No Origin: the Referer's origin (scheme, host, port) is compared instead."""
    check(headers(("referer", referer)), ALLOWED, "a")


@pytest.mark.parametrize(
    "referer",
    [
        "https://evil.example/",
        "https://app.example.evil.example/",
        "http://app.example/",
        "https://app.example:8443/",
        "https://user@app.example/",
        "https://user:pw@app.example/",
        "http://[::1",
        "not a url",
        "/relative/path",
        "//app.example/",
    ],
)
def test_foreign_or_malformed_referer_without_origin_is_refused(referer: str) -> None:
    """No Origin and a Referer from elsewhere, with user info, or malformed: 403."""
    with pytest.raises(CrossOrigin):
        check(headers(("referer", referer)), ALLOWED, "a")


def test_repeated_referer_is_refused() -> None:
    """Two Referer headers: 403."""
    with pytest.raises(CrossOrigin):
        check(
            headers(("referer", "https://app.example/"), ("referer", "https://app.example/")),
            ALLOWED,
            "a",
        )


def test_origin_decides_over_referer() -> None:
    """When Origin is present the Referer is not consulted, either way."""
    check(
        headers(("origin", "https://app.example"), ("referer", "https://evil.example/")),
        ALLOWED,
        "a",
    )
    with pytest.raises(CrossOrigin):
        check(
            headers(("origin", "https://evil.example"), ("referer", "https://app.example/")),
            ALLOWED,
            "a",
        )


@pytest.mark.parametrize(
    ("extra", "value"),
    [
        ("host", "evil.example"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "https"),
        ("forwarded", "host=evil.example;proto=https"),
    ],
)
def test_host_and_forwarded_headers_decide_nothing(extra: str, value: str) -> None:
    """Attack: an Origin matching a forged Host/X-Forwarded-Host. Only the configured
    list counts, so https://evil.example stays refused."""
    with pytest.raises(CrossOrigin):
        check(headers((extra, value), ("origin", "https://evil.example")), ALLOWED, "a")


def test_nothing_is_allowed_when_the_list_is_empty() -> None:
    """An empty list allows no Origin at all (fail closed)."""
    with pytest.raises(CrossOrigin):
        check(headers(("origin", "https://app.example")), frozenset(), "a")


# --- the security log -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sent", "message"),
    [
        ((("sec-fetch-site", "cross-site"),), "refused transfer: sec-fetch-site cross-site"),
        ((("origin", "https://evil.example/attack?x=1"),), "refused transfer: origin not allowed"),
        ((("origin", "null"),), "refused transfer: origin null"),
        (
            (("origin", "https://a.example"), ("origin", "https://b.example")),
            "refused transfer: origin repeated",
        ),
        (
            (("referer", "https://evil.example/attack?x=1"),),
            "refused transfer: referer not allowed",
        ),
    ],
)
def test_refusal_is_logged_without_the_header_value(
    caplog: pytest.LogCaptureFixture, sent: tuple[tuple[str, str], ...], message: str
) -> None:
    """One warning on bastion.security per refusal, in bastion's own words: a hostile
    header's value never reaches the log (no log injection, no leaked URLs)."""
    caplog.set_level(logging.WARNING, logger="bastion.security")
    with pytest.raises(CrossOrigin):
        check(headers(*sent), ALLOWED, "transfer")
    records = [r for r in caplog.records if r.name == "bastion.security"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert records[0].__dict__["event"] == "origin_refused"
    assert records[0].__dict__["action"] == "transfer"
    assert records[0].getMessage() == message
    logged = records[0].getMessage() + repr(records[0].__dict__)
    assert "evil.example" not in logged
    assert "a.example" not in logged


def test_a_passing_check_logs_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """Allowed calls leave no security event."""
    caplog.set_level(logging.DEBUG, logger="bastion.security")
    check(headers(("origin", "https://app.example")), ALLOWED, "a")
    assert security_messages(caplog) == []


# --- allowed_origins configuration ----------------------------------------------------


def test_allowed_origins_are_stored_normalised() -> None:
    """Bastion(allowed_origins=[...]) keeps each origin as scheme://host:port."""
    bastion = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        allowed_origins=["https://App.Example", "http://127.0.0.1:8000"],
    )
    assert bastion.config.allowed_origins == ("https://app.example:443", "http://127.0.0.1:8000")


def test_allowed_origins_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """BASTION_ALLOWED_ORIGINS is comma separated; blanks around entries are ignored."""
    monkeypatch.setenv("BASTION_ALLOWED_ORIGINS", " https://a.example , http://b.example:81,")
    bastion = Bastion(secret_key=SECRET, store=MemoryStore())
    assert bastion.config.allowed_origins == ("https://a.example:443", "http://b.example:81")


def test_allowed_origins_are_required_outside_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    """No list and no environment variable: the app refuses to start (deny by default)."""
    monkeypatch.delenv("BASTION_ALLOWED_ORIGINS")
    with pytest.raises(ConfigurationError, match=r"^allowed_origins is required"):
        Bastion(secret_key=SECRET, store=MemoryStore())


@pytest.mark.parametrize(
    "value", ["https://app.example/", "app.example", "*", "null", "https://user@app.example"]
)
def test_malformed_allowed_origin_is_a_configuration_error(value: str) -> None:
    """A configured origin with a path, no scheme, a wildcard or null stops start-up."""
    with pytest.raises(ConfigurationError, match=r"is not an origin like https://app.example"):
        Bastion(secret_key=SECRET, store=MemoryStore(), allowed_origins=[value])


def test_allowed_origins_as_one_string_is_a_configuration_error() -> None:
    """A bare string (iterated letter by letter otherwise) is refused."""
    with pytest.raises(ConfigurationError, match=r"^allowed_origins must be a list"):
        Bastion(
            secret_key=SECRET,
            store=MemoryStore(),
            allowed_origins="https://app.example",
        )


# --- through the app --------------------------------------------------------------------


@pytest.fixture
def debug_app() -> tuple[Bastion, list[str]]:
    """A debug-mode Bastion with no configured origins, and the list its action fills."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), debug=True, allowed_origins=[])
    calls: list[str] = []

    @bastion.action(policy=public)
    def ping() -> None:
        calls.append("ping")

    return bastion, calls


@pytest.mark.parametrize("origin", ["http://127.0.0.1", "http://localhost"])
def test_debug_mode_allows_the_loopback_origin_served(
    debug_app: tuple[Bastion, list[str]], origin: str
) -> None:
    """Debug mode without a list: the loopback origin being served, by IP or localhost."""
    bastion, calls = debug_app
    with ActionClient(mounted(bastion), bastion, origin=origin) as client:
        reply = client.call("ping")
    assert (reply.status_code, reply.json()) == (200, {"ok": True, "data": None})
    assert calls == ["ping"]


@pytest.mark.parametrize(
    "origin", ["http://evil.example", "http://127.0.0.1:8000", "https://127.0.0.1"]
)
def test_debug_mode_refuses_other_origins(
    debug_app: tuple[Bastion, list[str]], origin: str
) -> None:
    """Debug mode is no open door: another host, port or scheme is still 403."""
    bastion, calls = debug_app
    with ActionClient(mounted(bastion), bastion, origin=origin) as client:
        reply = client.call("ping")
    assert (reply.status_code, reply.json()) == (403, CROSS_ORIGIN)
    assert calls == []


def test_forged_host_does_not_make_an_origin_allowed() -> None:
    """Attack: Origin https://evil.example with Host and X-Forwarded-Host set to match, on
    an app that trusts every host (so the Host guard does not refuse it first). The
    configured list decides: 403, and the handler never runs."""
    bastion = Bastion(secret_key=SECRET, store=MemoryStore(), trusted_hosts=["*"])
    calls: list[Any] = []

    @bastion.action(policy=public)
    def ping() -> None:
        calls.append("ping")

    with ActionClient(mounted(bastion), bastion) as client:
        reply = client.call(
            ping,
            origin="http://evil.example",
            headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
        )
    assert (reply.status_code, reply.json()) == (403, CROSS_ORIGIN)
    assert calls == []
