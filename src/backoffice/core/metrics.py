"""Prometheus metrics at `/metrics`: HTTP traffic per route template, requests in flight, the
database pool and the access-log queue.

HTTP metrics are prometheus-fastapi-instrumentator's, recorded by HttpMetricsMiddleware:
`http_requests_total` and the `http_request_duration_seconds` histogram, both labelled with
the method, the route template (`/api/v1/products/{product_id}`, never the concrete path;
unmatched paths are `none`) and the exact status code. The scrape itself, the probes and the
docs are not measured.
`http_requests_inprogress` counts the requests being served. The pool (`db_pool_*`) and the
access-log queue (`audit_access_*`) are sampled from the running app when scraped.

Each app has its own `CollectorRegistry` (the global one would refuse a second app in the same
process, which the tests create by the hundred).

Several workers (`python -m backoffice serve` with WORKERS > 1) are separate processes, so a
scrape reaches one of them. There `serve` sets PROMETHEUS_MULTIPROC_DIR and prometheus_client's
multiprocess mode keeps every value in a small memory-mapped file per worker; the scrape adds
them up:

- counters and histograms are summed over every worker that ran since the server started
  (a worker that dies keeps its counts, so totals never go backwards);
- the gauges are `livesum`, the sum over the workers alive now: requests in flight, pool
  connections and queued entries of the whole server. The per-worker breakdown is not kept.
- pool and queue values are samples: each worker writes its own every few seconds
  (`SAMPLE_INTERVAL_S`) and the worker answering the scrape writes its own first, so the
  others' may be that old. In-flight requests are counted exactly.
- the `process_*` and `python_*` collectors do not exist in that mode, and are not exported
  in the single-process one either, so both expose the same metrics.
"""

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.exposition import choose_encoder
from prometheus_fastapi_instrumentator.routing import get_route_name
from sqlalchemy.pool import QueuePool
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from backoffice.core.config import Settings
from backoffice.core.errors import UnauthorizedError, problem_responses
from backoffice.core.middleware import StatusRecorder

METRICS_PATH = "/metrics"
MULTIPROC_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Not measured: the scrape itself, the probes and the docs would only drown the API's numbers.
UNMEASURED_PATHS = (
    METRICS_PATH,
    "/health",
    "/docs",
    "/redoc",
    "/openapi.json",
    "/static-offline-docs",
    "/favicon.ico",
)
# The instrumentator's labels, in its order.
_HTTP_LABELS = ("handler", "method", "status")
# How often each worker writes its pool and queue samples in multiprocess mode.
SAMPLE_INTERVAL_S = 5.0


class MetricsTokenError(UnauthorizedError):
    slug = "invalid-metrics-token"

    def __init__(self) -> None:
        super().__init__("The metrics need the scrape token: `Authorization: Bearer <token>`.")


def multiprocess_dir() -> str | None:
    """The directory of multiprocess mode, when it is on (read at import by prometheus_client:
    it must be set before the worker starts)."""
    return os.environ.get(MULTIPROC_DIR_ENV)


def _unmeasured(path: str) -> bool:
    return any(path == prefix or path.startswith(prefix + "/") for prefix in UNMEASURED_PATHS)


class HttpMetricsMiddleware:
    """Counts and times every measured HTTP request by route template, method and status, and
    counts those in flight: the metrics (names, labels, buckets) prometheus-fastapi-instrumentator
    exports, at a fraction of its cost. Its middleware found the template by matching the path
    against the whole route table again after every request; here it is the route FastAPI
    already matched (`scope["route"]`), resolved to its full template once per route. Only a
    request that matched no route (a 404, say) takes the instrumentator's walk."""

    def __init__(self, app: ASGIApp, runtime: "RuntimeMetrics") -> None:
        self.app = app
        self.in_flight = runtime.in_flight
        self.requests = runtime.requests
        self.latency = runtime.latency
        # id(route) -> (route, its template): routes are not hashable; holding the route keeps
        # its id from being reused.
        self._templates: dict[int, tuple[object, str]] = {}

    def _handler(self, scope: Scope) -> str:
        route = scope.get("route")
        known = self._templates.get(id(route)) if route is not None else None
        if known is not None:
            return known[1]
        template = get_route_name(Request(scope), should_include_root_path=False) or "none"
        if route is not None:
            self._templates[id(route)] = (route, template)
        return template

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _unmeasured(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        recorder = StatusRecorder(send)
        self.in_flight.inc()
        try:
            await self.app(scope, receive, recorder)
        finally:
            self.in_flight.dec()
            labels = (self._handler(scope), scope["method"], str(recorder.status))
            self.requests.labels(*labels).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - started)


