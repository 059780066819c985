"""Run untrusted Python (model-written code under test) in a contained child process.

The program runs in a fresh temporary directory (its cwd, ``HOME`` and
``TMPDIR``) with an empty environment and stdin closed, under resource limits
(address space, CPU time, processes, file size, open files, no core dumps), in
its own session. On Linux it also gets a new network namespace (no network at
all, not even loopback), a new PID namespace (when the program ends, the
kernel kills everything it started) and a new mount namespace in which every
mount but its directory is read-only, so it cannot create, change or delete
files anywhere else; when the caller is root it also runs as ``nobody``. The
wall-clock limit kills the whole process group; so does the end of a normal
run, for the processes a system without PID namespaces would leave behind.

:attr:`SandboxResult.isolation` records what was actually in force, since the
OS decides: without root there is no uid change; without root or user
namespaces there are no new namespaces (the network stays reachable, the files
writable); before Linux 5.12 the root stays writable. Whether the caller's
files were safe is :attr:`Isolation.files_protected`. See docs/evaluation.md
for what is and is not isolated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moa.errors import ConfigError

__all__ = ["Isolation", "SandboxLimits", "SandboxResult", "arun_python", "run_python"]

_BOOT = Path(__file__).with_name("_sandbox_boot.py")
_UNPRIVILEGED = "nobody"
_INTERPRETERS = ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3")


@dataclass(frozen=True)
class SandboxLimits:
    """What one program may use."""

    timeout: float = 10.0
    """Wall-clock seconds before the whole process group is killed."""
    memory_bytes: int = 1 << 30
    """Address space of each process (``RLIMIT_AS``): a bigger allocation fails in the child."""
    cpu_seconds: int | None = None
    """CPU seconds (``RLIMIT_CPU``); ``None``: the timeout rounded up, plus one."""
    processes: int = 64
    """Processes of the sandbox's uid (``RLIMIT_NPROC``): stops fork bombs."""
    file_bytes: int = 16 << 20
    """Largest file the program may write (``RLIMIT_FSIZE``)."""
    open_files: int = 64
    output_bytes: int = 64 << 10
    """Kept of stdout and of stderr each (the rest is dropped)."""

    def rlimits(self) -> dict[str, int]:
        cpu = self.cpu_seconds if self.cpu_seconds is not None else math.ceil(self.timeout) + 1
        return {
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": cpu,
            "processes": self.processes,
            "file_bytes": self.file_bytes,
            "open_files": self.open_files,
            "core_bytes": 0,
        }


@dataclass(frozen=True)
class Isolation:
    """What the OS let the sandbox enforce for one run."""

    network_namespace: bool
    pid_namespace: bool
    user: str
    """The user the program ran as (``nobody`` when the caller is root)."""
    interpreter: str
    read_only_root: bool
    """Every mount but the program's own directory was read-only to it."""
    files_protected: bool
    """The program could not change or delete the files of the user running ``moa``.

    True when a root caller's program ran as ``nobody``, who may write only
    where anyone may, or when the root was read-only to a program without root
    (one with root could make it writable again). False: it could do to files
    whatever that user can.
    """


@dataclass(frozen=True)
class SandboxResult:
    """How a program ended."""

    returncode: int | None
    """Exit status (128 + signal when killed by one); ``None`` when timed out."""
    stdout: str
    stderr: str
    timed_out: bool
    duration_s: float
    isolation: Isolation

    @property
    def ok(self) -> bool:
        """It finished in time with exit status 0."""
        return not self.timed_out and self.returncode == 0

    def failure(self) -> str:
        """Why it failed, in one line: ``timeout``, the last line of its error output (at
        most 200 characters, e.g. ``AssertionError``), or its exit status."""
        if self.timed_out:
            return "timeout"
        lines = [line for line in self.stderr.strip().splitlines() if line.strip()]
        return lines[-1][:200] if lines else f"exit status {self.returncode}"


def _world_executable(path: str) -> bool:
    """Whether a uid owning nothing can run ``path`` (every directory on the way searchable)."""
    real = os.path.realpath(path)
    try:
        if not os.stat(real).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(real)
        while True:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False


