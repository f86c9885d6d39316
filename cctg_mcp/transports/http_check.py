"""HTTP endpoint health probe (the configured ``health.endpoints``): the httpx side of health.
The bridge's own ``/health`` is read by ``transports.bridge.process.probe_bridge_health``.

The probe answers a ``CheckResult``: an expected status is healthy, 429 is degraded, anything
else (another status, a connection error, a timeout) unhealthy. Errors never leave this
module as httpx exceptions, and every text is redacted (URLs may carry secrets).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import httpx

from cctg_mcp.resilience.errors import redact
from cctg_mcp.resilience.health import CheckResult


class HttpEndpointProbe:
    """Callable health check: ``await probe()`` → ``CheckResult``. One short-lived client per probe."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        method: str = "GET",
        timeout: float = 3.0,
        expected_status: Iterable[int] = (200,),
        headers: Mapping[str, str] | None = None,
        retries: int = 0,
        http_transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.method = method.upper()
        self.timeout = timeout
        self.expected_status = frozenset(expected_status) or frozenset({200})
        self.headers = dict(headers or {})
        self.retries = max(0, retries)
        self._http_transport = http_transport

    def __repr__(self) -> str:
        return f"HttpEndpointProbe({self.name!r}, {redact(self.url)!r})"

    async def __call__(self) -> CheckResult:
        result = CheckResult.unhealthy("not probed")
        async with httpx.AsyncClient(
            timeout=httpx.Timeout(self.timeout),
            transport=self._http_transport,
            follow_redirects=False,
            headers=self.headers,
        ) as client:
            for attempt in range(1, self.retries + 2):
                result = await self._once(client, attempt)
                if result.status.value != "unhealthy":
                    break
        return result

    async def _once(self, client: httpx.AsyncClient, attempt: int) -> CheckResult:
        where = f"{self.method} {redact(self.url)}"
        try:
            response = await client.request(self.method, self.url)
        except httpx.HTTPError as exc:
            detail = redact(str(exc)) or "no detail"
            return CheckResult.unhealthy(
                f"{where}: {type(exc).__name__}: {detail}", error=type(exc).__name__, attempts=attempt
            )
        status = response.status_code
        details = {"status_code": status, "attempts": attempt}
        if status in self.expected_status:
            return CheckResult.healthy(f"{where}: HTTP {status}", **details)
        if status == 429:
            return CheckResult.degraded(f"{where}: HTTP 429 (rate limited)", **details)
        expected = ", ".join(map(str, sorted(self.expected_status)))
        return CheckResult.unhealthy(f"{where}: HTTP {status}, expected {expected}", **details)
