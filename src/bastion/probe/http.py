"""Talking to the app: one request at a time, within the budget, every reply bounded."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin

try:
    import httpx2 as httpx
except ImportError as missing:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "bastion probe speaks HTTP with httpx2: pip install 'bastion[probe]'"
    ) from missing

from .model import MAX_READ, MAX_REDIRECTS, MAX_REQUESTS, MAX_REQUESTS_PER_FORM, REQUEST_TIMEOUT
from .target import same_origin


class _OutOfBudget(Exception):
    """No more requests or time: the cases left are not run."""


@dataclass(slots=True)
class _Reply:
    case: str
    status: int | None
    """``None`` when no answer came; ``error`` says why."""
    headers: httpx.Headers = field(default_factory=httpx.Headers)
    body: bytes = b""
    error: str = ""
    elapsed: float = 0.0
    """Seconds from sending to the last byte read."""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    @property
    def envelope(self) -> dict[str, object] | None:
        """The error object of a bastion refusal ``{"ok": false, "error": {...}}``."""
        data = self.json()
        if not isinstance(data, dict) or data.get("ok") is not False:
            return None
        error = data.get("error")
        if not isinstance(error, dict):
            return None
        if not isinstance(error.get("code"), str) or not isinstance(error.get("message"), str):
            return None
        return error

    @property
    def code(self) -> str:
        envelope = self.envelope
        return str(envelope["code"]) if envelope is not None else ""

    def got(self) -> str:
        if self.status is None:
            return f"no answer ({self.error})"
        if self.envelope is not None:
            return f"{self.status} {self.code}"
        return f"{self.status}"


class _Http:
    """One cookie jar (one visitor) sending requests within the budget."""

    def __init__(
        self,
        budget: _Budget,
        transport: httpx.BaseTransport | None,
        *,
        cookies: Iterable[tuple[str, str]] = (),
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.budget = budget
        self.client = httpx.Client(
            follow_redirects=False,
            trust_env=False,  # loopback only: never through a proxy from the environment
            headers={"User-Agent": "bastion-probe", **dict(headers)},
            transport=transport,
        )
        for name, value in cookies:
            self.client.cookies.set(name, value)

    def close(self) -> None:
        self.client.close()

    def send(
        self,
        case: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        content: bytes | Iterator[bytes] | None = None,
    ) -> _Reply:
        """One request; a 429 is sent again after its ``Retry-After`` while the wait budget
        (``--max-wait``) lasts (a streamed body cannot be sent twice)."""
        reply = self._send_once(case, method, url, headers, content, retry=False)
        while reply.status == 429 and not isinstance(content, Iterator):
            pause = self.budget.pause(reply.headers.get("retry-after", ""))
            if pause is None:
                break
            time.sleep(pause)
            reply = self._send_once(case, method, url, headers, content, retry=True)
        return reply

    def _send_once(
        self,
        case: str,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        content: bytes | Iterator[bytes] | None,
        *,
        retry: bool,
    ) -> _Reply:
        timeout = self.budget.spend(retry=retry)
        request = self.client.build_request(
            method, url, headers=dict(headers or {}), content=content, timeout=timeout
        )
        started = time.monotonic()
        try:
            response = self.client.send(request, stream=True)
        except httpx.TimeoutException:
            return _Reply(case, None, error=f"no reply in {timeout:g} s", elapsed=timeout)
        except httpx.HTTPError as exc:
            return _Reply(case, None, error=type(exc).__name__)
        try:
            body = bytearray()
            for chunk in response.iter_bytes():
                body += chunk
                if len(body) >= MAX_READ:
                    break
        except httpx.HTTPError as exc:
            took = time.monotonic() - started
            return _Reply(case, response.status_code, response.headers, bytes(body), str(exc), took)
        finally:
            response.close()
        took = time.monotonic() - started
        return _Reply(case, response.status_code, response.headers, bytes(body), elapsed=took)


class _Budget:
    def __init__(self, seconds: float, requests: int = MAX_REQUESTS, wait: float = 0.0) -> None:
        self.deadline = time.monotonic() + seconds
        self.seconds = seconds
        self.requests = requests
        self.total = 0
        self.form = 0
        self.wait = wait
        """Seconds the probe may still sleep on ``Retry-After``, every request together."""
        self.waited = 0.0

    def pause(self, retry_after: str) -> float | None:
        """Seconds to sleep before sending a 429'd request again, taken from the wait
        budget; ``None`` when the answer gives no wait in whole seconds, or one past what
        is left of the wait or the time budget."""
        value = retry_after.strip()
        if not value.isdigit() or len(value) > 6:
            return None
        seconds = max(1.0, float(value))
        if seconds > self.wait or time.monotonic() + seconds >= self.deadline - 1.0:
            return None
        self.wait -= seconds
        self.waited += seconds
        return seconds

    def spend(self, *, retry: bool = False) -> float:
        """Count one request (a retry after a 429 not against the per-form cap); its
        timeout, or ``_OutOfBudget``."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _OutOfBudget(f"the time budget of {self.seconds:g} s is spent")
        if self.total >= self.requests:
            raise _OutOfBudget(f"the budget of {self.requests} requests is spent")
        if self.form >= MAX_REQUESTS_PER_FORM and not retry:
            raise _OutOfBudget(f"the budget of {MAX_REQUESTS_PER_FORM} requests per form is spent")
        self.total += 1
        self.form += 0 if retry else 1
        return min(REQUEST_TIMEOUT, left)


def _get_page(http: _Http, case: str, url: str) -> tuple[_Reply | None, str]:
    """GET a page as a browser would, following same-origin redirects only."""
    for _ in range(MAX_REDIRECTS + 1):
        reply = http.send(case, "GET", url, headers={"Accept": "text/html"})
        location = reply.headers.get("location")
        if reply.status is None or reply.status not in (301, 302, 303, 307, 308) or not location:
            return reply, url
        target = urljoin(url, location)
        if not same_origin(target, url):
            return None, url  # never off-origin
        url = target
    return None, url
