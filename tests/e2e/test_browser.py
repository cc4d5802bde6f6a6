"""What a user sees in a real browser: the landing page, Swagger UI (offline, logging in and
calling the API), ReDoc. Each test saves a screenshot under test-artifacts/screenshots/."""

import re

import httpx
from playwright.async_api import Locator, Page, Response, expect

from backoffice.auth.dependencies import LOGIN_PATH  # the OAuth2 scheme's tokenUrl
from tests.e2e.conftest import SUPERUSER_EMAIL, SUPERUSER_PASSWORD, OutsideRequests, screenshot
from tests.support.api_keys import API_KEYS, SERVICE_ACCOUNTS

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
    # The dialog offers an API key too (its own form): this is the password flow's.
    oauth = dialog.locator(".auth-container").filter(has_text="OAuth2PasswordBearer")
    await oauth.locator("#oauth_username").fill(SUPERUSER_EMAIL)
    await oauth.locator("#oauth_password").fill(SUPERUSER_PASSWORD)
    # The dialog's own Authorize button: Swagger UI posts the password form to the token URL.
    async with page.expect_response(_is_login) as login:
        await oauth.locator(".auth-btn-wrapper button.authorize").click()
    assert (await login.value).status == 200
    # Authorized: the dialog says so and offers to log out instead.
    await expect(oauth.get_by_role("heading", name="Authorized")).to_be_visible()
    await expect(oauth.locator(".auth-btn-wrapper button.authorize")).to_have_text("Logout")
    await expect(dialog.locator(".errors")).to_have_count(0)
    await screenshot(page, "3-swagger-ui-authorized")
    await oauth.locator(".auth-btn-wrapper button.btn-done").click()
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


async def test_swagger_ui_authorize_with_an_api_key(
    page: Page, live_server: str, outside_requests: OutsideRequests
) -> None:
    """The Authorize dialog's second scheme: a service account's API key, pasted in."""
    async with httpx.AsyncClient(base_url=live_server) as admin:
        login = {"username": SUPERUSER_EMAIL, "password": SUPERUSER_PASSWORD}
        token = (await admin.post(LOGIN_PATH, data=login)).json()["access_token"]
        admin.headers["Authorization"] = f"Bearer {token}"
        account = (await admin.post(SERVICE_ACCOUNTS, json={"name": "Browser test"})).json()
        created = await admin.post(
            API_KEYS, json={"service_account_id": account["id"], "name": "e2e", "permissions": []}
        )
        key = created.json()["api_key"]
    await _open_swagger_ui(page)

    await page.locator(".scheme-container button.authorize").click()
    dialog = page.locator(".dialog-ux .modal-ux")
    form = dialog.locator("form").filter(has_text="ApiKey")
    await form.locator("input").fill(key)
    await form.locator(".auth-btn-wrapper button.authorize").click()
    # Authorized: the form's first button now removes the key instead.
    await expect(form.locator(".auth-btn-wrapper button").first).to_have_text("Logout")
    await form.locator(".auth-btn-wrapper button.btn-done").click()
    await expect(dialog).to_be_hidden()

    operation = _operation(page, "GET", ME_PATH)
    await operation.locator(".opblock-summary").first.click()
    await operation.get_by_role("button", name="Try it out").click()
    async with page.expect_request(f"**{ME_PATH}") as sent:
        await operation.get_by_role("button", name="Execute").click()
    assert await (await sent.value).header_value("authorization") == f"Bearer {key}"
    response = operation.locator(".live-responses-table .response")
    await expect(response.locator(".response-col_status")).to_have_text("200")
    await expect(response.locator(".response-col_description")).to_contain_text(
        f'"email": "{account["email"]}"'
    )
    await screenshot(operation, "5-swagger-ui-users-me-with-an-api-key")
    assert outside_requests.urls == []