class RuntimeMetrics:
    """The app's registry, and the values sampled from the app rather than counted: the
    database pool and the access-log writer."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, registry=registry, multiprocess_mode="livesum")

        self.in_flight = gauge("http_requests_inprogress", "HTTP requests being served.")
        self.requests = Counter(
            "http_requests",
            "Total number of requests by method, status and handler.",
            labelnames=_HTTP_LABELS,
            registry=registry,
        )
        self.latency = Histogram(
            "http_request_duration_seconds",
            "Duration of HTTP requests in seconds",
            labelnames=_HTTP_LABELS,
            registry=registry,
        )
        self.pool_size = gauge("db_pool_size", "Connections the database pool keeps open.")
        self.pool_checked_out = gauge(
            "db_pool_checked_out", "Database connections in use by a request or task."
        )
        self.pool_checked_in = gauge("db_pool_checked_in", "Idle database connections.")
        self.pool_overflow = gauge(
            "db_pool_overflow", "Database connections open beyond the pool size."
        )
        self.queue_depth = gauge(
            "audit_access_queue_depth", "Access-log entries waiting to be written."
        )
        self.dropped = Counter(
            "audit_access_dropped",
            "Access-log entries lost: the queue was full or the database refused them.",
            registry=registry,
        )
        self.written = Counter(
            "audit_access_written", "Access-log entries written.", registry=registry
        )
        # Counters only go up, so the writer's totals are added as increments.
        self._writer: object = None
        self._seen_dropped = 0
        self._seen_written = 0

    def sample(self, state: State) -> None:
        database = getattr(state, "database", None)
        pool = database.engine.pool if database is not None else None
        if isinstance(pool, QueuePool):
            self.pool_size.set(pool.size())
            self.pool_checked_out.set(pool.checkedout())
            self.pool_checked_in.set(pool.checkedin())
            # Negative while fewer connections than the pool size are open.
            self.pool_overflow.set(max(pool.overflow(), 0))
        writer = getattr(state, "access_log_writer", None)
        if writer is not None:
            if writer is not self._writer:  # a new writer (a restarted lifespan) counts from 0
                self._writer, self._seen_dropped, self._seen_written = writer, 0, 0
            self.queue_depth.set(writer.depth)
            dropped: int = writer.dropped
            written: int = writer.written
            self.dropped.inc(max(dropped - self._seen_dropped, 0))
            self.written.inc(max(written - self._seen_written, 0))
            self._seen_dropped, self._seen_written = dropped, written

    def exposition_registry(self) -> CollectorRegistry:
        directory = multiprocess_dir()
        if directory is None:
            return self.registry
        _forget_dead_workers(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return registry


_LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")
_METRIC_FILE = re.compile(r"(counter|gauge|histogram|summary)_\w+\.db")


def _forget_dead_workers(directory: str) -> None:
    """Drop the live gauges of workers that died without shutting down (killed, crashed): the
    server's supervisor replaces them, but only a worker's own shutdown removes its files."""
    pids = {
        int(match.group(1))
        for path in Path(directory).iterdir()
        if (match := _LIVE_GAUGE_FILE.fullmatch(path.name))
    }
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        except PermissionError:  # alive, and someone else's
            continue


def _token_digest(token: str) -> bytes:
    # Compared as digests: equal lengths, so the comparison does not even leak the length.
    return hashlib.sha256(token.encode()).digest()


def _check_token(request: Request, expected: bytes) -> None:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    presented = _token_digest(credentials.strip())
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented, expected):
        raise MetricsTokenError


def install_metrics(app: FastAPI, settings: Settings) -> None:
    """Measure the app and serve `/metrics` (unless METRICS_ENABLED is off: then it is a 404).
    Call it last in the factory: its middleware must be the outermost to time everything."""
    if not settings.metrics_enabled:
        return
    runtime = RuntimeMetrics()
    app.state.metrics = runtime
    token = settings.metrics_token.get_secret_value() if settings.metrics_token else ""
    expected = _token_digest(token) if token else None

    app.add_middleware(HttpMetricsMiddleware, runtime=runtime)

    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition, or OpenMetrics when asked for)."""
        if expected is not None:
            _check_token(request, expected)
        runtime.sample(request.app.state)
        encode, media_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(runtime.exposition_registry()), media_type=media_type)

    responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"text/plain": {}}, "description": "Prometheus exposition"}
    }
    if expected is not None:
        responses |= problem_responses(MetricsTokenError)
    app.add_api_route(
        METRICS_PATH,
        metrics,
        methods=["GET"],
        tags=["monitoring"],
        response_class=Response,
        responses=responses,
    )


async def _sample_periodically(runtime: RuntimeMetrics, state: State) -> None:
    while True:
        runtime.sample(state)
        await asyncio.sleep(SAMPLE_INTERVAL_S)


@asynccontextmanager
async def metrics_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """In multiprocess mode, keep this worker's pool and queue samples fresh for scrapes
    answered by the other workers, and remove its live gauges when it stops."""
    runtime: RuntimeMetrics | None = getattr(app.state, "metrics", None)
    directory = multiprocess_dir()
    if runtime is None or directory is None:
        yield
        return
    task = asyncio.create_task(_sample_periodically(runtime, app.state), name="metrics-sampler")
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        multiprocess.mark_process_dead(os.getpid(), directory)  # type: ignore[no-untyped-call]


def prepare_multiprocess_dir(directory: Path) -> None:
    """Create a multiprocess directory, or empty it of a previous run's files (their counts
    would be added to this run's)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.iterdir():
        if _METRIC_FILE.fullmatch(path.name):
            path.unlink(missing_ok=True)
