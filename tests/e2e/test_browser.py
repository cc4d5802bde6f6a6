"""What a user sees in a real browser: the landing page, Swagger UI (offline, logging in and
calling the API), ReDoc. Each test saves a screenshot under test-artifacts/screenshots/."""

import re

from playwright.async_api import Locator, Page, Response, expect

from backoffice.auth.dependencies import LOGIN_PATH  # the OAuth2 scheme's tokenUrl
from tests.e2e.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, OutsideRequests, screenshot

ME_PATH = "/api/v1/users/me"
REDOCLY_LOGO = "https://cdn.redoc.ly/redoc/logo-mini.svg"


def _operation(page: Page, method: str, path: str) -> Locator:
    """One operation block of Swagger UI, e.g. GET /api/v1/users/me."""
    return page.locator(f".opblock.opblock-{method.lower()}").filter(
        has=page.locator(f'.opblock-summary-path[data-path="{path}"]')
    )


def _is_login(response: Response) -> bool:
    return response.request.method == "POST" and response.url.endswith(LOGIN_PATH)


async def _open_swagger_ui(page: Page) -> None:
    await page.goto("/docs")
    await expect(page.locator(".swagger-ui .info .title")).to_contain_text("Backoffice API")
    await expect(_operation(page, "GET", ME_PATH)).to_be_visible()


async def _authorize(page: Page) -> None:
    """Swagger UI's Authorize button, the OAuth2 password flow, the seeded superuser."""
    await page.locator(".scheme-container button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    await expect(dialog).to_be_visible()
    await dialog.locator("#oauth_username").fill(SUPERUSER_EMAIL)
    await dialog.locator("#oauth_password").fill(SUPERUSER_PASSWORD)
    # The dialog's own Authorize button: Swagger UI posts the password form to the token URL.
    async with page.expect_response(_is_login) as login:
        await dialog.locator(".auth-btn-wrapper button.authorize").click()
    assert (await login.value).status == 200
    # Authorized: the dialog says so and offers to log out instead.
    await expect(dialog.get_by_role("heading", name="Authorized")).to_be_visible()
    await expect(dialog.locator(".auth-btn-wrapper button.authorize")).to_have_text("Logout")
    await expect(dialog.locator(".errors")).to_have_count(0)
    await screenshot(page, "3-swagger-ui-authorized")
    await dialog.locator(".auth-btn-wrapper button.btn-done").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator(".scheme-container button.authorize")).to_have_class(
        re.compile(r"\blocked\b")
    )


async def test_landing_page_renders(page: Page, outside_requests: OutsideRequests) -> None:
    await page.goto("/")

    await expect(page).to_have_title("Backoffice API")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Backoffice API")
    for name, href in [
        ("Interactive documentation (Swagger UI)", "/docs"),
        ("Reference documentation (ReDoc)", "/redoc"),
        ("OpenAPI document", "/openapi.json"),
    ]:
        await expect(page.get_by_role("link", name=name)).to_have_attribute("href", href)
    await screenshot(page, "1-landing-page")
    assert outside_requests.urls == []


async def test_swagger_ui_renders_offline(page: Page, outside_requests: OutsideRequests) -> None:
    await _open_swagger_ui(page)

    # Assets from the server itself (FastAPIOffline), not a CDN.
    assert await page.locator('script[src$="swagger-ui-bundle.js"]').get_attribute("src") == (
        "/static-offline-docs/swagger-ui-bundle.js"
    )
    await expect(page.locator(".swagger-ui .opblock-tag-section").first).to_be_visible()
    await expect(page.locator(".scheme-container button.authorize")).to_be_visible()
    await screenshot(page, "2-swagger-ui")
    assert outside_requests.urls == []


async def test_swagger_ui_authorize_then_try_users_me(
    page: Page, outside_requests: OutsideRequests
) -> None:
    await _open_swagger_ui(page)
    await _authorize(page)

    operation = _operation(page, "GET", ME_PATH)
    await operation.locator(".opblock-summary").first.click()
    await operation.get_by_role("button", name="Try it out").click()
    async with page.expect_request(f"**{ME_PATH}") as sent:
        await operation.get_by_role("button", name="Execute").click()
    # The call carries the token the Authorize dialog obtained.
    assert (await (await sent.value).header_value("authorization") or "").startswith("Bearer ")

    response = operation.locator(".live-responses-table .response")
    await expect(response.locator(".response-col_status")).to_have_text("200")
    await expect(response.locator(".response-col_description")).to_contain_text(
        f'"email": "{SUPERUSER_EMAIL}"'
    )
    await expect(operation.locator(".request-url")).to_contain_text(ME_PATH)
    await screenshot(operation, "4-swagger-ui-users-me-200")
    assert outside_requests.urls == []


async def test_redoc_renders(page: Page, outside_requests: OutsideRequests) -> None:
    await page.goto("/redoc")

    await expect(page.locator(".api-info h1")).to_contain_text("Backoffice API")
    await expect(page.locator(".menu-content")).to_contain_text("products")
    await expect(page.get_by_text(ME_PATH).first).to_be_attached()
    await screenshot(page, "5-redoc")
    # ReDoc's bundle hard-codes one outside URL, the "API docs by Redocly" footer logo; it
    # was aborted (the logo hides itself on error) and everything above rendered without it.
    assert set(outside_requests.urls) <= {REDOCLY_LOGO}
