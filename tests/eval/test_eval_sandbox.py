"""The sandbox that runs generated code: every escape a test program tries is contained."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import stat
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moa.eval import _sandbox_boot, sandbox
from moa.eval.sandbox import SandboxLimits, run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
# mount_setattr(2), which makes the root read-only, came with Linux 5.12.
KERNEL = tuple(int(part) for part in os.uname().release.split(".")[:2] if part.isdigit())
MOUNT_SETATTR = KERNEL >= (5, 12)

READ_ONLY = f"OSError {errno.EROFS}"
"""How an attempt to write fails on a read-only mount."""
_TRIES = """
import os
def attempt(name, action):
    try:
        action()
        print(name, "done")
    except OSError as exc:
        print(name, type(exc).__name__, exc.errno)
"""


def _running_with(marker: str) -> list[int]:
    """Pids of live processes whose command line holds ``marker`` (zombies do not count)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _sleeper(marker: str) -> str:
    """Code that starts a long-lived child and a double-forked daemon in its own session."""
    return textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execv(sys.executable,
                         [sys.executable, "-c", "import time; time.sleep(1000)", "{marker}"])
            os._exit(0)
        time.sleep(0.5)
        print("started")
        """
    )


def test_a_normal_program_runs_in_its_own_directory() -> None:
    result = run_python("import os; print(os.getcwd()); print(os.environ['HOME'])")
    assert result.ok
    cwd, home = result.stdout.split()
    assert cwd == home
    assert "moa-sandbox-" in cwd
    assert not Path(cwd).exists()  # removed afterwards


def test_the_exit_status_and_stderr_of_a_failing_program_are_reported() -> None:
    result = run_python("assert 1 == 2, 'nope'")
    assert not result.ok
    assert result.returncode == 1
    assert "AssertionError: nope" in result.stderr


def test_an_infinite_loop_is_killed_at_the_wall_clock_limit() -> None:
    started = time.monotonic()
    result = run_python("while True:\n    pass\n", SandboxLimits(timeout=1.0))
    assert result.timed_out
    assert result.returncode is None
    assert not result.ok
    assert time.monotonic() - started < 5


def test_processes_started_by_the_program_do_not_outlive_it() -> None:
    marker = f"moa-sandbox-test-{uuid.uuid4().hex}"
    result = run_python(_sleeper(marker))
    assert result.ok, result.stderr
    assert result.stdout.strip() == "started"
    time.sleep(0.2)
    assert _running_with(marker) == []


def test_processes_started_by_a_program_that_times_out_are_killed_too() -> None:
    marker = f"moa-sandbox-test-{uuid.uuid4().hex}"
    code = _sleeper(marker) + "\nwhile True:\n    pass\n"
    result = run_python(code, SandboxLimits(timeout=2.0))
    assert result.timed_out
    time.sleep(0.2)
    assert _running_with(marker) == []


def test_a_huge_allocation_fails_in_the_child_only() -> None:
    result = run_python("data = bytearray(10 * 1024**3)\nprint('allocated')")
    assert not result.ok
    assert "MemoryError" in result.stderr
    assert "allocated" not in result.stdout
    assert run_python("print(sum(range(10)))").stdout.strip() == "45"  # the parent is fine


def test_a_file_bigger_than_the_limit_cannot_be_written() -> None:
    code = "open('big', 'wb').write(b'x' * (2 << 20))\nprint('written')"
    result = run_python(code, SandboxLimits(file_bytes=1 << 20))
    assert not result.ok
    assert "written" not in result.stdout


@pytest.mark.skipif(not ROOT, reason="only a root caller can switch the program to another uid")
def test_files_outside_the_working_directory_survive(tmp_path: Path) -> None:
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    code = textwrap.dedent(
        f"""
        import os, shutil
        for attempt in (lambda: os.remove({str(precious)!r}),
                        lambda: open({str(precious)!r}, "w").write("gone"),
                        lambda: shutil.rmtree({str(tmp_path)!r})):
            try:
                attempt()
                print("done")
            except OSError as exc:
                print(type(exc).__name__)
        """
    )
    result = run_python(code)
    assert result.isolation.user == "nobody"
    assert result.isolation.files_protected
    assert "done" not in result.stdout
    assert precious.read_text() == "keep me"


def test_the_network_is_unreachable_when_a_namespace_is_in_force() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = textwrap.dedent(
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=3).close()
                print("connected")
            except OSError as exc:
                print("refused", exc)
            """
        )
        result = run_python(code)
    if ROOT:
        # A root caller can always make a network namespace: it must be in force.
        assert result.isolation.network_namespace
    if not result.isolation.network_namespace:
        pytest.skip("this OS refused a new network namespace")
    assert result.ok, result.stderr
    assert result.stdout.startswith("refused")


