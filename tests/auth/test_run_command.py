"""`python -m backoffice run` (`task run`) treats forwarded headers exactly as `serve` does:
the client's address comes from TRUSTED_PROXIES alone, never from uvicorn's own proxy-header
handling (which, by default, believes any `X-Forwarded-For` sent from 127.0.0.1)."""

from pathlib import Path

import httpx

from tests.live_server import free_port, server_environment, server_process, wait_until_ready
from tests.support.database import as_app, scratch_database
from tests.support.users import LOGIN


async def test_run_does_not_believe_x_forwarded_for_from_localhost(
    server_url: str, app_login: tuple[str, str], tmp_path: Path
) -> None:
    """TRUSTED_PROXIES is empty: three logins from 127.0.0.1, each claiming another address,
    are one client, and the third is over the limit of two."""
    log = tmp_path / "server.log"
    # A database of its own: `run` bootstraps roles and a superuser, committed for good.
    async with scratch_database(server_url, "backoffice_run") as database_url:
        port = free_port()
        environment = server_environment(
            ENVIRONMENT="test",
            DATABASE_URL=as_app(database_url, app_login),
            DATABASE_OWNER_URL=database_url,
            PORT=str(port),
            LOGIN_RATE_LIMIT="2/minute",
            LOG_LEVEL="WARNING",
        )
        with server_process("run", environment, tmp_path, log) as server:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                await wait_until_ready(server, client, log)
                responses = [
                    await client.post(
                        LOGIN,
                        data={"username": "nobody@example.com", "password": "a wrong guess"},
                        headers={"X-Forwarded-For": f"198.51.100.{n}"},
                    )
                    for n in range(1, 4)
                ]

    assert [response.status_code for response in responses] == [401, 401, 429]
    assert "server" not in responses[0].headers  # serve's other options hold for run too


def test_a_server_started_while_the_database_is_unavailable_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    """Nothing listens at DATABASE_URL: `serve` cannot bootstrap. It exits 1 with a sentence,
    not a traceback, for a process manager to start it again."""
    log = tmp_path / "server.log"
    environment = server_environment(
        ENVIRONMENT="test",
        DATABASE_URL=f"postgresql://nobody@127.0.0.1:{free_port()}/none",
        PORT=str(free_port()),
    )
    with server_process("serve", environment, tmp_path, log) as server:
        exit_code = server.wait(timeout=60)
    output = log.read_text()

    assert exit_code == 1, output
    assert "backoffice serve: the database is unavailable (DatabaseUnreachableError)" in output
    assert "Traceback" not in output
