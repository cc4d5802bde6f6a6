"""End to end: the real server (`python -m backoffice serve`) driven by a headless Chromium.

The server runs as a subprocess on a free port over a fresh database, as a user would start
it; the browser is Debian's `chromium` (CHROMIUM_PATH, else /usr/bin/chromium) driven by
Playwright, with every request to anything but the local server aborted: what renders, renders
offline. Screenshots land in `test-artifacts/screenshots/` (git-ignored).
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    Locator,
    Page,
    Request,
    Route,
    async_playwright,
    expect,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from backoffice.core.config import (
    EXAMPLE_SUPERUSER_EMAIL,
    EXAMPLE_SUPERUSER_PASSWORD,
    PROJECT_ROOT,
    Settings,
)
from tests.live_server import free_port
from tests.support.database import as_app, scratch_database

ARTIFACTS_DIR = PROJECT_ROOT / "test-artifacts"
SCREENSHOTS_DIR = ARTIFACTS_DIR / "screenshots"
TIMEOUT_MS = 15_000  # every wait on the page: generous, yet a broken page fails in seconds
SERVER_START_TIMEOUT_S = 60.0
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost"})

# The README's quick-start login, set explicitly so a developer's .env cannot change it.
SUPERUSER_EMAIL = EXAMPLE_SUPERUSER_EMAIL
SUPERUSER_PASSWORD = EXAMPLE_SUPERUSER_PASSWORD

_saved_screenshots: list[Path] = []


class E2EEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_file=None, extra="ignore")
    ci: bool = False
    chromium_path: Path = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    """Debian's chromium; missing, the e2e tests skip, except in CI (which installs it)."""
    environment = E2EEnvironment()
    path = environment.chromium_path
    if not (path.is_file() and os.access(path, os.X_OK)):
        message = (
            f"no Chromium at {path} (apt-get install chromium, or set CHROMIUM_PATH); "
            "the browser tests need it"
        )
        if environment.ci:
            pytest.fail(message)  # CI installs it: missing there is a broken set-up
        pytest.skip(message)
    return path


def _server_environment(database_url: str, port: int) -> dict[str, str]:
    """The caller's environment minus every application setting, then exactly ours."""
    settings_names = {name.upper() for name in Settings.model_fields}
    environment = {k: v for k, v in os.environ.items() if k.upper() not in settings_names}
    environment.update(
        ENVIRONMENT="development",
        DATABASE_URL=database_url,
        HOST="127.0.0.1",
        PORT=str(port),
        WORKERS="2",
        FIRST_SUPERUSER_EMAIL=SUPERUSER_EMAIL,
        FIRST_SUPERUSER_PASSWORD=SUPERUSER_PASSWORD,
        PYTHONUNBUFFERED="1",
    )
    return environment


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (uvicorn and its workers), SIGKILL if it hangs."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait(timeout=10)


def _wait_until_ready(server: subprocess.Popen[bytes], base_url: str, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    with httpx.Client(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(
                    f"the server exited with {server.returncode} before it was ready; "
                    f"its output ({log}):\n{log.read_text(errors='replace')[-4000:]}"
                )
            try:
                if client.get("/health/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.1)
    pytest.fail(f"the server was not ready within {SERVER_START_TIMEOUT_S:.0f} s; see {log}")


@pytest.fixture(scope="session")
async def e2e_database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database of the server's own, migrated; dropped once the server has stopped."""
    async with scratch_database(server_url, "backoffice_e2e") as url:
        yield url


@pytest.fixture(scope="session")
def live_server(
    e2e_database_url: str, app_login: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`python -m backoffice serve` (two workers) on a free port; its bootstrap creates the
    default roles and the first superuser. Yields the base URL once /health/ready says so;
    its log is test-artifacts/e2e-server.log."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    ARTIFACTS_DIR.mkdir(parents=True, exist_ok=True)
    log = ARTIFACTS_DIR / "e2e-server.log"
    with log.open("wb") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "backoffice", "serve"],
            # A working directory of its own: a developer's .env must not leak in.
            cwd=tmp_path_factory.mktemp("e2e-server"),
            env=_server_environment(as_app(e2e_database_url, app_login), port),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, stopped as one
        )
    try:
        _wait_until_ready(server, base_url, log)
        yield base_url
    finally:
        _stop(server)


@pytest.fixture(scope="session")
async def browser(chromium_path: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=chromium_path,
            headless=True,
            # Root in a container has no user namespaces for the sandbox.
            args=["--no-sandbox", "--disable-dev-shm-usage"],
        )
        yield browser
        await browser.close()


class OutsideRequests:
    """Every request the page tried to send beyond the local server (all were aborted)."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    async def __call__(self, route: Route, request: Request) -> None:
        if urlsplit(request.url).hostname in LOCAL_HOSTS:
            await route.continue_()
        else:
            self.urls.append(request.url)
            await route.abort("internetdisconnected")


@pytest.fixture
def outside_requests() -> OutsideRequests:
    return OutsideRequests()


@pytest.fixture
async def page(
    browser: Browser, live_server: str, outside_requests: OutsideRequests
) -> AsyncIterator[Page]:
    """A fresh page (its own cookies and storage) on the live server, offline but for it.
    Fails the test if the page raised an uncaught JavaScript error."""
    context: BrowserContext = await browser.new_context(
        base_url=live_server, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(TIMEOUT_MS)
    await context.route("**/*", outside_requests)
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    await context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


expect.set_options(timeout=TIMEOUT_MS)


async def screenshot(target: Page | Locator, name: str) -> Path:
    """A PNG under test-artifacts/screenshots/, listed at the end of the run: of what the
    page's viewport shows, or of one element (scrolled into view) when given a locator."""
    path = SCREENSHOTS_DIR / f"{name}.png"
    await target.screenshot(path=path)
    _saved_screenshots.append(path)
    return path


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _saved_screenshots:
        terminalreporter.write_sep("-", "browser screenshots")
        for path in _saved_screenshots:
            terminalreporter.write_line(str(path))


@pytest.fixture(scope="session", autouse=True)
def _fresh_screenshots() -> None:
    """Screenshots from an earlier run must not pass for this run's."""
    if SCREENSHOTS_DIR.is_dir():
        for old in SCREENSHOTS_DIR.glob("*.png"):
            old.unlink()