def _as_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    """No switch to ``nobody``: the program runs as the caller, so only the read-only root helps.

    Under a root caller the program then keeps root, as it does when ``nobody`` can run no Python.
    """
    monkeypatch.setattr(sandbox, "_unprivileged_ids", lambda: None)


def _require_read_only_root(result: sandbox.SandboxResult) -> None:
    if ROOT and MOUNT_SETATTR:
        # A root caller can always make a mount namespace, and the kernel has mount_setattr.
        assert result.isolation.read_only_root, result.stderr
    if not result.isolation.read_only_root:
        pytest.skip("this OS refused a read-only root (no mount namespace, or Linux before 5.12)")


def _changes_outside(directory: Path) -> str:
    """Code that tries to delete, overwrite and create files in ``directory``."""
    precious, new = str(directory / "precious.txt"), str(directory / "new.txt")
    return _TRIES + textwrap.dedent(
        f"""
        attempt("delete", lambda: os.remove({precious!r}))
        attempt("overwrite", lambda: open({precious!r}, "w").write("gone"))
        attempt("create", lambda: open({new!r}, "w").write("new"))
        """
    )


OUTSIDE_REFUSED = [f"{attempt} {READ_ONLY}" for attempt in ("delete", "overwrite", "create")]


def test_a_program_running_as_the_caller_cannot_change_files_outside_its_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _as_caller(monkeypatch)
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    result = run_python(_changes_outside(tmp_path))
    _require_read_only_root(result)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == OUTSIDE_REFUSED
    # A program with root could make the mounts writable again, so it does not count as safe.
    assert result.isolation.files_protected == (not ROOT)
    assert precious.read_text() == "keep me"
    assert [path.name for path in tmp_path.iterdir()] == ["precious.txt"]


