"""Two API nodes (`python -m backoffice serve`, two workers each) sharing one PostgreSQL through
a real PgBouncer in transaction mode and one Redis, as README "Scaling out" deploys them, under
mixed concurrent load spread over both.

What must hold: no 5xx and no traceback (no prepared-statement or session-state error); the
login limit, a refresh-token family, logout, deactivation and role changes are shared across
the nodes (the last three within the principal cache's 1 s); concurrent stock decrements on
both nodes never oversell; every answered request has its access row; and after one node dies
by SIGKILL mid-load, the other keeps answering and every acknowledged write is stored with its
data-change row. The figures are written to the terminal whatever the capture mode.
"""

import asyncio
import itertools
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from backoffice.auth.principal_cache import LISTENER_APPLICATION_NAME, STALENESS_BOUND_S
from tests.live_server import free_port, server_environment, server_process, wait_until_ready
from tests.scaleout.conftest import Deployment
from tests.support.factories import PRODUCTS, ROLES, USERS, grant
from tests.support.users import LOGIN, LOGOUT, ME, REFRESH

SECRET_KEY = secrets.token_urlsafe(48)  # made per run: no secret-looking literal in the repo
METRICS_TOKEN = secrets.token_urlsafe(32)
SUPERUSER_EMAIL = "two-nodes@example.com"
SUPERUSER_PASSWORD = "two-nodes-superuser-password"
MEMBER_PASSWORD = "a long enough passphrase"
LOGIN_LIMIT = 4  # per client IP and minute, on both nodes together
WORKERS = 2  # per node
CLIENTS = 6
LOAD_S = 5.0  # the first phase, with the cross-node checks running inside it
LOAD_BEFORE_KILL_S = 1.5
LOAD_AFTER_KILL_S = 2.5
IDEMPOTENT_REQUESTS = 10  # with one Idempotency-Key, over both nodes at once
INITIAL_STOCK = 60  # fewer than the decrements the load sends: the last units are fought over
ACCESS_ROWS_TIMEOUT_S = 15.0
REFUSAL_TIMEOUT_S = 10.0


@dataclass(slots=True)
class Answer:
    node: str
    kind: str
    request_id: str
    started: float
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer (the node is gone)
    error: str | None = None
    sku: str | None = None
    product_id: int | None = None


@dataclass(slots=True)
class Node:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    client: httpx.AsyncClient


@dataclass(slots=True)
class Cluster:
    a: Node
    b: Node
    answers: list[Answer] = field(default_factory=list)
    admin_token: str = ""
    ids: Iterator[int] = field(default_factory=itertools.count)

    @property
    def nodes(self) -> tuple[Node, Node]:
        return self.a, self.b

    async def call(
        self,
        node: Node,
        kind: str,
        method: str,
        url: str,
        *,
        token: str | None = None,
        client_ip: str = "10.0.0.1",
        headers: dict[str, str] | None = None,
        **kw: Any,
    ) -> tuple[Answer, httpx.Response | None]:
        """One request, recorded with its request id (the access row's key)."""
        answer = Answer(node.name, kind, f"two-nodes-{next(self.ids)}", time.monotonic())
        headers = {"X-Request-ID": answer.request_id, "X-Forwarded-For": client_ip} | (
            headers or {}
        )
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        self.answers.append(answer)
        try:
            response = await node.client.request(method, url, headers=headers, **kw)
        except httpx.TransportError as exc:
            answer.error = type(exc).__name__
            return answer, None
        finally:
            answer.ended = time.monotonic()
        answer.status = response.status_code
        return answer, response


def _expect(response: httpx.Response | None, status: int) -> httpx.Response:
    assert response is not None, "no answer"
    assert response.status_code == status, response.text
    return response


def _environment(deployment: Deployment, redis_url: str, port: int) -> dict[str, str]:
    return server_environment(
        ENVIRONMENT="production",
        DATABASE_POOL_MODE="transaction",
        DATABASE_URL=deployment.pooled_url,
        DATABASE_DIRECT_URL=deployment.direct_url,
        RATE_LIMIT_STORAGE_URL=redis_url,
        LOGIN_RATE_LIMIT=f"{LOGIN_LIMIT}/minute",
        SECRET_KEY=SECRET_KEY,
        METRICS_TOKEN=METRICS_TOKEN,
        FIRST_SUPERUSER_EMAIL=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS=str(WORKERS),
        LOG_LEVEL="WARNING",
        DB_POOL_SIZE="3",
        DB_MAX_OVERFLOW="5",
        DB_READ_POOL_SIZE="3",
        AUDIT_FLUSH_INTERVAL_MS="200",
        # The test stands in for the load balancer: its X-Forwarded-For is each client's
        # address (the login limit's key), its X-Request-ID ties an answer to its access row.
        TRUSTED_PROXIES='["127.0.0.1/32"]',
    )