def _unprivileged_ids() -> tuple[int, int] | None:
    """The uid/gid to drop to when running as root (``None``: not root, or no such user)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(_UNPRIVILEGED)
    except KeyError:
        return None
    return entry.pw_uid, entry.pw_gid


def _interpreter(dropping: bool) -> str:
    """This Python, unless the unprivileged uid cannot reach it (e.g. one under /root)."""
    if not dropping or _world_executable(sys.executable):
        return sys.executable
    for candidate in _INTERPRETERS:
        if os.path.exists(candidate) and _world_executable(candidate):
            return candidate
    return ""


def _plan() -> tuple[tuple[int, int] | None, str]:
    ids = _unprivileged_ids()
    interpreter = _interpreter(ids is not None)
    if not interpreter:
        # Root, but no Python the unprivileged uid can run: keep root rather than fail.
        return None, sys.executable
    return ids, interpreter


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` as a Python program in the sandbox and wait for it (or its timeout)."""
    if sys.platform != "linux":
        raise ConfigError(
            "running generated code needs Linux (namespaces, rlimits); "
            f"this is {sys.platform}: run the evaluation on a Linux machine or container"
        )
    limits = limits or SandboxLimits()
    ids, interpreter = _plan()
    base = Path(tempfile.mkdtemp(prefix="moa-sandbox-"))
    try:
        return _run_in(base, code, limits, ids, interpreter)
    finally:
        shutil.rmtree(base, ignore_errors=True)


async def arun_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """:func:`run_python` in a worker thread, so the event loop keeps going."""
    return await asyncio.to_thread(run_python, code, limits)


def _run_in(
    base: Path,
    code: str,
    limits: SandboxLimits,
    ids: tuple[int, int] | None,
    interpreter: str,
) -> SandboxResult:
    # base (root-owned, searchable only) holds the status and output files; work is the
    # program's own directory.
    base.chmod(0o711)
    work = base / "work"
    work.mkdir()
    program = work / "main.py"
    program.write_text(code, "utf-8")
    if ids is not None:
        os.chown(work, *ids)
        os.chown(program, *ids)
    status_path = base / "status.json"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(work),
        "TMPDIR": str(work),
        "LANG": "C.UTF-8",
    }
    config = {
        "program": str(program),
        "workdir": str(work),
        "status": str(status_path),
        "limits": limits.rlimits(),
        "uid": None if ids is None else ids[0],
        "gid": None if ids is None else ids[1],
        "interpreter": interpreter,
        "env": env,
    }
    started = time.monotonic()
    with (base / "stdout").open("wb") as out, (base / "stderr").open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-I", "-B", str(_BOOT), json.dumps(config)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            cwd=work,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
        finished = _wait_unreaped(process.pid, started + limits.timeout)
        status = _read_status(status_path)
        _kill_everything(process, status, finished)
        timed_out = not finished
        returncode: int | None = None if timed_out else process.returncode
    duration = time.monotonic() - started
    read_only_root = bool(status.get("read_only_root"))
    kept_root = ids is None and os.geteuid() == 0
    isolation = Isolation(
        network_namespace=bool(status.get("network_namespace")),
        pid_namespace=bool(status.get("pid_namespace")),
        user=_UNPRIVILEGED if ids is not None else _user_name(),
        interpreter=interpreter,
        read_only_root=read_only_root,
        # Not read from ``user``: a caller that is itself ``nobody`` protects nothing.
        files_protected=ids is not None or (read_only_root and not kept_root),
    )
    return SandboxResult(
        returncode if returncode is None or returncode >= 0 else 128 - returncode,
        _read_text(base / "stdout", limits.output_bytes),
        _read_text(base / "stderr", limits.output_bytes),
        timed_out,
        round(duration, 3),
        isolation,
    )


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Wait until the launcher exits or the deadline passes, leaving it unreaped.

    An exited but unreaped launcher keeps its pid, which is also its process
    group's id, so killing that group afterwards cannot hit a stranger.
    """
    pause = 0.002
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.05)


def _kill_everything(
    process: subprocess.Popen[bytes], status: dict[str, object], finished: bool
) -> None:
    """SIGKILL whatever is left of the program, then reap the launcher.

    After a normal exit too: a program may leave processes behind in its group.
    On a timeout the program's first process is killed by pid as well (it may
    have left the group): the launcher is stopped first, so it cannot reap that
    process and free its pid before the kill.
    """
    if not finished:
        _quietly(os.kill, process.pid, signal.SIGSTOP)
        launcher_alive = (
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None
        )
        child = status.get("child_pid")
        if launcher_alive and isinstance(child, int):
            _quietly(os.kill, child, signal.SIGKILL)
    _quietly(os.killpg, process.pid, signal.SIGKILL)
    process.wait()


def _quietly(kill: Callable[[int, int], None], pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        kill(pid, sig)


def _read_status(path: Path) -> dict[str, object]:
    try:
        status = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _read_text(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(limit)
    except OSError:
        return ""
    return data.decode("utf-8", errors="replace")


def _user_name() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())