@pytest.mark.parametrize("user", ["caller", "nobody"])
def test_a_program_writes_its_own_directory_and_tmpdir_but_not_tmp(
    user: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if user == "caller":
        _as_caller(monkeypatch)
    elif not ROOT:
        pytest.skip("only a root caller's program runs as nobody")
    escaped = Path(f"/tmp/moa-sandbox-test-{uuid.uuid4().hex}")
    code = _TRIES + textwrap.dedent(
        f"""
        import tempfile
        with open("note.txt", "w") as handle:
            handle.write("in its directory")
        with tempfile.NamedTemporaryFile("w", delete=False) as handle:
            handle.write("in TMPDIR")
        print(open("note.txt").read(), "/", open(handle.name).read())
        attempt("tmp", lambda: open({str(escaped)!r}, "w").write("escaped"))
        """
    )
    try:
        result = run_python(code)
    finally:
        escaped.unlink(missing_ok=True)
    _require_read_only_root(result)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() == ["in its directory / in TMPDIR", f"tmp {READ_ONLY}"]


@pytest.mark.skipif(not ROOT, reason="the program runs as nobody only for a root caller")
def test_a_program_cannot_make_the_root_writable_again() -> None:
    number = _sandbox_boot.SYS_MOUNT_SETATTR.get(os.uname().machine)
    if number is None:
        pytest.skip("no known mount_setattr number for this machine")
    escaped = Path(f"/tmp/moa-sandbox-test-{uuid.uuid4().hex}")
    # Its own user namespace gives the program every capability over a copy of its mounts,
    # but the kernel locks the read-only flag of each mount in such a copy.
    code = _TRIES + textwrap.dedent(
        f"""
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)

        class MountAttr(ctypes.Structure):
            _fields_ = [(name, ctypes.c_uint64)
                        for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]

        def report(name, code):
            print(name, "done" if code == 0 else "refused")

        if libc.unshare(0x10000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS
            report("remount", libc.mount(None, b"/", None, ctypes.c_ulong(0x1020), None))
            writable = MountAttr(attr_clr=1)  # MOUNT_ATTR_RDONLY
            report("setattr", libc.syscall(ctypes.c_long({number}), ctypes.c_long(-100), b"/",
                                           ctypes.c_long(0x8000), ctypes.byref(writable),
                                           ctypes.c_size_t(ctypes.sizeof(writable))))
        attempt("tmp", lambda: open({str(escaped)!r}, "w").write("escaped"))
        """
    )
    try:
        result = run_python(code)
        assert not escaped.exists()
    finally:
        escaped.unlink(missing_ok=True)
    _require_read_only_root(result)
    assert result.ok, result.stderr
    assert result.stdout.splitlines() in (
        ["remount refused", "setattr refused", f"tmp {READ_ONLY}"],
        [f"tmp {READ_ONLY}"],  # no user namespace of its own: it cannot even try
    )


def _world_readable(path: Path) -> bool:
    real = path.resolve()
    if not real.stat().st_mode & stat.S_IROTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in real.parents)


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory of ``nobody``'s, outside pytest's own (root only) temporary directory."""
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("this system has no user nobody")
    directory = Path(tempfile.mkdtemp(prefix="moa-sandbox-test-"))
    try:
        os.chown(directory, entry.pw_uid, entry.pw_gid)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _run_as(directory: Path, code: str, interpreter: str) -> dict[str, Any]:
    """``run_python(code)`` in a fork of this process that became the owner of ``directory``."""
    owner = directory.stat()
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the fork never returns into pytest
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(owner.st_gid)
            os.setuid(owner.st_uid)
            sys.executable = interpreter  # the sandbox starts its launcher with this Python
            result = run_python(code)
            answer: dict[str, Any] = {
                "stdout": result.stdout,
                "stderr": result.stderr,
                "isolation": result.isolation.__dict__,
            }
        except BaseException as exc:
            answer = {"error": repr(exc)}
        with os.fdopen(writer, "w") as out:
            json.dump(answer, out)
        os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as answers:
        answer = json.loads(answers.read() or '{"error": "the fork died"}')
    os.waitpid(pid, 0)
    assert "error" not in answer, answer["error"]
    return answer


@pytest.mark.skipif(not ROOT, reason="only root can start a process as another user")
def test_a_caller_without_root_gets_a_read_only_root_too(nobody_dir: Path) -> None:
    interpreter = sandbox._interpreter(dropping=True)
    if not interpreter:
        pytest.skip("no Python that nobody can run")
    if not _world_readable(sandbox._BOOT):
        pytest.skip(f"nobody cannot read {sandbox._BOOT}")
    precious = nobody_dir / "precious.txt"
    precious.write_text("keep me")
    os.chown(precious, nobody_dir.stat().st_uid, nobody_dir.stat().st_gid)
    code = _changes_outside(nobody_dir) + textwrap.dedent(
        """
        with open("note.txt", "w") as handle:
            handle.write("written")
        print(open("note.txt").read())
        """
    )
    answer = _run_as(nobody_dir, code, interpreter)
    isolation = answer["isolation"]
    assert isolation["user"] == "nobody"  # the caller itself: no switch of user
    if not isolation["read_only_root"]:
        assert not isolation["files_protected"]
        pytest.skip("this OS refused nobody a read-only root (no user namespace, or old Linux)")
    assert isolation["files_protected"]
    assert answer["stdout"].splitlines() == [*OUTSIDE_REFUSED, "written"], answer
    assert precious.read_text() == "keep me"
    assert [path.name for path in nobody_dir.iterdir()] == ["precious.txt"]
