"""CPU use per process during a scenario, and what the rest of the machine used meanwhile.

Reads /proc (Linux). Figures are in % of one core over the scenario's wall time, so on two
cores the processes together can reach 200 %. `other` is every CPU-second the machine spent
outside this process and the named ones (other people's work on a shared host): when it is
large, the scenario's figures are noisy and should be re-measured.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path

OTHER = "other"


def _tick() -> float:
    try:
        return float(os.sysconf("SC_CLK_TCK"))
    except (AttributeError, ValueError, OSError):
        return 100.0


class CpuMeter:
    def __init__(self, pids: Mapping[str, int], self_name: str = "loadgen") -> None:
        self.pids = dict(pids)
        self.self_name = self_name
        self.tick = _tick()

    def _proc_seconds(self, pid: int) -> float | None:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of proc_pid_stat(5); fields[0] is field 3.
        return (int(fields[11]) + int(fields[12])) / self.tick

    def _machine_busy_seconds(self) -> float | None:
        try:
            first = Path("/proc/stat").read_text().splitlines()[0].split()
        except (OSError, IndexError):
            return None
        if first[0] != "cpu" or len(first) < 9:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in first[1:9])
        return (user + nice + system + irq + softirq + steal) / self.tick

    def snapshot(self) -> dict[str, float]:
        """Cumulative CPU seconds: this process, each named process and the whole machine."""
        out = {self.self_name: time.process_time()}
        for name, pid in self.pids.items():
            seconds = self._proc_seconds(pid)
            if seconds is not None:
                out[name] = seconds
        machine = self._machine_busy_seconds()
        if machine is not None:
            out[OTHER] = machine  # turned into "everything else" by percent()
        return out

    @staticmethod
    def percent(
        before: Mapping[str, float], after: Mapping[str, float], elapsed: float
    ) -> dict[str, int]:
        """CPU use over the interval in % of one core, per process and for everything else."""
        if elapsed <= 0:
            return {}
        used = {name: after[name] - before[name] for name in after if name in before}
        machine = used.pop(OTHER, None)
        out = {name: round(100.0 * seconds / elapsed) for name, seconds in used.items()}
        if machine is not None:
            out[OTHER] = max(0, round(100.0 * (machine - sum(used.values())) / elapsed))
        return out


#: Above this share of one core, a process is treated as saturated, or the host as busy.
SATURATED_PERCENT = 90
BUSY_HOST_PERCENT = 25


def warnings(
    cpu: Mapping[str, int], *, saturation_of: str | None = None, check_host: bool = True
) -> list[str]:
    """Plain-language cautions about a scenario's CPU figures."""
    out: list[str] = []
    if saturation_of is not None and cpu.get(saturation_of, 0) >= SATURATED_PERCENT:
        out.append(
            f"{saturation_of} used {cpu[saturation_of]}% of a core (saturated): this rate is "
            "the load generator's ceiling, a lower bound of the server's"
        )
    if check_host and cpu.get(OTHER, 0) >= BUSY_HOST_PERCENT:
        out.append(
            f"other work on the host used {cpu[OTHER]}% of a core meanwhile: figures are noisy"
        )
    return out
