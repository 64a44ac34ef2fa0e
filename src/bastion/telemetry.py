"""OpenTelemetry for action calls: one span and three metrics per call (``bastion[otel]``).

Off unless the app asks: ``Bastion(telemetry=True)`` records through the global tracer
and meter providers, ``Bastion(telemetry=Telemetry(tracer_provider=…,
meter_provider=…))`` through the ones given. ``opentelemetry`` is imported here, when a
``Telemetry`` is made, never by ``import bastion``; with telemetry off the pipeline
checks one attribute per call and does nothing else.

What is recorded is bastion's own words only: the action's *name* (``unknown`` for an
ID that names none: never the ID the client sent), the outcome, the status, the policy's
description, the stage and code of a refusal, the digest of a 5xx. Never an argument, a
field, a header, a cookie, a token, the opaque action ID or an exception's message (which
may quote any of them): ``tests/test_telemetry.py`` collects every attribute and looks.

    span      ``action <name>``: SERVER, a child of an incoming ``traceparent`` (the
              global propagator); INTERNAL under a span already current (an ASGI
              instrumentation's)
              bastion.action, bastion.outcome, http.response.status_code, bastion.policy,
              bastion.stage and bastion.error.code (a call that did not succeed),
              bastion.digest (5xx, whose status is ERROR); an event
              ``bastion.refused`` (stage, code) per refusal
    counter   bastion.action.calls      bastion.action, bastion.outcome,
                                        http.response.status_code
    counter   bastion.action.refusals   bastion.action, bastion.stage, bastion.error.code
    histogram bastion.action.duration   bastion.action, bastion.outcome (seconds)
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from bastion.errors import ActionError, ConfigurationError
from bastion.events import outcome_of

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, TracerProvider

__all__ = ["UNKNOWN", "Outcome", "Telemetry"]

UNKNOWN: Final = "unknown"
"""The action name recorded for an ID that names no action."""

_NAME: Final = "bastion"


def _version() -> str:
    try:
        return version("bastion")
    except PackageNotFoundError:  # pragma: no cover - run from a checkout not installed
        return "0"


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one call ended, as the pipeline knows it once the call is done."""

    error: ActionError | None
    """The refusal or failure the reply is (``None``: the call succeeded)."""
    status: int
    stage: str | None
    """The stage that refused or failed (``None`` when nothing did)."""
    digest: str | None
    started: float
    """``time.perf_counter()`` when the call arrived."""


class Telemetry:
    """Spans and metrics for every action call. ``tracer_provider`` and
    ``meter_provider`` default to OpenTelemetry's global ones (set them with
    ``trace.set_tracer_provider`` before the first call, or pass them here: tests do).
    Raises ``ConfigurationError`` when ``opentelemetry-api`` is not installed."""

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        try:
            from opentelemetry import metrics, propagate, trace
        except ImportError as exc:
            raise ConfigurationError(
                "Bastion(telemetry=...) needs OpenTelemetry: pip install 'bastion[otel]'"
            ) from exc
        self._trace = trace
        self._propagate = propagate
        self._tracer = trace.get_tracer(_NAME, _version(), tracer_provider=tracer_provider)
        meter = metrics.get_meter(_NAME, _version(), meter_provider=meter_provider)
        self._calls = meter.create_counter(
            "bastion.action.calls", unit="{call}", description="Action calls, by outcome"
        )
        self._refusals = meter.create_counter(
            "bastion.action.refusals",
            unit="{refusal}",
            description="Action calls refused (status below 500), by stage and code",
        )
        self._duration = meter.create_histogram(
            "bastion.action.duration", unit="s", description="Time from arrival to reply"
        )

    @contextlib.contextmanager
    def span(self, name: str, policy: str | None, headers: Mapping[str, str]) -> Iterator[Span]:
        """The call's span, current while the call runs (so the handler's own spans are
        its children). ``headers`` are read for ``traceparent`` only when no span is
        current: under an ASGI instrumentation's server span, that span is the parent."""
        trace = self._trace
        if trace.get_current_span().get_span_context().is_valid:
            context, kind = None, trace.SpanKind.INTERNAL
        else:
            context, kind = self._propagate.extract(headers), trace.SpanKind.SERVER
        attributes: dict[str, Any] = {"bastion.action": name}
        if policy is not None:
            attributes["bastion.policy"] = policy
        # No exception is recorded, nor its status set from it: its message may quote
        # the call's values. The pipeline catches every exception of a call anyway.
        with self._tracer.start_as_current_span(
            f"action {name}",
            context=context,
            kind=kind,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def record(self, span: Span, name: str, outcome: Outcome) -> None:
        """The call's end: attributes and events on its span, and the three metrics."""
        error, status = outcome.error, outcome.status
        word = outcome_of(error)
        span.set_attribute("bastion.outcome", word)
        span.set_attribute("http.response.status_code", status)
        if error is not None:
            stage = outcome.stage or UNKNOWN
            span.set_attribute("bastion.stage", stage)
            span.set_attribute("bastion.error.code", error.code)
            if status >= 500:
                if outcome.digest is not None:
                    span.set_attribute("bastion.digest", outcome.digest)
                # The code, never the exception's text, as the status description.
                span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, error.code))
            else:
                refusal = {"bastion.stage": stage, "bastion.error.code": error.code}
                span.add_event("bastion.refused", refusal)
                self._refusals.add(1, {"bastion.action": name, **refusal})
        self._calls.add(
            1,
            {"bastion.action": name, "bastion.outcome": word, "http.response.status_code": status},
        )
        self._duration.record(
            time.perf_counter() - outcome.started,
            {"bastion.action": name, "bastion.outcome": word},
        )

    def __repr__(self) -> str:
        return "Telemetry()"
