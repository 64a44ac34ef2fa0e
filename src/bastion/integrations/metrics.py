"""``bastion.metrics_route()``: the metrics as Prometheus text, for whom a policy allows.

The numbers come from OpenTelemetry's Prometheus reader (``bastion[prometheus]``), which
the app puts on its meter provider; this serves what that reader's registry holds. For
anyone the policy does not allow, the answer is exactly an unknown path's (404): who is
not meant to scrape does not learn that there is something to scrape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from bastion.actions import policy as policies
from bastion.actions.policy import Policy
from bastion.errors import ActionError, ConfigurationError
from bastion.sessions import get_session

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from bastion.pipeline.runtime import Runtime

__all__ = ["endpoint"]


def endpoint(
    runtime: Runtime, policy: Policy, registry: CollectorRegistry | None
) -> Callable[[Request], Awaitable[Response]]:
    """The route's endpoint; ``registry`` defaults to prometheus_client's global one,
    where ``PrometheusMetricReader()`` registers."""
    try:
        import prometheus_client
    except ImportError as exc:
        raise ConfigurationError(
            "bastion.metrics_route() needs prometheus-client: pip install 'bastion[prometheus]'"
        ) from exc
    served = registry if registry is not None else prometheus_client.REGISTRY

    async def metrics(request: Request) -> Response:
        ctx = runtime.context("metrics", request.scope, get_session(request.scope))
        try:
            if policy.needs_user:
                await ctx.current_user()
            await policies.authorize(policy, ctx)
        except ActionError:
            # Starlette's own answer for a path it does not know.
            return PlainTextResponse("Not Found", status_code=404)
        return Response(
            prometheus_client.generate_latest(served),
            headers={"Cache-Control": "no-store"},
            media_type=prometheus_client.CONTENT_TYPE_LATEST,
        )

    return metrics
