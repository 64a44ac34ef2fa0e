"""OpenTelemetry: one span named by the action, three metrics, and nothing of the call's
values in any of them.

Each test drives a small app whose ``Telemetry`` has its own SDK providers (in-memory
exporter and reader), so no global provider is set and tests do not see each other's
spans.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import SECRET
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.testclient import TestClient

from bastion import Bastion, ConfigurationError, Context, User, public, require
from bastion.stores import MemoryStore
from bastion.telemetry import Telemetry
from bastion.testing import ActionClient

CANARY = "canary-7d3e-secret-field-value"


class Post(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str = Field(max_length=40)


class Posted(BaseModel):
    ok: bool


@dataclass
class Site:
    bastion: Bastion[Any]
    app: Starlette
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader
    tracer_provider: TracerProvider

    def client(self) -> ActionClient:
        return ActionClient(self.app, self.bastion, client_address="203.0.113.7")

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())

    def points(self) -> dict[str, list[tuple[dict[str, Any], Any]]]:
        """Metric name → [(attributes, value or histogram count)], as the reader has them."""
        found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        data = self.metrics.get_metrics_data()
        for resource in data.resource_metrics if data else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        value = getattr(point, "value", None)
                        if value is None:
                            value = point.count  # type: ignore[union-attr]
                        found.setdefault(metric.name, []).append((dict(point.attributes), value))
        return found


def build() -> Site:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    bastion: Bastion[Any] = Bastion(
        secret_key=SECRET,
        store=MemoryStore(),
        load_user=lambda user_id: User(id=user_id, roles=frozenset({"author"})),
        telemetry=Telemetry(
            tracer_provider=tracer_provider,
            meter_provider=MeterProvider(metric_readers=[reader], shutdown_on_exit=False),
        ),
        audit_sinks=[],
    )

    @bastion.action(policy=public, rate=None, tokens=True)
    def create_post(data: Post) -> Posted:
        return Posted(ok=True)

    @bastion.action(policy=public, rate=None)
    def explode(data: Post) -> None:
        raise RuntimeError(f"could not store {data.title}")

    @bastion.action(policy=require(roles={"author"}), rate=None, tokens=["posts:write"])
    def publish(data: Post) -> Posted:
        return Posted(ok=True)

    app = Starlette()
    bastion.mount(app)
    return Site(bastion, app, spans, reader, tracer_provider)


@pytest.fixture
def site() -> Site:
    return build()


def only(site: Site) -> ReadableSpan:
    spans = site.finished()
    assert len(spans) == 1, [s.name for s in spans]
    return spans[0]


def test_an_accepted_call_is_one_server_span_named_by_the_action(site: Site) -> None:
    """Its name and attributes exactly; one call counted, its duration recorded."""
    with site.client() as client:
        assert client.call("create_post", {"title": "Hello"}).status_code == 200
    span = only(site)
    assert span.name == "action create_post"
    assert span.kind is SpanKind.SERVER
    assert span.status.status_code is StatusCode.UNSET
    assert dict(span.attributes or {}) == {
        "bastion.action": "create_post",
        "bastion.policy": "public",
        "bastion.outcome": "ok",
        "http.response.status_code": 200,
    }
    assert span.events == ()
    points = site.points()
    assert points["bastion.action.calls"] == [
        (
            {
                "bastion.action": "create_post",
                "bastion.outcome": "ok",
                "http.response.status_code": 200,
            },
            1,
        )
    ]
    assert points["bastion.action.duration"] == [
        ({"bastion.action": "create_post", "bastion.outcome": "ok"}, 1)
    ]
    assert "bastion.action.refusals" not in points


def test_a_csrf_refusal_names_its_stage_and_code(site: Site) -> None:
    """The span says which stage refused and why, with a ``bastion.refused`` event; the
    refusals counter counts it."""
    with site.client() as client:
        client.token()
        assert client.call("create_post", {"title": "Hello"}, token=None).status_code == 403
    span = only(site)
    assert span.name == "action create_post"
    assert dict(span.attributes or {}) == {
        "bastion.action": "create_post",
        "bastion.policy": "public",
        "bastion.outcome": "csrf",
        "http.response.status_code": 403,
        "bastion.stage": "CSRF token",
        "bastion.error.code": "csrf_failed",
    }
    assert [(e.name, dict(e.attributes or {})) for e in span.events] == [
        ("bastion.refused", {"bastion.stage": "CSRF token", "bastion.error.code": "csrf_failed"})
    ]
    assert span.status.status_code is StatusCode.UNSET  # the caller's mistake, not an error
    assert site.points()["bastion.action.refusals"] == [
        (
            {
                "bastion.action": "create_post",
                "bastion.stage": "CSRF token",
                "bastion.error.code": "csrf_failed",
            },
            1,
        )
    ]


def test_a_validation_error_is_a_422_of_the_validation_stage(site: Site) -> None:
    with site.client() as client:
        assert client.call("create_post", {"title": "x" * 41}).status_code == 422
    span = only(site)
    attributes = dict(span.attributes or {})
    assert attributes["bastion.outcome"] == "invalid"
    assert attributes["http.response.status_code"] == 422
    assert attributes["bastion.stage"] == "validation"
    assert attributes["bastion.error.code"] == "invalid"
    assert site.points()["bastion.action.calls"] == [
        (
            {
                "bastion.action": "create_post",
                "bastion.outcome": "invalid",
                "http.response.status_code": 422,
            },
            1,
        )
    ]


def test_a_handler_that_raises_is_an_error_span_with_the_digest(site: Site) -> None:
    """500: status ERROR (described by the code, never the exception's message), the
    digest the client got, no refusal event and no exception recorded."""
    with site.client() as client:
        reply = client.call("explode", {"title": CANARY})
    assert reply.status_code == 500
    digest = reply.json()["error"]["digest"]
    span = only(site)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "internal"
    assert dict(span.attributes or {}) == {
        "bastion.action": "explode",
        "bastion.policy": "public",
        "bastion.outcome": "error",
        "http.response.status_code": 500,
        "bastion.stage": "execute",
        "bastion.error.code": "internal",
        "bastion.digest": digest,
    }
    assert span.events == ()
    assert "bastion.action.refusals" not in site.points()


def test_a_traceparent_header_makes_the_span_its_child(site: Site) -> None:
    """Context from the caller (the global propagator, W3C by default): same trace ID,
    the caller's span as parent."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with site.client() as client:
        reply = client.call(
            "create_post",
            {"title": "Hello"},
            headers={"traceparent": f"00-{trace_id}-{parent_id}-01"},
        )
    assert reply.status_code == 200
    span = only(site)
    assert span.context is not None
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == trace_id
    assert format(span.parent.span_id, "016x") == parent_id
    assert span.parent.is_remote
    assert span.kind is SpanKind.SERVER


def test_under_a_current_server_span_the_call_is_an_internal_child(site: Site) -> None:
    """An ASGI instrumentation's span is current: the call's span is INTERNAL beneath
    it, and a ``traceparent`` is that span's business, not read again."""
    tracer = site.tracer_provider.get_tracer("asgi")
    outer_app = site.app

    async def instrumented(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await outer_app(scope, receive, send)
            return
        with tracer.start_as_current_span("POST", kind=SpanKind.SERVER):
            await outer_app(scope, receive, send)

    with ActionClient(instrumented, site.bastion) as client:
        reply = client.call(
            "create_post",
            {"title": "Hello"},
            headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
        )
    assert reply.status_code == 200
    inner, outer = site.finished()
    assert (inner.name, inner.kind, outer.kind) == (
        "action create_post",
        SpanKind.INTERNAL,
        SpanKind.SERVER,
    )
    assert inner.parent is not None
    assert outer.context is not None
    assert inner.parent.span_id == outer.context.span_id
    assert outer.parent is None


def test_an_unknown_action_id_is_recorded_as_unknown(site: Site) -> None:
    """Never the ID the client sent (anyone can fill the URL with anything)."""
    sent = "not-an-action-" + CANARY
    with site.client() as client:
        token = client.token()
        reply = client.post(
            f"/_actions/{sent}", json={}, headers={"X-CSRF-Token": token, "Accept": "*/*"}
        )
    assert reply.status_code == 404
    span = only(site)
    assert span.name == "action unknown"
    assert dict(span.attributes or {}) == {
        "bastion.action": "unknown",
        "bastion.outcome": "not_found",
        "http.response.status_code": 404,
        "bastion.stage": "route",
        "bastion.error.code": "not_found",
    }
    assert site.points()["bastion.action.refusals"] == [
        (
            {
                "bastion.action": "unknown",
                "bastion.stage": "route",
                "bastion.error.code": "not_found",
            },
            1,
        )
    ]


def everything_recorded(site: Site) -> list[str]:
    """Every span name, attribute value, event name and attribute value, status
    description, and metric point attribute, as text."""
    seen: list[str] = []
    for span in site.finished():
        seen.append(span.name)
        seen.append(str(span.status.description))
        seen.extend(f"{k}={v}" for k, v in (span.attributes or {}).items())
        for event in span.events:
            seen.append(event.name)
            seen.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
    for name, points in site.points().items():
        seen.append(name)
        for attributes, _ in points:
            seen.extend(f"{k}={v}" for k, v in attributes.items())
    return seen


def test_no_value_of_the_call_reaches_a_span_or_a_metric(site: Site) -> None:
    """The attack: telemetry as a leak. A tainted value, field values, the CSRF token,
    the session cookie, an API token's secret and the opaque action ID go in; none of
    them comes out in any span, event or metric point, whatever the outcome."""
    site.bastion.taint("tainted-9f2c-value", "a secret of the app's")
    with site.client() as client:
        csrf_token = client.token()
        cookie = client.cookies.get("bastion_session") or next(iter(client.cookies.values()))
        api_token = client.portal.call(  # type: ignore[union-attr]
            lambda: site.bastion.tokens.create(
                1, name="ci", scopes=["posts:write"], expires_in=3600.0
            )
        )[1]
        statuses = [
            client.call("create_post", {"title": CANARY}).status_code,
            client.call("create_post", {"title": "tainted-9f2c-value"}).status_code,
            client.call("create_post", {"title": CANARY * 3}).status_code,
            client.call("create_post", {"title": CANARY}, token=None).status_code,
            client.call("explode", {"title": CANARY}).status_code,
            client.call("publish", {"title": CANARY}, token=csrf_token + "x").status_code,
        ]
    with TestClient(site.app, base_url="http://127.0.0.1") as script:  # no cookie, no token
        with_token = script.post(
            site.bastion.url_for("publish"),
            json={"title": CANARY},
            headers={"Authorization": f"Bearer {api_token}", "Accept": "application/json"},
        )
        statuses.append(with_token.status_code)
    assert statuses == [200, 200, 422, 403, 500, 403, 200]
    seen = "\n".join(everything_recorded(site))
    assert "action create_post" in seen
    assert "action publish" in seen
    secrets = {
        "field value": CANARY,
        "tainted value": "tainted-9f2c-value",
        "CSRF token": csrf_token,
        "session cookie": cookie,
        "API token": api_token,
        **{f"ID of {spec.name}": spec.id for spec in site.bastion.registry},
    }
    for what, value in secrets.items():
        assert value not in seen, what


def test_telemetry_is_off_unless_asked() -> None:
    """No ``telemetry=``: no Telemetry, and the pipeline's one check finds ``None``."""
    assert Bastion(secret_key=SECRET, store=MemoryStore()).runtime.telemetry is None
    with pytest.raises(ConfigurationError, match="telemetry is True, False or"):
        Bastion(secret_key=SECRET, store=MemoryStore(), telemetry="yes")  # type: ignore[arg-type]


def test_telemetry_true_records_through_the_global_providers() -> None:
    """``telemetry=True``: the global tracer provider (a proxy until one is set, so an
    app made before the provider is set up still records through it)."""
    telemetry = Bastion(secret_key=SECRET, store=MemoryStore(), telemetry=True).runtime.telemetry
    assert isinstance(telemetry, Telemetry)
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider | TracerProvider)


def test_without_opentelemetry_the_error_names_the_extra() -> None:
    """``opentelemetry`` blocked: ``telemetry=True`` is a ConfigurationError naming
    ``bastion[otel]``; ``import bastion`` and an app without telemetry do not mind."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; sys.modules['opentelemetry'] = None\n"
            "from bastion import Bastion, ConfigurationError\n"
            "from bastion.stores import MemoryStore\n"
            f"Bastion(secret_key={SECRET!r}, store=MemoryStore())\n"
            "try:\n"
            f"    Bastion(secret_key={SECRET!r}, store=MemoryStore(), telemetry=True)\n"
            "except ConfigurationError as exc:\n"
            "    print(exc)\n",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == (
        "Bastion(telemetry=...) needs OpenTelemetry: pip install 'bastion[otel]'"
    )


def test_the_prometheus_route_serves_admins_and_is_a_404_for_anyone_else() -> None:
    """``metrics_route(policy=...)``: the metrics as Prometheus text, through
    OpenTelemetry's reader, for an admin; for anyone else an unknown path's 404."""
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from starlette.routing import Route

    reader = PrometheusMetricReader()
    try:
        bastion: Bastion[Any] = Bastion(
            secret_key=SECRET,
            store=MemoryStore(),
            load_user=lambda user_id: User(id=user_id, roles=frozenset({user_id})),
            telemetry=Telemetry(
                meter_provider=MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
            ),
            audit_sinks=[],
        )

        @bastion.action(policy=public, rate=None)
        async def sign_in(ctx: Context[Any], data: Post) -> None:
            await ctx.login(User(id=data.title))

        app = Starlette(routes=[bastion.metrics_route(policy=require(roles={"admin"}))])
        bastion.mount(app)
        assert [r for r in app.routes if isinstance(r, Route) and r.path == "/metrics"]
        with ActionClient(app, bastion) as client:
            anonymous = client.get("/metrics")
            assert (anonymous.status_code, anonymous.text) == (404, "Not Found")
            assert client.get("/nothing-here").text == "Not Found"  # the same answer
            client.call("sign_in", {"title": "author"})
            assert client.get("/metrics").status_code == 404
            client.call("sign_in", {"title": "admin"})
            scraped = client.get("/metrics")
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        assert scraped.headers["cache-control"] == "no-store"
        # (Newer exporters add otel_scope_* labels after these.)
        assert re.search(
            r'^bastion_action_calls_total\{bastion_action="sign_in",bastion_outcome="ok",'
            r'http_response_status_code="200"[^}]*\} 2\.0$',
            scraped.text,
            flags=re.M,
        ), scraped.text
        assert "bastion_action_duration_seconds_bucket{" in scraped.text
    finally:
        reader.shutdown()
