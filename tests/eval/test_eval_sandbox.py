"""The sandbox that runs generated code: every escape a test program tries is contained."""

from __future__ import annotations

import os
import socket
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest

from moa.eval.sandbox import SandboxLimits, run_python

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="the sandbox needs Linux")

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


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
