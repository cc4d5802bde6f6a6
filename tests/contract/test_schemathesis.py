"""The OpenAPI document is the contract, and the running API keeps it.

Schemathesis reads `/openapi.json` from a real server (`python -m backoffice serve`, over a
fresh database of its own) and runs every phase against every operation as the superuser:
the document's examples, the coverage of each schema's boundaries, random fuzzing (positive and
negative data, NUL bytes and lone surrogates included) and stateful sequences that follow the
links between operations. Every check is on: no 5xx, every status, content type, header and
body as documented, schema-valid data accepted and schema-invalid data refused, deleted
resources gone, `Allow` honest. Settings a schema cannot state live in `schemathesis.toml`.

The run is deterministic, so a failure reproduces; `SCHEMATHESIS_EXAMPLES` sets how many cases
each operation gets (CI's default keeps the run to about a minute), and `SCHEMATHESIS_SEED=<n>`
explores other cases, randomly but reproducibly.
"""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import httpx

from tests.live_server import free_port, server_environment, server_process, tail, wait_until_ready
from tests.support.database import as_app, scratch_database

CONFIG = Path(__file__).with_name("schemathesis.toml")
SUPERUSER_EMAIL = "contract@example.com"
SECRET_KEY = secrets.token_urlsafe(48)  # made per run: no secret-looking literal in the repo
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "15"))
SEED = os.environ.get("SCHEMATHESIS_SEED")
RUN_TIMEOUT_S = 900


def _schemathesis(base_url: str, password: str, report: Path) -> subprocess.CompletedProcess[str]:
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(CONFIG),
        "run",
        f"{base_url}/openapi.json",
        "--phases=examples,coverage,fuzzing,stateful",
        "--mode=all",
        "--checks=all",
        "--generation-allow-x00=true",
        f"--max-examples={EXAMPLES}",
        f"--seed={SEED}" if SEED else "--generation-deterministic",
        "--workers=1",
        "--request-timeout=10",
        "--no-color",
        "--report=junit",
        f"--report-junit-path={report}",
    ]
    environment = os.environ | {"ST_USERNAME": SUPERUSER_EMAIL, "ST_PASSWORD": password}
    return subprocess.run(  # noqa: S603  # our own virtualenv's schemathesis, fixed arguments
        command,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env=environment,
        cwd=report.parent,  # its `.schemathesis` cache stays out of the work tree
        check=False,
    )


def _summary(output: str) -> str:
    """The run's closing figures (operations, phases, test cases, failures)."""
    return output[output.rfind("SUMMARY") :] if "SUMMARY" in output else output[-3000:]


async def test_the_running_api_keeps_its_openapi_contract(
    server_url: str, app_login: tuple[str, str], tmp_path: Path
) -> None:
    password = secrets.token_urlsafe(24)
    log = tmp_path / "server.log"
    port = free_port()
    async with scratch_database(server_url, "backoffice_contract") as database_url:
        environment = server_environment(
            ENVIRONMENT="development",
            DATABASE_URL=as_app(database_url, app_login),
            DATABASE_OWNER_URL=database_url,
            SECRET_KEY=SECRET_KEY,
            FIRST_SUPERUSER_EMAIL=SUPERUSER_EMAIL,
            FIRST_SUPERUSER_PASSWORD=password,
            PORT=str(port),
            WORKERS="1",
            LOG_LEVEL="WARNING",
            # Thousands of requests from one address, some of them logins and password
            # changes with wrong passwords: limits and lockout have tests of their own.
            LOGIN_RATE_LIMIT="1000000/minute",
            LOGIN_MAX_FAILURES="1000000",
        )
        with server_process("serve", environment, tmp_path, log) as server:
            base_url = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base_url) as client:
                await wait_until_ready(server, client, log)
            run = _schemathesis(base_url, password, tmp_path / "junit.xml")

    print(f"\nschemathesis: {_summary(run.stdout)}")  # noqa: T201  # the figures, shown with -s
    assert run.returncode == 0, f"{run.stdout[-20000:]}\n{run.stderr[-3000:]}\n{tail(log)}"
