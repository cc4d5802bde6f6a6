"""GET /customers/export: the list's filters and sort, as a CSV file."""

from httpx import AsyncClient

from tests.support.factories import CUSTOMERS, CreateCustomer
from tests.support.http import walk_pages
from tests.support.spreadsheet import csv_header, csv_rows

EXPORT = f"{CUSTOMERS}/export"


async def test_export_has_the_filtered_sorted_customers_with_the_json_fields(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    await create_customer(name="Beta", status="active", phone="+44 20 7946 0958")
    await create_customer(name="Alpha", status="active", company="@Acme")
    await create_customer(name="Gamma", status="lead")
    params = {"status": "active", "sort": "name"}

    response = await client.get(EXPORT, params=params)

    rows = csv_rows(response)
    listed = await walk_pages(client, CUSTOMERS, params)
    assert csv_header(response) == list(listed[0])
    assert [row["name"] for row in rows] == ["Alpha", "Beta"]
    assert [row["email"] for row in rows] == [item["email"] for item in listed]
    # A phone number's + and a company's @ would start a formula.
    assert rows[1]["phone"] == "'+442079460958"
    assert rows[0]["company"] == "'@Acme"
    assert rows[0]["status"] == "active"
    assert 'filename="customers-' in response.headers["content-disposition"]


async def test_export_does_not_shadow_a_customer(
    client: AsyncClient, create_customer: CreateCustomer
) -> None:
    customer = await create_customer()

    assert (await client.get(f"{CUSTOMERS}/{customer['id']}")).status_code == 200
    assert len(csv_rows(await client.get(EXPORT))) == 1
