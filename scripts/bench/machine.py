"""The machine a run measured on, for bench/RESULTS.md: the figures mean little without it."""

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True, slots=True)
class Machine:
    cpu: str
    cores: int
    ram_bytes: int
    os: str
    python: str
    postgresql: str
    load_average: tuple[float, float, float]  # at the start of the run: how busy it was

    def line(self) -> str:
        load = " ".join(f"{value:.2f}" for value in self.load_average)
        return (
            f"{self.cpu}, {self.cores} cores, {self.ram_bytes / 2**30:.1f} GiB RAM, {self.os}, "
            f"Python {self.python}, PostgreSQL {self.postgresql}; load average {load} at the start"
        )


def _cpu_model() -> str:
    try:
        for line in CPUINFO.read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _os() -> str:
    try:
        name = platform.freedesktop_os_release()["PRETTY_NAME"]
    except (OSError, KeyError):
        name = platform.system()
    return f"{name} (kernel {platform.release()})"


def this_machine(postgresql: str) -> Machine:
    """This machine, now; `postgresql` is the bench server's version (seeding.py)."""
    one, five, fifteen = os.getloadavg()
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        ram_bytes=psutil.virtual_memory().total,
        os=_os(),
        python=platform.python_version(),
        postgresql=postgresql,
        load_average=(one, five, fifteen),
    )
