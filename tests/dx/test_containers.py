"""The container files, checked without a Docker engine (none runs on the build machines).

docker-compose.yml, the Dockerfile, .dockerignore and the Taskfile's docker tasks are parsed
and their wiring checked: the services and their start order (db healthy -> migrate exits 0 ->
app), the database roles (migrate as the owner, the app as its own login role), healthchecks,
a non-root user, the production server command, and no secret written inline. What this
cannot prove is that the images build and the stack starts.
"""

import json
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import pytest
import yaml

from backoffice.core.database import APP_GROUP_ROLE

ROOT = Path(__file__).resolve().parents[2]
# The app container's database login (docker/postgres-init/10-app-role.sh) and its password.
APP_LOGIN_ROLE = "backoffice_api"
APP_PASSWORD_VARIABLE = "APP_DB_PASSWORD"

# Names of settings whose values are secrets (POSTGRES_PASSWORD, SECRET_KEY, API_TOKEN, ...).
_SECRET_NAME = re.compile(
    r"PASSWORD|PASSWD|SECRET|TOKEN|(^|_)KEY$|API_KEY|CREDENTIAL", re.IGNORECASE
)
# A compose interpolation: ${VAR}, ${VAR:-default}, ${VAR:?error}, ... ($$ is a literal $).
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:[:?+-][^}]*)?\}")
_URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s'\"]+", re.IGNORECASE)


# --- docker-compose.yml -------------------------------------------------------------------


@cache
def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def _service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = _compose()["services"][name]
    return service


