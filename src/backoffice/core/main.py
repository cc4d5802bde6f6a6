"""The application factory: it mounts routers, middleware and error handlers, nothing else."""

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from fastapi import Depends, FastAPI
from fastapi_offline import FastAPIOffline

from backoffice.audit import changes
from backoffice.audit.access import AccessAuditMiddleware, access_log_lifespan
from backoffice.audit.models import APPEND_ONLY_TABLES
from backoffice.audit.partitions import partitions_lifespan
from backoffice.audit.router import router as audit_router
from backoffice.auth.api_keys import (
    API_KEY_SCHEME_NAME,
    API_KEY_SECURITY_SCHEME,
    api_key_usage_lifespan,
    install_api_keys,
)
from backoffice.auth.api_keys_router import router as api_keys_router
from backoffice.auth.api_keys_router import service_accounts_router
from backoffice.auth.dependencies import get_current_principal
from backoffice.auth.errors import AuthenticationError
from backoffice.auth.principal_cache import principal_cache_lifespan
from backoffice.auth.retention import token_purge_lifespan
from backoffice.auth.roles_router import router as roles_router
from backoffice.auth.router import install_rate_limiters
from backoffice.auth.router import router as auth_router
from backoffice.auth.tokens import PasswordHasher
from backoffice.auth.users_router import router as users_router
from backoffice.core import health
from backoffice.core.config import Settings, get_settings
from backoffice.core.database import database_lifespan
from backoffice.core.errors import (
    ForbiddenError,
    UnhandledErrorMiddleware,
    problem_responses,
    register_error_handlers,
)
from backoffice.core.logging import RequestIdMiddleware, configure_logging
from backoffice.core.metrics import install_metrics, metrics_lifespan
from backoffice.core.middleware import BodySizeLimitMiddleware, UnstorableTextMiddleware
from backoffice.core.openapi import install_openapi
from backoffice.core.pagination import CursorSigner
from backoffice.customers import service as customers_service
from backoffice.customers.router import router as customers_router
from backoffice.idempotency.middleware import IdempotencyMiddleware
from backoffice.idempotency.openapi import describe_idempotency
from backoffice.idempotency.purge import idempotency_purge_lifespan
from backoffice.products.router import router as products_router
from backoffice.tasks import service as tasks_service
from backoffice.tasks.router import customer_tasks_router
from backoffice.tasks.router import router as tasks_router

API_PREFIX = "/api/v1"


@contextmanager
def startup_objects_frozen() -> Iterator[None]:
    """Move every object alive once the app has started (modules, routes, models, schemas:
    about 150,000) out of the garbage collector's reach while it serves. A full collection
    would otherwise walk them all, a pause of about 40 ms that some request pays every time;
    they live as long as the process anyway. Undone at shutdown, for processes that build
    many apps (the tests)."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The database first; the access-log writer inside it, so on shutdown the writer flushes
    its queue before the engine is disposed; the metrics sampler (multiprocess mode) last.
    The token and idempotency-key purges run inside the database's too, stopped before the
    engine is disposed.
    The app's sessions record data changes (the audit slice's Session class), and the role
    check covers the audit tables."""
    async with (
        database_lifespan(
            app,
            session_class=changes.session_class(app.state.settings),
            audit_tables=APPEND_ONLY_TABLES,
        ),
        partitions_lifespan(app),  # the audit tables' coming monthly partitions
        token_purge_lifespan(app),
        idempotency_purge_lifespan(app),
        principal_cache_lifespan(app),
        api_key_usage_lifespan(app),
        access_log_lifespan(app),
        metrics_lifespan(app),
    ):
        with startup_objects_frozen():
            yield


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging(settings)
    title, version = settings.project_name, "1.0.0"
    description = "Products, customers and tasks behind JWT auth, RBAC and an audit trail."
    # Swagger UI and ReDoc from local assets (FastAPIOffline), or no docs and no document at all.
    app = (
        FastAPIOffline(title=title, version=version, description=description, lifespan=lifespan)
        if settings.serves_docs
        else FastAPI(
            title=title,
            version=version,
            description=description,
            lifespan=lifespan,
            docs_url=None,
            redoc_url=None,
            openapi_url=None,
        )
    )
    app.state.settings = settings
    # One argon2 cap per process: hashing runs in threads, at most this many at once.
    app.state.password_hasher = PasswordHasher(settings.password_hash_concurrency)
    install_rate_limiters(app, settings)
    install_api_keys(app, settings)
    # Cursors signed with this app's own key, not the process's cached settings.
    app.state.cursor_signer = CursorSigner(settings.secret_key.get_secret_value())

    # Login and refresh are the only routes a caller reaches without a token.
    app.include_router(auth_router, prefix=API_PREFIX)
    # Authenticated by default: every router in this tuple needs a valid token, so a route
    # someone forgets to guard is still closed. Each is included into the app itself, not
    # through a group router: FastAPI matches a request once per level of inclusion, so a
    # level less is a route match less on every request. Busiest first: matched in order.
    authenticated = (
        products_router,
        tasks_router,
        customers_router,
        customer_tasks_router,
        users_router,
        roles_router,
        service_accounts_router,
        api_keys_router,
        audit_router,
    )
    for router in authenticated:
        app.include_router(
            router,
            prefix=API_PREFIX,
            dependencies=[Depends(get_current_principal)],
            responses=problem_responses(AuthenticationError, ForbiddenError),
        )
    app.include_router(health.router)
    # A customer's tasks decide whether it may go (tasks -> customers, never the reverse).
    customers_service.guard_deletion(tasks_service.detach_customer)

    register_error_handlers(app)
    install_openapi(
        app,
        database_prefix=API_PREFIX,
        extensions=[describe_idempotency(app.routes)],
        # Swagger's Authorize dialog takes an API key as well as a password login.
        alternative_schemes={API_KEY_SCHEME_NAME: API_KEY_SECURITY_SCHEME},
    )
    # The last added is the outermost: the request id exists before anything can fail, and
    # the access audit sees every answer, a 413 from the body limit included.
    # Innermost: it sees each answer as the client would (errors rendered), and a body the
    # middleware around it has bounded and checked. A request without Idempotency-Key
    # passes straight through.
    app.add_middleware(IdempotencyMiddleware, routes=app.routes)
    app.add_middleware(UnhandledErrorMiddleware)  # the others see a plain 500
    app.add_middleware(UnstorableTextMiddleware)  # inside the body limit, which bounds it
    app.add_middleware(
        BodySizeLimitMiddleware,
        max_bytes=settings.max_request_body_bytes,
        path_limits={f"{API_PREFIX}/products/import": settings.csv_import_max_bytes},
    )
    app.add_middleware(AccessAuditMiddleware, settings=settings)
    app.add_middleware(RequestIdMiddleware, settings=settings)
    # Outermost of all, so the metrics time the whole request, the middleware above included.
    install_metrics(app, settings)
    return app
