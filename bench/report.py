"""The machine description and the written results: JSON and Markdown.

``write`` puts ``<UTC timestamp>.json`` and ``<UTC timestamp>.md`` in the
results folder and copies the Markdown to ``latest.md``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil


@dataclass
class Row:
    """One line of the main table: a scenario against its adjacent ceilings."""

    scenario: str
    rps: float
    p50_ms: float
    p99_ms: float
    ceiling_rps: float | None
    ceiling_runs: tuple[float, float]
    """The ceiling runs before and after the scenario; ``ceiling_rps`` is
    their mean."""
    ratio: float | None
    target: str
    verdict: str
    errors: dict[str, int]


@dataclass
class Check:
    """One target of the issue and what this run measured for it."""

    name: str
    target: str
    measured: str
    value: float | None
    limit: float
    passed: bool | None
    """None: not measured (skipped, or not reached in the time allowed)."""
    detail: dict[str, Any]

    @property
    def verdict(self) -> str:
        """``pass``, ``FAIL`` or ``not measured``."""
        if self.passed is None:
            return "not measured"
        return "pass" if self.passed else "FAIL"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def source(folder: Path) -> dict[str, Any]:
    """The commit of the source tree under test and the files changed since.

    Read-only git commands; empty values when git or the repository is
    missing.
    """

    def git(*args: str) -> str:
        try:
            answer = subprocess.run(  # noqa: S603 (fixed arguments)
                ["git", "-C", str(folder), *args],  # noqa: S607 (git from PATH)
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return answer.stdout.strip() if answer.returncode == 0 else ""

    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return {"commit": git("rev-parse", "--short", "HEAD"), "changed_files": changed}


def machine() -> dict[str, Any]:
    """What this machine is and what runs on it."""
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_bytes": psutil.virtual_memory().total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "grpcio": _version("grpcio"),
        "protobuf": _version("protobuf"),
        "segno": _version("segno"),
        "sqlalchemy": _version("sqlalchemy"),
        "asyncpg": _version("asyncpg"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:,.{digits}f}"


def _errors(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {count}" for code, count in sorted(errors.items()))


def markdown(result: dict[str, Any], rows: list[Row], checks: list[Check]) -> str:
    """The human-readable report."""
    info = result["machine"]
    options = result["options"]
    changed = result["source"]["changed_files"]
    changes = (
        f", with uncommitted changes to {', '.join(changed)}"
        if changed
        else ", no uncommitted changes"
    )
    lines = [
        f"# qrsys benchmark, {result['started_utc']}",
        "",
        f"Machine: {info['cpu_model']}, {info['usable_cpus']} usable CPUs of "
        f"{info['logical_cpus']}, {info['memory_bytes'] / 2**30:.0f} GiB; "
        f"{info['os']}; Python {info['python']}, grpcio {info['grpcio']}, "
        f"protobuf {info['protobuf']}, segno {info['segno']}; PostgreSQL "
        f"{result['database']['server_version']} ({result['database']['origin']}).",
        "",
        f"Source: commit {result['source']['commit'] or 'unknown'}{changes}.",
        "",
        "The load generator, the qrsys server, the ceiling server and PostgreSQL "
        "all share this machine. Load average at start "
        f"{info['load_average_at_start']}, at end {result['load_average_at_end']}.",
        "",
        f"Load: {options['workers']} client processes × {options['concurrency']} "
        f"calls in flight (Login and Register: × {options['auth_concurrency']}), "
        f"{options['warmup']:g} s warm-up, {options['duration']:g} s measured per "
        "run. The ceiling is a bare grpc.aio server answering the standard health "
        "check, run before and after every scenario; a scenario's ratio is its "
        "RPS over the mean of those two ceiling runs.",
        "",
        "| scenario | RPS | p50 ms | p99 ms | ceiling RPS (before / after) | ratio "
        "| target | result |",
        "|---|--:|--:|--:|--:|--:|---|---|",
    ]
    for row in rows:
        errors = f" (errors: {_errors(row.errors)})" if row.errors else ""
        lines.append(
            f"| {row.scenario}{errors} | {_fmt(row.rps)} | {_fmt(row.p50_ms, 2)} | "
            f"{_fmt(row.p99_ms, 2)} | {_fmt(row.ceiling_rps, 0)} "
            f"({_fmt(row.ceiling_runs[0], 0)} / {_fmt(row.ceiling_runs[1], 0)}) | "
            f"{_fmt(row.ratio, 3)} | {row.target} | {row.verdict} |"
        )
    lines += [
        "",
        "## Targets",
        "",
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for check in checks:
        lines.append(f"| {check.target} | {check.measured} | {check.verdict} |")
    passed = sum(1 for check in checks if check.passed)
    lines += ["", f"{passed} of {len(checks)} targets hold."]
    profiled = [run for run in result["runs"] if run.get("profile")]
    if profiled:
        lines += [
            "",
            "## Where the qrsys server spent its time (py-spy)",
            "",
            "Shares of the samples of the server's busy threads during each run "
            "(self: the innermost function; qrsys: qrsys functions on the "
            "stack). Collapsed stacks are in the profile folder beside this file.",
        ]
        for run in profiled:
            summary = run["profile"]
            lines += ["", f"### {run['label']} ({summary['samples']} samples)", ""]
            lines.append(
                "- where: "
                + "; ".join(
                    f"{name} {share:.0%}"
                    for name, share in summary.get("processes", {}).items()
                )
            )
            lines.append(
                "- self: "
                + "; ".join(
                    f"`{name}` {share:.0%}" for name, share in summary["self"][:8]
                )
            )
            lines.append(
                "- qrsys: "
                + "; ".join(
                    f"`{name}` {share:.0%}"
                    for name, share in summary["qrsys_inclusive"][:10]
                )
            )
    lines += [
        "",
        "## How each number is made",
        "",
        *[f"- {note}" for note in result["notes"]],
        "",
        "## Phases",
        "",
        "| phase | seconds |",
        "|---|--:|",
        *[
            f"| {name} | {seconds:.1f} |"
            for name, seconds in result["phase_seconds"].items()
        ],
        f"| **total** | **{result['total_seconds']:.1f}** |",
        "",
    ]
    return "\n".join(lines)


def write(
    result: dict[str, Any], rows: list[Row], checks: list[Check], folder: Path
) -> tuple[Path, Path]:
    """Write the JSON and Markdown results; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_path = folder / f"{stamp}.json"
    md_path = folder / f"{stamp}.md"
    document = {
        **result,
        "rows": [row.__dict__ for row in rows],
        "checks": [{**check.__dict__, "verdict": check.verdict} for check in checks],
    }
    json_path.write_text(
        json.dumps(_clean(document), indent=2, default=_json_default) + "\n"
    )
    text = markdown(result, rows, checks)
    md_path.write_text(text)
    shutil.copyfile(md_path, folder / "latest.md")
    return json_path, md_path


def _clean(value: Any) -> Any:
    """``value`` with NaN and infinities as None, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _clean(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(item) for item in value]
    return value


def _json_default(value: object) -> object:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
