"""The first process of a sandbox (run as a script by :mod:`moa.eval.sandbox`; stdlib only).

It runs with the caller's privileges, so it can still create namespaces: it
moves its future children into a new network namespace (no interface but a
loopback that stays down, so nothing can be reached) and a new PID namespace,
then forks. The fork becomes process 1 of that PID namespace. It enters a mount
namespace of its own and makes every mount in it read-only except a bind mount
of the program's working directory; then it sets the resource limits, gives up
root for an unprivileged uid, asks to be killed with this process, and executes
the program. When process 1 ends, the kernel kills every other process in its
namespace, so nothing the program started can outlive it, not even a
double-forked daemon in its own session.

The read-only view is the fork's alone: this process stays in the mount
namespace it started in, so it can still write the status file. What each step
achieved goes to that file (JSON), which the program cannot write to; the fork
reports its part through a pipe before it executes the program. Argument: the
JSON configuration written by ``sandbox.py``.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_RDONLY = 0x1
# mount_setattr(2), Linux 5.12+; glibc before 2.36 has no wrapper for it.
SYS_MOUNT_SETATTR = {"x86_64": 442, "aarch64": 442}

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


class _MountAttr(ctypes.Structure):
    """``struct mount_attr`` of <linux/mount.h> (its first version, 32 bytes)."""

    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _mount_setattr(libc: Any, path: bytes, flags: int, attr: _MountAttr) -> bool:
    number = SYS_MOUNT_SETATTR.get(os.uname().machine)
    if number is None:
        return False
    args = (ctypes.c_long(AT_FDCWD), ctypes.c_char_p(path), ctypes.c_long(flags))
    size = ctypes.c_size_t(ctypes.sizeof(attr))
    result: int = libc.syscall(ctypes.c_long(number), *args, ctypes.byref(attr), size)
    return result == 0


def _read_only_root(libc: Any, workdir: str) -> bool:
    """Make every mount read-only but the working directory, in a new mount namespace.

    False when the OS refuses a step, and the program then sees the files as
    it would without this: no mount namespace (no root, no user namespace), or
    no ``mount_setattr`` (before Linux 5.12, a machine other than x86_64 or
    aarch64, or a seccomp filter that blocks it). As root the new namespace is
    owned by the initial user namespace; without root, by the user namespace
    :func:`_namespaces` entered, whose capabilities this fork holds until it
    executes the program. Either way no mount event propagates back out (``/``
    is made private first), and a program that makes a user namespace of its
    own gets a copy whose read-only flags are locked.
    """
    path = os.fsencode(workdir)
    if libc.unshare(CLONE_NEWNS) != 0:
        return False
    if libc.mount(None, b"/", None, ctypes.c_ulong(MS_REC | MS_PRIVATE), None) != 0:
        return False
    # The bind mount comes before the read-only flag, so it starts writable and unlocked.
    if libc.mount(path, path, None, ctypes.c_ulong(MS_BIND | MS_REC), None) != 0:
        return False
    if not _mount_setattr(libc, b"/", AT_RECURSIVE, _MountAttr(attr_set=MOUNT_ATTR_RDONLY)):
        return False
    if not _mount_setattr(libc, path, 0, _MountAttr(attr_clr=MOUNT_ATTR_RDONLY)):
        # The root is read-only already and cannot be given back: the program cannot run
        # as it would elsewhere, so it does not run.
        raise OSError(ctypes.get_errno(), "the working directory stayed read-only")
    return True


def _limit(name: str, value: int) -> None:
    try:
        resource.setrlimit(_LIMITS[name], (value, value))
    except (ValueError, OSError):
        _soft, hard = resource.getrlimit(_LIMITS[name])
        # Cannot raise the hard limit without privileges: clamp to it.
        if hard != resource.RLIM_INFINITY and value > hard:
            resource.setrlimit(_LIMITS[name], (hard, hard))


def _become_program(config: dict[str, Any], libc: Any, report: int) -> None:
    """In the forked child: a read-only root, limits, an unprivileged uid, then the program."""
    read_only = _read_only_root(libc, config["workdir"])
    os.write(report, b"1" if read_only else b"0")
    os.close(report)
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
    report_read, report_write = os.pipe()  # close-on-exec: the program never holds it
    pid = os.fork()
    if pid == 0:
        try:
            os.close(report_read)
            _become_program(config, libc, report_write)
        except BaseException as exc:  # anything here means the program never ran
            os.write(2, f"sandbox: could not start the program: {exc!r}\n".encode())
        os._exit(126)
    os.close(report_write)
    read_only_root = os.read(report_read, 1) == b"1"  # empty if the fork died first
    os.close(report_read)
    status = {
        "child_pid": pid,
        "network_namespace": bool(flags & CLONE_NEWNET),
        "pid_namespace": bool(flags & CLONE_NEWPID),
        "user_namespace": bool(flags & CLONE_NEWUSER),
        "read_only_root": read_only_root,
    }
    with open(config["status"], "w", encoding="utf-8") as handle:
        json.dump(status, handle)
    _, code = os.waitpid(pid, 0)
    if os.WIFSIGNALED(code):
        return 128 + os.WTERMSIG(code)
    return os.WEXITSTATUS(code)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
