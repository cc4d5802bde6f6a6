"""The load: wrk, driven by the Lua scripts of `lua/`, on each scenario of the plan.

The bench never installs wrk: without it, it stops and says how to install it (`task bench`
installs it first, explicitly, when apt-get can)."""

import re
import secrets
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from .client import API_PREFIX, authorization, deep_page_url, list_url, tasks_url
from .plan import WARMUP_S, Load, Options, Scenario, Server
from .report import Result

LUA_DIR = Path(__file__).resolve().parent / "lua"
RESULT_SCRIPT = LUA_DIR / "result.lua"  # prints the RESULT_MARKER line
NUMBERED_THREADS = LUA_DIR / "numbered_threads.lua"
RESULT_MARKER = "BENCH_RESULT"
NON_2XX_LINE = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
RESULT_FIELD = re.compile(r"(\w+)=([\d.]+)")

WRK_MISSING = (
    "wrk is required and was not found on PATH. Install it, then run again:\n"
    "  Debian/Ubuntu: sudo apt-get install wrk   (`task bench` does this itself, as root)\n"
    "  macOS:         brew install wrk\n"
    "  elsewhere:     https://github.com/wg/wrk"
)


class WrkMissingError(RuntimeError):
    pass


def find_wrk() -> str:
    """The path to wrk; WrkMissingError, saying how to install it, if there is none."""
    found = shutil.which("wrk")
    if found is None:
        raise WrkMissingError(WRK_MISSING)
    return found


class Script(StrEnum):
    """A wrk script, put together from lua/: numbered_threads.lua and its own file (neither for
    a fixed URL), then result.lua."""

    RANDOM_ID = "random_id.lua"  # args: <max id> <path prefix>
    CREATE_PRODUCT = "create_product.lua"  # args: <run tag>
    FIXED_URL = "fixed_url.lua"

    def parts(self) -> list[Path]:
        own = [] if self is Script.FIXED_URL else [NUMBERED_THREADS, LUA_DIR / self.value]
        return [*own, RESULT_SCRIPT]

    def source(self) -> str:
        return "".join(part.read_text() for part in self.parts())


def write_scripts(directory: Path) -> dict[Script, Path]:
    paths = {script: directory / script.value for script in Script}
    for script, path in paths.items():
        path.write_text(script.source())
    return paths


@dataclass(frozen=True, slots=True)
class Invocation:
    """One scenario as wrk runs it."""

    name: str
    url: str
    script: Path
    script_args: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


def invocations(
    plan: Sequence[Scenario],
    addresses: Mapping[Server, str],
    token: str,
    products: int,
    scripts: Mapping[Script, Path],
) -> list[Invocation]:
    """Every scenario of the plan, in its order, with its URL, script and headers."""
    header = tuple(f"{name}: {value}" for name, value in authorization(token).items())
    run = secrets.token_hex(4)  # SKUs unique across runs on the same database
    resolved = []
    for position, scenario in enumerate(plan):
        base = addresses[scenario.server]
        args: tuple[str, ...] = ()
        match scenario.load:
            case Load.PRODUCT_BY_ID:
                prefix = "" if scenario.server is Server.BASELINE else API_PREFIX
                url, script, args = base, Script.RANDOM_ID, (str(products), f"{prefix}/products/")
            case Load.CREATE_PRODUCT:
                url, script = f"{base}{API_PREFIX}/products", Script.CREATE_PRODUCT
                args = (f"{run}{position}",)
            case Load.PRODUCT_LIST:
                url, script = list_url(base), Script.FIXED_URL
            case Load.PRODUCT_LIST_DEEP:
                url, script = deep_page_url(base, products, token), Script.FIXED_URL
            case Load.TASK_LIST:
                url, script = tasks_url(base), Script.FIXED_URL
        headers = header if scenario.authenticated else ()
        resolved.append(Invocation(scenario.name, url, scripts[script], args, headers))
    return resolved


def wrk_command(wrk: str, invocation: Invocation, options: Options, seconds: int) -> list[str]:
    return [
        wrk,
        f"--threads={options.threads}",
        f"--connections={options.connections}",
        f"--duration={seconds}s",
        "--timeout=10s",
        *(f"--header={header}" for header in invocation.headers),
        f"--script={invocation.script}",
        invocation.url,
        "--",
        *invocation.script_args,
    ]


def run_wrk(wrk: str, invocation: Invocation, options: Options, seconds: int) -> str:
    completed = subprocess.run(
        wrk_command(wrk, invocation, options, seconds),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"wrk failed on {invocation.name}:\n{completed.stdout}{completed.stderr}"
        )
    return completed.stdout


def parse_wrk(name: str, output: str) -> Result:
    line = next((row for row in output.splitlines() if row.startswith(RESULT_MARKER)), None)
    if line is None:
        raise RuntimeError(f"no {RESULT_MARKER} line in wrk's output for {name}:\n{output}")
    fields = {key: float(value) for key, value in RESULT_FIELD.findall(line)}
    non_2xx = NON_2XX_LINE.search(output)
    return Result(
        name=name,
        requests_per_s=fields["rps"],
        p50_ms=fields["p50_us"] / 1000,
        p99_ms=fields["p99_us"] / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=int(fields["socket_errors"]),
    )


def measure(wrk: str, invocation: Invocation, options: Options, label: str = "") -> Result:
    print(f"wrk{label}: {invocation.name} ({WARMUP_S}s warm-up + {options.duration}s)", flush=True)
    run_wrk(wrk, invocation, options, WARMUP_S)
    return parse_wrk(invocation.name, run_wrk(wrk, invocation, options, options.duration))
