"""The first process of a sandbox (run as a script by :mod:`moa.eval.sandbox`; stdlib only).

It runs with the caller's privileges, so it can still create namespaces: it
moves its future children into a new network namespace (no interface but a
loopback that stays down, so nothing can be reached) and a new PID namespace,
then forks. The fork becomes process 1 of that PID namespace: it sets the
resource limits, gives up root for an unprivileged uid, asks to be killed with
this process, and executes the program. When process 1 ends, the kernel kills
every other process in its namespace, so nothing the program started can
outlive it, not even a double-forked daemon in its own session.

What each step achieved goes to the status file (JSON), which the program
cannot write to. Argument: the JSON configuration written by ``sandbox.py``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1

_LIMITS = {
    "memory_bytes": resource.RLIMIT_AS,
    "cpu_seconds": resource.RLIMIT_CPU,
    "processes": resource.RLIMIT_NPROC,
    "file_bytes": resource.RLIMIT_FSIZE,
    "open_files": resource.RLIMIT_NOFILE,
    "core_bytes": resource.RLIMIT_CORE,
}


def _namespaces(libc: Any) -> int:
    """Enter the strongest set of new namespaces the OS allows; the flags that worked."""
    if os.geteuid() == 0:
        attempts = [CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC, CLONE_NEWNET, CLONE_NEWPID]
    else:
        # Without root, a user namespace (where the kernel allows them) grants the rest.
        user = CLONE_NEWUSER
        attempts = [user | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC, user | CLONE_NEWNET]
    for flags in attempts:
        if libc.unshare(flags) == 0:
            return flags
    return 0


def _limit(name: str, value: int) -> None:
    try:
        resource.setrlimit(_LIMITS[name], (value, value))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(_LIMITS[name])
        # Cannot raise the hard limit without privileges: clamp to it.
        if hard != resource.RLIM_INFINITY and value > hard:
            resource.setrlimit(_LIMITS[name], (hard, hard))


def _become_program(config: dict[str, Any], libc: Any) -> None:
    """In the forked child: limits, an unprivileged uid, then the program itself."""
    for name, value in config["limits"].items():
        _limit(name, int(value))
    uid, gid = config.get("uid"), config.get("gid")
    if uid is not None and gid is not None:
        os.setgroups([])
        os.setgid(int(gid))
        os.setuid(int(uid))
    # Set after the uid change, which clears it: the program dies with this process.
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    os.chdir(config["workdir"])
    interpreter = config["interpreter"]
    argv = [interpreter, "-I", "-B", config["program"]]
    os.execve(interpreter, argv, config["env"])


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _namespaces(libc)
    pid = os.fork()
    if pid == 0:
        try:
            _become_program(config, libc)
        except BaseException as exc:  # anything here means the program never ran
            os.write(2, f"sandbox: could not start the program: {exc!r}\n".encode())
        os._exit(126)
    status = {
        "child_pid": pid,
        "network_namespace": bool(flags & CLONE_NEWNET),
        "pid_namespace": bool(flags & CLONE_NEWPID),
        "user_namespace": bool(flags & CLONE_NEWUSER),
    }
    with open(config["status"], "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    _, code = os.waitpid(pid, 0)
    if os.WIFSIGNALED(code):
        return 128 + os.WTERMSIG(code)
    return os.WEXITSTATUS(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