def _depends_on(service: dict[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the short (list) form means service_started."""
    depends_on = service.get("depends_on", {})
    if isinstance(depends_on, list):
        return dict.fromkeys(depends_on, "service_started")
    return {
        name: options.get("condition", "service_started") for name, options in depends_on.items()
    }


def _environment(service: dict[str, Any]) -> dict[str, str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return dict(item.partition("=")[::2] for item in environment)
    return {key: "" if value is None else str(value) for key, value in environment.items()}


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def _mounts(service: dict[str, Any]) -> list[Mount]:
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target, *mode = volume.split(":")
            mounts.append(Mount(source, target, "ro" in ",".join(mode).split(",")))
        else:
            mounts.append(
                Mount(volume.get("source", ""), volume["target"], bool(volume.get("read_only")))
            )
    return mounts


def _bare(text: str) -> str:
    """${VAR:?message with spaces} -> ${VAR}: compose interpolates before splitting words."""
    return _INTERPOLATION.sub(lambda match: f"${{{match.group(1)}}}", text)


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command", [])
    if isinstance(command, str):
        return shlex.split(_bare(command))
    return [_bare(str(argument)) for argument in command]


def _option(arguments: list[str], name: str) -> str | None:
    for index, argument in enumerate(arguments):
        if argument == name and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(f"{name}="):
            return argument.split("=", 1)[1]
    return None


def _healthcheck_text(healthcheck: dict[str, Any]) -> str:
    test = healthcheck.get("test", [])
    return " ".join(test) if isinstance(test, list) else str(test)


def _strings(node: Any) -> list[str]:
    """Every string in a parsed YAML document, keys included, interpolations bare."""
    if isinstance(node, dict):
        return [text for key, value in node.items() for text in (*_strings(key), *_strings(value))]
    if isinstance(node, list):
        return [text for item in node for text in _strings(item)]
    return [_bare(node)] if isinstance(node, str) else []


def _is_interpolation(value: str) -> bool:
    return _INTERPOLATION.fullmatch(value) is not None


def _url_password(url: str) -> str | None:
    """The password part of a URL's user info (split by hand: it may hold a ${...})."""
    netloc = url.split("://", 1)[1].split("/", 1)[0]
    userinfo, at, _ = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1]


def _env_example_values() -> dict[str, str]:
    """The variables .env.example documents, commented-out examples included."""
    documented = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if match := re.fullmatch(r"#?\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip()):
            documented[match.group(1)] = match.group(2).strip().strip("\"'")
    return documented


# The API nodes behind the load balancer (README, "Scaling out").
APP_NODES = ("app1", "app2")


def test_the_stack_has_db_migrate_pgbouncer_redis_two_app_nodes_and_a_load_balancer() -> None:
    assert {"db", "migrate", "pgbouncer", "redis", *APP_NODES, "lb"} <= set(_compose()["services"])


def test_db_is_postgresql_18_with_a_healthcheck_and_a_named_volume() -> None:
    db = _service("db")

    assert re.fullmatch(r"postgres:18(\.\d+)*(-alpine|-bookworm|-trixie)?", db["image"])
    assert "pg_isready" in _healthcheck_text(db["healthcheck"])
    data = [
        m for m in _mounts(db) if m.target in {"/var/lib/postgresql", "/var/lib/postgresql/data"}
    ]
    assert len(data) == 1
    assert data[0].source in (_compose().get("volumes") or {})  # named, not a bind mount


def test_migrate_applies_migrations_with_atlas_once_db_is_healthy() -> None:
    migrate = _service("migrate")
    command = _command(migrate)

    assert migrate["image"].split(":")[0] == "arigaio/atlas"
    assert _depends_on(migrate) == {"db": "service_healthy"}
    assert command[:2] == ["migrate", "apply"]
    assert migrate.get("restart", "no") in {"no", "on-failure"}  # a one-shot job

    if _option(command, "--env") is not None:  # atlas.hcl's env, the project as working dir
        assert _option(command, "--env") == "docker"
        assert 'env "docker"' in (ROOT / "atlas.hcl").read_text()
        project = [m for m in _mounts(migrate) if m.target == migrate.get("working_dir")]
        assert [m.source for m in project] == ["."]
    else:  # explicit --dir and --url, the same target as atlas.hcl's env "docker"
        directory = _option(command, "--dir")
        url = _option(command, "--url")
        assert directory is not None
        assert url is not None
        assert directory.startswith("file://")
        migrations = [m for m in _mounts(migrate) if m.target == directory.removeprefix("file://")]
        assert len(migrations) == 1
        assert (ROOT / migrations[0].source).resolve() == ROOT / "migrations"
        assert migrations[0].read_only
        assert urlsplit(url).hostname == "db"
        assert urlsplit(url).path == f"/{_environment(_service('db'))['POSTGRES_DB']}"
        # As the owner: the app's role may not change the schema.
        assert urlsplit(url).username == _environment(_service("db"))["POSTGRES_USER"]


@pytest.mark.parametrize("node", APP_NODES)
def test_app_starts_after_the_migrations_on_a_healthy_db_pgbouncer_and_redis(node: str) -> None:
    assert _depends_on(_service(node)) == {
        "db": "service_healthy",
        "migrate": "service_completed_successfully",
        "pgbouncer": "service_healthy",
        "redis": "service_healthy",
    }


@pytest.mark.parametrize("node", APP_NODES)
def test_app_reads_env_file_dot_env(node: str) -> None:
    env_file = _service(node)["env_file"]
    entries = env_file if isinstance(env_file, list) else [env_file]
    paths = [entry if isinstance(entry, str) else entry["path"] for entry in entries]

    assert ".env" in paths


def test_both_nodes_run_the_same_image_and_settings() -> None:
    first, second = (_service(node) for node in APP_NODES)

    assert first == second


def _database_url(node: str, setting: str) -> tuple[str, SplitResult]:
    """A node's database URL setting: (its password, the URL with the password masked)."""
    url = _environment(_service(node))[setting]
    password = _url_password(url)
    assert password is not None
    return password, urlsplit(url.replace(password, "password"))


@pytest.mark.parametrize("node", APP_NODES)
def test_app_nodes_pool_through_pgbouncer_and_listen_on_db_directly(node: str) -> None:
    """DATABASE_URL through the transaction pooler, the direct URL for what needs a session
    (LISTEN), both as the app's role; the limits in the compose Redis."""
    app = _environment(_service(node))
    _, pooled = _database_url(node, "DATABASE_URL")
    _, direct = _database_url(node, "DATABASE_DIRECT_URL")
    ini = (ROOT / "docker/pgbouncer/pgbouncer.ini").read_text()
    bouncer_port = re.search(r"^listen_port\s*=\s*(\d+)", ini, re.MULTILINE)
    assert bouncer_port is not None

    assert app["DATABASE_POOL_MODE"] == "transaction"
    assert re.search(r"^pool_mode\s*=\s*transaction\s*$", ini, re.MULTILINE)
    assert (pooled.hostname, pooled.port) == ("pgbouncer", int(bouncer_port.group(1)))
    assert re.search(rf"^{pooled.path.strip('/')}\s*=.*\bhost=db\b", ini, re.MULTILINE)
    assert (direct.hostname, direct.port) == ("db", 5432)
    assert urlsplit(app["RATE_LIMIT_STORAGE_URL"]).hostname == "redis"
    assert "ipam" in str(_compose()["networks"])  # TRUSTED_PROXIES names the balancer's net
    for subnet in _compose()["networks"]["default"]["ipam"]["config"]:
        assert subnet["subnet"] in app["TRUSTED_PROXIES"]


def test_pgbouncer_reads_the_app_password_from_the_environment_only() -> None:
    bouncer = _service("pgbouncer")
    start = (ROOT / "docker/pgbouncer/start.sh").read_text()

    assert _depends_on(bouncer) == {"db": "service_healthy"}
    assert (
        _environment(bouncer)[APP_PASSWORD_VARIABLE]
        == _environment(_service("db"))[APP_PASSWORD_VARIABLE]
    )
    assert f'"${APP_PASSWORD_VARIABLE}"' in start
    assert "healthcheck" in bouncer
    assert "healthcheck" in _service("redis")


def test_the_load_balancer_spreads_over_both_nodes_once_they_are_healthy() -> None:
    lb = _service("lb")
    nginx = (ROOT / "docker/nginx/nginx.conf").read_text()
    upstream = re.search(r"upstream (\w+) \{(.*?)\}", nginx, re.DOTALL)
    assert upstream is not None
    port = _environment(_service(APP_NODES[0]))["PORT"]

    assert re.findall(r"^\s*server (\S+?)(?:\s|;)", upstream.group(2), re.MULTILINE) == [
        f"{node}:{port}" for node in APP_NODES
    ]
    assert f"proxy_pass http://{upstream.group(1)};" in nginx
    assert "X-Forwarded-For" in nginx
    assert _depends_on(lb) == dict.fromkeys(APP_NODES, "service_healthy")
    assert "/health/live" in _healthcheck_text(lb["healthcheck"])
    assert [str(p).rsplit(":", 1)[-1] for p in lb["ports"]] == ["80"]


@pytest.mark.parametrize("node", APP_NODES)
def test_app_connects_to_the_compose_db_as_the_app_role_not_the_owner(node: str) -> None:
    db = _environment(_service("db"))
    app = _environment(_service(node))
    url = app["DATABASE_URL"]
    password, parts = _database_url(node, "DATABASE_URL")

    assert parts.scheme.startswith("postgresql")
    assert parts.hostname == "pgbouncer"
    assert parts.path == f"/{db['POSTGRES_DB']}"
    # The login role the db's init script creates, which cannot rewrite the audit trail.
    assert parts.username == APP_LOGIN_ROLE
    assert parts.username != db["POSTGRES_USER"]
    # Its password: the variable the init script reads, interpolated, never written out.
    assert password == db[APP_PASSWORD_VARIABLE]
    assert _is_interpolation(password)
    # Nothing of the owner's reaches the app's settings.
    assert db["POSTGRES_PASSWORD"] not in url
    assert "DATABASE_OWNER_URL" not in app


def test_the_db_creates_the_app_login_role_on_its_first_start() -> None:
    init = [m for m in _mounts(_service("db")) if m.target == "/docker-entrypoint-initdb.d"]
    assert len(init) == 1
    assert init[0].read_only
    scripts = sorted((ROOT / init[0].source).iterdir())
    text = "\n".join(script.read_text() for script in scripts)

    assert [script.suffix for script in scripts] == [".sh"]  # one script, run by the image
    # A member of the group role the migrations grant the app's rights to.
    assert re.search(
        rf"CREATE ROLE {APP_LOGIN_ROLE} LOGIN PASSWORD :'(\w+)' IN ROLE {APP_GROUP_ROLE};", text
    )
    assert any(APP_GROUP_ROLE in path.read_text() for path in (ROOT / "migrations").glob("*.sql"))
    # The password comes from the environment, read by psql itself (not on a command line).
    assert re.search(rf"\\getenv \w+ {APP_PASSWORD_VARIABLE}\b", text)


@pytest.mark.parametrize("node", APP_NODES)
def test_app_is_reached_through_the_balancer_and_health_checked(node: str) -> None:
    app = _service(node)
    dockerfile = _dockerfile()

    assert "ports" not in app  # the balancer is the one way in
    assert {_environment(app)["PORT"]} <= {
        port for line in dockerfile.final.all("EXPOSE") for port in line.split()
    }
    assert _environment(app)["HOST"] == "0.0.0.0"  # noqa: S104  # inside the container
    if "healthcheck" in app:
        assert "/health/live" in _healthcheck_text(app["healthcheck"])
    else:  # the image's HEALTHCHECK, built from this Dockerfile
        build = app["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        name = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (ROOT / context / name).resolve() == ROOT / "Dockerfile"
        assert "/health/live" in dockerfile.final.one("HEALTHCHECK")


def test_no_secret_is_written_inline_in_the_compose_file() -> None:
    inline = []
    for name, service in _compose()["services"].items():
        for key, value in _environment(service).items():
            if _SECRET_NAME.search(key) and not _is_interpolation(value):
                inline.append(f"{name}: {key}")
    for text in _strings(_compose()):
        for url in _URL.findall(text):
            password = _url_password(url)
            if password is not None and not _is_interpolation(password):
                inline.append(url)

    assert inline == []


def test_the_example_secrets_are_not_copied_into_the_container_files() -> None:
    secrets = {
        value
        for key, value in _env_example_values().items()
        if _SECRET_NAME.search(key) and len(value) >= 8
    }
    files = [ROOT / "docker-compose.yml", ROOT / "Dockerfile"]

    assert secrets
    assert [secret for secret in secrets for path in files if secret in path.read_text()] == []


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text().replace("$$", "")
    used = set(_INTERPOLATION.findall(text))

    assert used
    assert used - set(_env_example_values()) == set()


# --- Dockerfile -------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arguments for instruction, arguments in self.instructions if instruction == keyword]

    def one(self, keyword: str) -> str:
        """The last one: the one Docker uses (USER, CMD, HEALTHCHECK, ...)."""
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


@dataclass
class Dockerfile:
    global_args: list[str]
    stages: list[Stage]

    @property
    def final(self) -> Stage:
        return self.stages[-1]


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):  # comments may sit between continuation lines
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        instructions.append((keyword.upper(), " ".join(arguments.split())))
        pending = ""
    assert not pending, "the Dockerfile ends in a continuation line"
    return instructions


@cache
def _dockerfile() -> Dockerfile:
    global_args: list[str] = []
    stages: list[Stage] = []
    for keyword, arguments in _instructions((ROOT / "Dockerfile").read_text()):
        if keyword == "FROM":
            words = [word for word in arguments.split() if not word.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, arguments))
        else:
            global_args.append(arguments)
    return Dockerfile(global_args, stages)


def _exec_form(arguments: str) -> list[str]:
    if arguments.startswith("["):
        parsed: list[str] = json.loads(arguments)
        return parsed
    return ["/bin/sh", "-c", arguments]


def test_the_dockerfile_builds_in_stages_and_runs_in_a_fresh_one() -> None:
    dockerfile = _dockerfile()
    names = {stage.name for stage in dockerfile.stages}

    assert len(dockerfile.stages) >= 2
    assert dockerfile.final.base not in names  # the runtime starts from a clean base image


def test_the_build_stage_installs_exactly_the_lock_with_uv() -> None:
    build_runs = [run for stage in _dockerfile().stages[:-1] for run in stage.all("RUN")]
    syncs = [run for run in build_runs if "uv sync" in run]

    assert syncs
    assert all("--frozen" in run and "--no-dev" in run for run in syncs)


def test_the_runtime_stage_has_no_uv_and_no_build_cache() -> None:
    final = _dockerfile().final
    sources = [
        word.removeprefix("--from=")
        for copy in final.all("COPY")
        for word in copy.split()
        if word.startswith("--from=")
    ]

    assert sources
    assert all("astral-sh/uv" not in source for source in sources)
    assert all(source in {stage.name for stage in _dockerfile().stages} for source in sources)
    assert not any(
        re.search(r"\buvx?\b|pip install|--mount=type=cache", run) for run in final.all("RUN")
    )
    assert "astral-sh/uv" not in final.base


def test_the_runtime_stage_runs_as_a_fixed_non_root_uid() -> None:
    final = _dockerfile().final
    user = final.one("USER").split(":")[0]

    if not user.isdigit():  # a name: it must be created with a fixed uid in this stage
        created = re.search(
            rf"useradd\b[^&;|]*--uid[ =](\d+)[^&;|]*\b{re.escape(user)}\b",
            " ".join(final.all("RUN")),
        )
        assert created, f"USER {user} is not created with a fixed --uid"
        user = created.group(1)
    assert int(user) != 0


def test_the_runtime_stage_checks_its_health_on_health_live() -> None:
    final = _dockerfile().final
    healthcheck = final.one("HEALTHCHECK")

    assert "/health/live" in healthcheck
    assert not healthcheck.upper().startswith("NONE")
    for tool in ("curl", "wget"):  # slim images ship neither: used only if installed
        if re.search(rf"\b{tool}\b", healthcheck):
            assert any(re.search(rf"install[^&;|]*\b{tool}\b", run) for run in final.all("RUN"))


def test_the_image_starts_the_production_server() -> None:
    final = _dockerfile().final
    entrypoint = _exec_form(final.one("ENTRYPOINT")) if final.all("ENTRYPOINT") else []
    command = " ".join(entrypoint + _exec_form(final.one("CMD")))

    assert re.search(r"\bbackoffice serve\b", command)
    assert "--reload" not in command
    assert final.all("EXPOSE")


def test_no_secret_is_baked_into_the_image() -> None:
    dockerfile = _dockerfile()
    declared = [*dockerfile.global_args]
    for stage in dockerfile.stages:
        declared += stage.all("ARG") + stage.all("ENV")
    baked = []
    for declaration in declared:
        for word in shlex.split(declaration):
            name, _, value = word.partition("=")
            if _SECRET_NAME.search(name):
                baked.append(name)  # even without a value: it would end up in the history
            baked += [url for url in _URL.findall(value) if _url_password(url) is not None]

    assert baked == []


# --- .dockerignore and the Taskfile -------------------------------------------------------


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = {
        line.strip().rstrip("/") for line in lines if line.strip() and not line.startswith("#")
    }
    copied = {
        source.rstrip("/")
        for stage in _dockerfile().stages
        for copy in stage.all("COPY")
        if "--from=" not in copy
        for source in copy.split()[:-1]
        if not source.startswith("--")
    }

    assert {".env", ".venv", ".data", ".git"} <= patterns
    assert copied
    assert copied & patterns == set()  # what the Dockerfile copies is in the context


def test_task_docker_up_starts_the_stack_and_waits_for_it() -> None:
    tasks: dict[str, Any] = yaml.safe_load((ROOT / "Taskfile.yml").read_text())["tasks"]
    up = " ".join(str(command) for command in tasks["docker-up"]["cmds"])
    down = " ".join(str(command) for command in tasks["docker-down"]["cmds"])

    assert "docker compose up" in up
    assert "--wait" in up
    assert "--build" in up
    assert "docker compose" in down
    assert " down" in down
