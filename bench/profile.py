"""Optional sampling profiles of the qrsys server, with py-spy.

With ``--profile``, every timed load run against qrsys is recorded by
``py-spy record`` (non-blocking, 100 samples a second, the threads that are
not idle, in the server and its child processes) into collapsed stacks under
the results folder, and summarised: the functions the server's threads were
in (self) and under (inclusive), as a share of the samples. py-spy is not a
dependency of qrsys: install it into the virtualenv (``pip install py-spy``)
to use this. Profiling costs the server some CPU, so a profiled run's
numbers are for finding hot spots, not for the table.
"""

from __future__ import annotations

import contextlib
import math
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*)\)$")
_SITE = re.compile(r".*/(?:site|dist)-packages/")


def find_py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


def _short(frame: str) -> str:
    """``function (path)`` as ``path:function`` with short paths."""
    match = _FRAME.match(frame)
    if match is None:
        return frame
    path = _SITE.sub("", match.group("file"))
    if "/qrsys_grpc/" in path:
        path = "qrsys_grpc/" + path.split("/qrsys_grpc/", 1)[1]
    elif path.startswith("/") and "/lib/python" in path:
        path = path.split("/lib/python", 1)[1].split("/", 1)[-1]
    return f"{path}:{match.group('function')}"


class Recording:
    """One py-spy recording in progress."""

    def __init__(self, executable: str, pid: int, seconds: float, path: Path) -> None:
        self.path = path
        self._process = subprocess.Popen(  # noqa: S603 (py-spy, fixed arguments)
            [
                executable,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(max(1, math.ceil(seconds))),
                "--rate",
                "100",
                "--nonblocking",
                "--subprocesses",
                "--nolineno",
                "--format",
                "raw",
                "--output",
                str(path),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def finish(self) -> dict[str, Any] | None:
        """Wait for py-spy and summarise what it wrote (None if nothing)."""
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if not self.path.exists():
            return None
        return summarise(self.path)

    def cancel(self) -> None:
        """Stop py-spy now."""
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._process.wait()


def summarise(path: Path, top: int = 12) -> dict[str, Any]:
    """The busiest functions of a collapsed-stack file, as shares of samples.

    ``self`` counts the innermost frame of each sample; ``inclusive`` counts
    each function once per sample it appears in; ``qrsys_inclusive`` keeps
    only qrsys's own functions (less start-up's, which are under everything).
    """
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    where: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        # With --subprocesses, each stack starts with "process <pid>:<command>"
        # frames: one for the server, a second one in its child processes.
        raw = stack.split(";")
        nesting = sum(1 for frame in raw if frame.startswith("process "))
        frames = [_short(frame) for frame in raw if not frame.startswith("process ")]
        if not frames:
            continue
        where["child processes" if nesting > 1 else "server process"] += count
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def shares(counter: Counter[str], keep: Any = None) -> list[tuple[str, float]]:
        items = [
            (name, n) for name, n in counter.most_common() if keep is None or keep(name)
        ]
        return [(name, round(n / total, 3)) for name, n in items[:top]] if total else []

    return {
        "samples": total,
        "file": path.name,
        "processes": {name: round(n / total, 3) for name, n in where.items()}
        if total
        else {},
        "self": shares(own),
        "inclusive": shares(
            inclusive, lambda name: not name.startswith(("<", "threading"))
        ),
        "qrsys_inclusive": shares(
            inclusive,
            lambda name: (
                name.startswith("qrsys_grpc/")
                and not name.startswith("qrsys_grpc/server.py:")
            ),
        ),
    }