async def _start_node(
    stack: AsyncExitStack, name: str, deployment: Deployment, redis_url: str, workdir: Path
) -> Node:
    port = free_port()
    log = workdir / f"node-{name}.log"
    (workdir / name).mkdir()
    environment = _environment(deployment, redis_url, port)
    process = stack.enter_context(server_process("serve", environment, workdir / name, log))
    client = await stack.enter_async_context(
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20)
    )
    await wait_until_ready(process, client, log)
    return Node(name, process, log, client)


@pytest.fixture
async def cluster(deployment: Deployment, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    async with AsyncExitStack() as stack:
        # One after the other: each start creates the first superuser if missing.
        a = await _start_node(stack, "a", deployment, redis_url, tmp_path)
        b = await _start_node(stack, "b", deployment, redis_url, tmp_path)
        cluster = Cluster(a, b)
        _, response = await cluster.call(
            a,
            "login",
            "POST",
            LOGIN,
            client_ip="10.0.1.1",
            data={"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD},
        )
        cluster.admin_token = _expect(response, 200).json()["access_token"]
        yield cluster


# --- the load ---------------------------------------------------------------------------------


async def _load(cluster: Cluster, product_id: int, done: asyncio.Event, nodes: int = 2) -> None:
    """CLIENTS clients, each sending its requests to both nodes in turn: a product created,
    one unit of the contended product taken, reads of one product and of a page."""
    admin = cluster.admin_token

    async def client(number: int) -> None:
        for sequence in itertools.count():
            if done.is_set():
                return
            node = cluster.nodes[(number + sequence) % nodes]
            sku = f"TWO-{number}-{sequence}-{secrets.token_hex(3)}"
            body = {"sku": sku, "name": "Two nodes", "price": "3.50"}
            write, response = await cluster.call(
                node, "write", "POST", PRODUCTS, token=admin, json=body
            )
            write.sku = sku
            if response is not None and response.status_code == 201:
                write.product_id = response.json()["id"]
            take = f"{PRODUCTS}/{product_id}/stock-adjustments"
            await cluster.call(node, "take", "POST", take, token=admin, json={"delta": -1})
            await cluster.call(node, "read", "GET", f"{PRODUCTS}/{product_id}", token=admin)
            await cluster.call(node, "read", "GET", f"{PRODUCTS}?limit=5", token=admin)

    await asyncio.gather(*(client(number) for number in range(CLIENTS)))


async def _under_load(
    cluster: Cluster,
    product_id: int,
    seconds: float,
    during: Callable[[], Awaitable[None]] | None = None,
) -> None:
    done = asyncio.Event()
    load = asyncio.create_task(_load(cluster, product_id, done))
    try:
        started = time.monotonic()
        if during is not None:
            await during()
        await asyncio.sleep(max(0.0, seconds - (time.monotonic() - started)))
    finally:
        done.set()
        await asyncio.wait_for(load, timeout=30)


# --- what is shared across the nodes -----------------------------------------------------------


async def _login_statuses_across_nodes(cluster: Cluster) -> list[int | None]:
    """Failed logins from one client address, alternately on each node."""
    statuses = []
    for attempt in range(LOGIN_LIMIT + 2):
        body = {"username": "nobody@example.com", "password": "not the password"}
        node = cluster.nodes[attempt % 2]
        answer, _ = await cluster.call(
            node, "login", "POST", LOGIN, client_ip="10.0.9.9", data=body
        )
        statuses.append(answer.status)
    return statuses


@dataclass(slots=True)
class Member:
    user_id: int
    email: str
    client_ip: str
    access_token: str = ""
    refresh_token: str = ""


async def _member(cluster: Cluster, role_id: int, number: int) -> Member:
    """A user whose one role grants products:read, created and signed in on node a."""
    a, admin = cluster.a, cluster.admin_token
    email = f"member{number}-{secrets.token_hex(3)}@example.com"
    body = {"email": email, "password": MEMBER_PASSWORD, "full_name": f"Member {number}"}
    _, created = await cluster.call(a, "admin", "POST", USERS, token=admin, json=body)
    member = Member(_expect(created, 201).json()["id"], email, f"10.0.2.{number}")
    roles = {"role_ids": [role_id]}
    url = f"{USERS}/{member.user_id}/roles"
    _, linked = await cluster.call(a, "admin", "PUT", url, token=admin, json=roles)
    _expect(linked, 200)
    _, signed_in = await cluster.call(
        a,
        "login",
        "POST",
        LOGIN,
        client_ip=member.client_ip,
        data={"username": email, "password": MEMBER_PASSWORD},
    )
    tokens = _expect(signed_in, 200).json()
    member.access_token, member.refresh_token = tokens["access_token"], tokens["refresh_token"]
    return member


async def _refresh_replay_statuses(cluster: Cluster, member: Member) -> tuple[Any, ...]:
    """Rotate on node a, replay the old token on node b, then try the new one on a."""
    a, b = cluster.nodes

    async def refresh(node: Node, token: str) -> httpx.Response | None:
        _, response = await cluster.call(
            node,
            "refresh",
            "POST",
            REFRESH,
            client_ip=member.client_ip,
            json={"refresh_token": token},
        )
        return response

    rotated = await refresh(a, member.refresh_token)
    assert rotated is not None
    replayed = await refresh(b, member.refresh_token)
    after_replay = await refresh(a, rotated.json().get("refresh_token", ""))
    return tuple(r.status_code if r else None for r in (rotated, replayed, after_replay))


async def _refused_on_b_after(
    cluster: Cluster,
    member: Member,
    change: Callable[[], Awaitable[httpx.Response | None]],
    probe: str,
    refused_with: int,
) -> float:
    """Make `change` on node a while node b serves the member from its warm cache; return how
    long after the change's answer node b first refused. Every probe sent later than the
    principal cache's bound after that answer must be refused."""
    b = cluster.b
    for _ in range(3):  # into each worker's cache, most likely
        answer, _ = await cluster.call(b, "probe", "GET", probe, token=member.access_token)
        assert answer.status == 200, answer
    changed = await change()
    assert changed is not None, "no answer"
    assert changed.is_success, changed.text
    acknowledged = time.monotonic()
    first_refusal: float | None = None
    while time.monotonic() - acknowledged < REFUSAL_TIMEOUT_S:
        answer, _ = await cluster.call(b, "probe", "GET", probe, token=member.access_token)
        if answer.status == refused_with:
            first_refusal = first_refusal or answer.started
            if answer.started - acknowledged > STALENESS_BOUND_S:
                break
        else:
            assert answer.status == 200, answer
            assert answer.started - acknowledged <= STALENESS_BOUND_S, (
                f"node b still served the old principal {answer.started - acknowledged:.2f} s "
                "after the change"
            )
        await asyncio.sleep(0.05)
    assert first_refusal is not None, "node b never refused"
    return max(0.0, first_refusal - acknowledged)


@dataclass(slots=True)
class SharedState:
    login_statuses: list[int | None] = field(default_factory=list)
    refresh_statuses: tuple[Any, ...] = ()
    refusal_delays: dict[str, float] = field(default_factory=dict)
    keyed: "KeyedBurst | None" = None


@dataclass(frozen=True, slots=True)
class KeyedBurst:
    """IDEMPOTENT_REQUESTS stock adjustments with one Idempotency-Key, spread over both nodes
    at once: each retried while the first runs (409), until it has its final answer."""

    answers: list[tuple[int, bytes, str | None]]  # status, body, ETag
    replayed: int
    in_use: int
    stock_before: int
    stock_after: int


async def _keyed_burst(cluster: Cluster) -> KeyedBurst:
    admin = cluster.admin_token
    body = {"sku": f"TWO-KEYED-{secrets.token_hex(3)}", "name": "Keyed", "price": "1"}
    _, created = await cluster.call(
        cluster.a, "admin", "POST", PRODUCTS, token=admin, json=body | {"stock_quantity": 5}
    )
    product = _expect(created, 201).json()
    url, key = f"{PRODUCTS}/{product['id']}/stock-adjustments", f'"{secrets.token_hex(16)}"'
    in_use = 0

    async def adjust(node: Node) -> httpx.Response:
        nonlocal in_use
        while True:
            _, response = await cluster.call(
                node,
                "keyed",
                "POST",
                url,
                token=admin,
                json={"delta": -3},
                headers={"Idempotency-Key": key},
            )
            assert response is not None, "no answer"
            if response.status_code != 409:
                return response
            in_use += 1
            await asyncio.sleep(0.05)

    responses = await asyncio.gather(
        *(adjust(cluster.nodes[number % 2]) for number in range(IDEMPOTENT_REQUESTS))
    )
    _, after = await cluster.call(
        cluster.b, "admin", "GET", f"{PRODUCTS}/{product['id']}", token=admin
    )
    return KeyedBurst(
        [(x.status_code, x.content, x.headers.get("etag")) for x in responses],
        sum(x.headers.get("idempotent-replayed") == "true" for x in responses),
        in_use,
        product["stock_quantity"],
        _expect(after, 200).json()["stock_quantity"],
    )


async def _shared_state_checks(cluster: Cluster, shared: SharedState) -> None:
    a, admin = cluster.a, cluster.admin_token
    role = {"name": f"readers-{secrets.token_hex(3)}", "grants": [grant("products", "read")]}
    _, created = await cluster.call(a, "admin", "POST", ROLES, token=admin, json=role)
    role_id = _expect(created, 201).json()["id"]
    members = [await _member(cluster, role_id, number) for number in range(4)]

    shared.keyed = await _keyed_burst(cluster)
    shared.login_statuses = await _login_statuses_across_nodes(cluster)
    shared.refresh_statuses = await _refresh_replay_statuses(cluster, members[0])

    logout_of = members[1]

    async def logout() -> httpx.Response | None:
        token = logout_of.access_token
        return (await cluster.call(a, "admin", "DELETE", LOGOUT, token=token))[1]

    async def deactivate() -> httpx.Response | None:
        url, body = f"{USERS}/{members[2].user_id}", {"is_active": False}
        return (await cluster.call(a, "admin", "PATCH", url, token=admin, json=body))[1]

    async def remove_roles() -> httpx.Response | None:
        url, no_roles = f"{USERS}/{members[3].user_id}/roles", {"role_ids": list[int]()}
        return (await cluster.call(a, "admin", "PUT", url, token=admin, json=no_roles))[1]

    delays = shared.refusal_delays
    delays["logout"] = await _refused_on_b_after(cluster, members[1], logout, ME, 401)
    delays["deactivation"] = await _refused_on_b_after(cluster, members[2], deactivate, ME, 401)
    delays["role change"] = await _refused_on_b_after(
        cluster, members[3], remove_roles, PRODUCTS, 403
    )


# --- what the database holds -------------------------------------------------------------------


async def _fetch(url: str, query: str, *arguments: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(url)
    try:
        rows: list[asyncpg.Record] = await connection.fetch(query, *arguments)
        return rows
    finally:
        await connection.close()


async def _access_rows_of(url: str, request_ids: set[str]) -> set[str]:
    """The request ids among `request_ids` with an access row, waiting for the nodes' batched
    writers up to ACCESS_ROWS_TIMEOUT_S."""
    deadline = time.monotonic() + ACCESS_ROWS_TIMEOUT_S
    while True:
        rows = await _fetch(
            url,
            "SELECT request_id FROM access_logs WHERE request_id = ANY($1::text[])",
            list(request_ids),
        )
        logged = {row["request_id"] for row in rows}
        if logged == request_ids or time.monotonic() > deadline:
            return logged
        await asyncio.sleep(0.25)


@dataclass(frozen=True, slots=True)
class Stored:
    products: dict[str, int]  # sku -> id
    inserted: set[int]  # product ids with an insert data-change row
    stock: int  # the contended product's
    stock_changes: int  # its update data-change rows


async def _stored(url: str, skus: list[str], product_id: int) -> Stored:
    products = await _fetch(url, "SELECT sku, id FROM products WHERE sku = ANY($1::text[])", skus)
    inserted = await _fetch(
        url,
        "SELECT entity_id FROM data_changes WHERE entity_type = 'product' AND action = 'insert'",
    )
    stock = await _fetch(url, "SELECT stock_quantity FROM products WHERE id = $1", product_id)
    changes = await _fetch(
        url,
        "SELECT count(*) AS n FROM data_changes WHERE entity_type = 'product' "
        "AND action = 'update' AND entity_id = $1",
        str(product_id),
    )
    return Stored(
        {row["sku"]: row["id"] for row in products},
        {int(row["entity_id"]) for row in inserted},
        stock[0]["stock_quantity"],
        changes[0]["n"],
    )


def _kill(node: Node) -> None:
    os.killpg(node.process.pid, signal.SIGKILL)  # the server and its workers, no clean-up
    node.process.wait(timeout=10)


@dataclass(slots=True)
class Outcome:
    """The answers and the stored rows, sorted into what the assertions and figures need."""

    answers: list[Answer]
    stored: Stored
    killed_at: float
    outputs: dict[str, str]
    shared: SharedState
    answered_before_kill: set[str]
    logged: set[str]
    listeners: int  # principal cache listeners connected to PostgreSQL itself

    def of(self, kind: str, *statuses: int) -> list[Answer]:
        return [
            x for x in self.answers if x.kind == kind and (not statuses or x.status in statuses)
        ]

    @property
    def server_errors(self) -> list[Answer]:
        return [x for x in self.answers if x.status is not None and x.status >= 500]

    @property
    def unanswered(self) -> list[Answer]:
        """Unanswered with both nodes alive: only b's requests may fail, from its kill on."""
        return [
            x
            for x in self.answers
            if x.status is None and (x.node == "a" or x.ended < self.killed_at)
        ]

    @property
    def after_kill_on_a(self) -> list[Answer]:
        return [x for x in self.answers if x.node == "a" and x.started > self.killed_at]

    @property
    def oversold(self) -> int:
        return max(0, len(self.of("take", 200)) - INITIAL_STOCK) + max(0, -self.stored.stock)

    def _keyed_figures(self) -> str:
        keyed = self.shared.keyed
        if keyed is None:
            return "  Idempotency-Key burst: not run"
        return (
            f"  Idempotency-Key burst: {len(keyed.answers)} requests over both nodes, "
            f"{len(set(keyed.answers))} distinct final answer(s), "
            f"{keyed.replayed} replayed, {keyed.in_use} answered 409 while the first ran; "
            f"stock {keyed.stock_before} -> {keyed.stock_after}"
        )

    def figures(self, seconds: float) -> list[str]:
        by_node = Counter(x.node for x in self.answers if x.status is not None)
        statuses = dict(sorted(Counter(str(x.status) for x in self.answers).items()))
        acknowledged = self.of("write", 201)
        stored, tracebacks = self.stored, {k: v.count("Traceback") for k, v in self.outputs.items()}
        delays = ", ".join(f"{k} {v:.2f} s" for k, v in self.shared.refusal_delays.items())
        return [
            f"two nodes behind PgBouncer (transaction mode), {CLIENTS} clients, {seconds:.1f} s",
            f"  answered per node: a {by_node['a']}, b {by_node['b']}; by status {statuses}",
            f"  errors: {len(self.server_errors)} 5xx, {len(self.unanswered)} unanswered with "
            f"both nodes up, tracebacks {tracebacks}",
            f"  login statuses across nodes {self.shared.login_statuses}; refresh "
            f"rotate/replay/after {self.shared.refresh_statuses}; refused on b after {delays}",
            f"  stock: {INITIAL_STOCK} at start, {len(self.of('take', 200))} takes acknowledged "
            f"of {len(self.of('take'))}, {stored.stock} left, {stored.stock_changes} audited; "
            f"oversold {self.oversold}",
            f"  writes acknowledged {len(acknowledged)}, stored "
            f"{sum(x.sku in stored.products for x in acknowledged)}, with their data change "
            f"{sum(stored.products.get(x.sku or '') in stored.inserted for x in acknowledged)}",
            f"  access rows before the kill: answered {len(self.answered_before_kill)}, written "
            f"{len(self.logged)}; after b's SIGKILL a answered "
            f"{sum(x.status is not None for x in self.after_kill_on_a)} of "
            f"{len(self.after_kill_on_a)}",
            f"  principal cache listeners on the direct URL: {self.listeners}",
            self._keyed_figures(),
        ]


def _report(request: pytest.FixtureRequest, lines: list[str]) -> None:
    """To the terminal whatever the capture mode (the lead quotes these figures), and into the
    test's report."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():  # past -s's absence, to the real terminal
            reporter.write_line("")
            for line in lines:
                reporter.write_line(line)
    request.node.add_report_section("call", "two-node figures", "\n".join(lines))


async def _run(cluster: Cluster, deployment: Deployment) -> Outcome:
    """The load with the shared-state checks inside it, the access rows, then the load again
    with node b killed in the middle of it."""
    body: dict[str, object] = {"sku": "TWO-CONTENDED", "name": "Contended", "price": "1"}
    body["stock_quantity"] = INITIAL_STOCK
    seeded = await cluster.call(
        cluster.a, "admin", "POST", PRODUCTS, token=cluster.admin_token, json=body
    )
    product_id = _expect(seeded[1], 201).json()["id"]

    shared = SharedState()
    await _under_load(cluster, product_id, LOAD_S, lambda: _shared_state_checks(cluster, shared))
    answered_before = {x.request_id for x in cluster.answers if x.status is not None}
    logged = await _access_rows_of(deployment.owner_url, answered_before)
    # Through PgBouncer a listener would hold no backend of its own: these are direct.
    listeners = await _fetch(
        deployment.owner_url,
        "SELECT count(*) AS n FROM pg_stat_activity WHERE application_name = $1",
        LISTENER_APPLICATION_NAME,
    )

    killed_at = float("inf")

    async def kill_b_mid_load() -> None:
        nonlocal killed_at
        await asyncio.sleep(LOAD_BEFORE_KILL_S)
        killed_at = time.monotonic()
        await asyncio.to_thread(_kill, cluster.b)

    await _under_load(cluster, product_id, LOAD_BEFORE_KILL_S + LOAD_AFTER_KILL_S, kill_b_mid_load)
    skus = [x.sku for x in cluster.answers if x.sku]
    return Outcome(
        cluster.answers,
        await _stored(deployment.owner_url, skus, product_id),
        killed_at,
        {node.name: node.log.read_text(errors="replace") for node in cluster.nodes},
        shared,
        answered_before,
        logged,
        listeners[0]["n"],
    )


async def test_two_nodes_behind_pgbouncer_share_state_and_lose_nothing(
    cluster: Cluster, deployment: Deployment, request: pytest.FixtureRequest
) -> None:
    began = time.monotonic()
    outcome = await _run(cluster, deployment)
    _report(request, outcome.figures(time.monotonic() - began))
    stored, shared, logs = outcome.stored, outcome.shared, "\n".join(outcome.outputs.values())

    # No error from prepared statements or session state: no 5xx, no traceback, no request
    # unanswered while both nodes lived.
    assert outcome.server_errors == [], logs[-8000:]
    assert outcome.unanswered == []
    assert "Traceback" not in logs, logs[-8000:]
    assert {x.node for x in outcome.answers if x.status is not None} == {"a", "b"}
    # Shared state: one login budget, one refresh family, one principal per token.
    assert shared.login_statuses == [401] * LOGIN_LIMIT + [429, 429]
    assert shared.refresh_statuses == (200, 401, 401)
    assert set(shared.refusal_delays) == {"logout", "deactivation", "role change"}
    assert outcome.listeners == 2 * WORKERS  # each worker of each node, on DATABASE_DIRECT_URL
    # One Idempotency-Key over both nodes through PgBouncer: the stock moved once, and every
    # request got the same final answer (the first's, replayed to the others).
    keyed = shared.keyed
    assert keyed is not None
    assert len(set(keyed.answers)) == 1, keyed.answers
    assert keyed.answers[0][0] == 200
    assert keyed.replayed == IDEMPOTENT_REQUESTS - 1
    assert keyed.stock_after == keyed.stock_before - 3
    # Never oversold: each acknowledged take is one unit gone, audited, and the stock ran out.
    assert outcome.oversold == 0
    assert len(outcome.of("take", 200)) <= INITIAL_STOCK - stored.stock == stored.stock_changes
    assert outcome.of("take", 409), "the stock never ran out: no contention proven"
    # Every request answered before the kill has its access row, on both nodes.
    assert outcome.answered_before_kill - outcome.logged == set()
    # After b's death, a keeps answering, and every acknowledged write is stored and audited.
    after_kill_on_a = outcome.after_kill_on_a
    assert after_kill_on_a
    assert all(x.status is not None and x.status < 500 for x in after_kill_on_a)
    assert any(x.status in {200, 201} for x in after_kill_on_a)
    acknowledged = outcome.of("write", 201)
    assert acknowledged
    assert [x.sku for x in acknowledged if x.sku not in stored.products] == []
    assert [x.sku for x in acknowledged if stored.products[x.sku or ""] != x.product_id] == []
    assert [x.sku for x in acknowledged if x.product_id not in stored.inserted] == []
