"""Loading a GGUF: the model parameters llama-cpp-python's constructor does not expose,
and the guard that keeps weights out of llama.cpp's AMX buffers where AMX faults."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from moa.providers import llama_load
from moa.providers.catalog import CATALOG, model_dir
from moa.providers.llama_load import (
    AmxFaultError,
    amx_runs,
    extra_buffers_default,
    load_llama,
    system_info,
)


class _Params:
    def __init__(self) -> None:
        self.use_extra_bufts = True
        self.n_gpu_layers = 0


def stand_in(system_info: bytes) -> Any:
    """A ``llama_cpp`` module whose ``Llama`` records the defaults it started from."""
    bindings = SimpleNamespace(llama_model_default_params=_Params)

    class Llama:
        def __init__(self, **kwargs: Any) -> None:
            self.kwargs = kwargs
            self.params = bindings.llama_model_default_params()

    return SimpleNamespace(
        llama_cpp=bindings, Llama=Llama, llama_print_system_info=lambda: system_info
    )


AMX = b"CPU : AVX2 = 1 | AVX512 = 1 | AMX_INT8 = 1 | OPENMP = 1 | REPACK = 1 |"
NO_AMX = b"CPU : AVX2 = 1 | AVX512 = 1 | OPENMP = 1 | REPACK = 1 |"


@pytest.mark.parametrize(("info", "expected"), [(AMX, False), (NO_AMX, True)])
def test_extra_buffers_are_off_only_in_builds_with_amx(info: bytes, expected: bool) -> None:
    llama_cpp = stand_in(info)
    assert extra_buffers_default(llama_cpp) is expected
    llm = load_llama(llama_cpp, Path("m.gguf"), n_ctx=1024, threads=2)
    assert llm.params.use_extra_bufts is expected
    assert llm.kwargs == {
        "model_path": "m.gguf",
        "n_ctx": 1024,
        "n_threads": 2,
        "n_threads_batch": 2,
        "verbose": False,
    }
    # The bindings' own defaults are back once the model is loaded.
    assert llama_cpp.llama_cpp.llama_model_default_params is _Params


def test_the_setting_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llama_load, "amx_runs", lambda path: True)  # AMX runs on this one
    llama_cpp = stand_in(AMX)
    llm = load_llama(llama_cpp, Path("m.gguf"), n_ctx=512, threads=1, extra_buffers=True)
    assert llm.params.use_extra_bufts is True
    llm = load_llama(stand_in(NO_AMX), Path("m.gguf"), n_ctx=512, threads=1, extra_buffers=False)
    assert llm.params.use_extra_bufts is False


def test_a_failed_load_restores_the_defaults_and_older_bindings_are_left_alone() -> None:
    llama_cpp = stand_in(AMX)

    class Broken:
        def __init__(self, **kwargs: Any) -> None:
            raise ValueError("not a GGUF file")

    llama_cpp.Llama = Broken
    with pytest.raises(ValueError, match="GGUF"):
        load_llama(llama_cpp, Path("m.gguf"), n_ctx=512, threads=1)
    assert llama_cpp.llama_cpp.llama_model_default_params is _Params

    # Bindings from before the field existed: the load goes on with their defaults.
    older = stand_in(AMX)
    older.llama_cpp.llama_model_default_params = lambda: SimpleNamespace(n_gpu_layers=0)
    llm = load_llama(older, Path("m.gguf"), n_ctx=512, threads=1)
    assert not hasattr(llm.params, "use_extra_bufts")


class _Logger:
    """llama-cpp-python's own log callback: records what reaches it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []

    def llama_log_callback(self, level: int, text: bytes, user_data: Any) -> None:
        self.lines.append(text)


def reporting(system_info: bytes, buffer: str) -> Any:
    """A stand-in whose ``Llama`` logs, through the current callback, where its weights went."""
    llama_cpp = stand_in(system_info)
    own = _Logger()
    current: dict[str, Any] = {"callback": own.llama_log_callback}
    closed: list[bool] = []

    class Llama:
        def __init__(self, **kwargs: Any) -> None:
            self.params = llama_cpp.llama_cpp.llama_model_default_params()
            line = f"load_tensors: {buffer:>12} model buffer size =    12.00 MiB\n"
            current["callback"](1, line.encode(), None)

        def close(self) -> None:
            closed.append(True)

    def log_set(callback: Any, user_data: Any) -> None:
        current["callback"] = callback

    llama_cpp.Llama = Llama
    llama_cpp._logger = own
    llama_cpp.llama_log_callback = lambda function: function
    llama_cpp.llama_log_set = log_set
    llama_cpp.current, llama_cpp.closed = current, closed
    return llama_cpp


def test_weights_that_reach_amx_buffers_unasked_close_the_model_instead_of_crashing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("DEBUG", logger="moa.providers.local")
    llama_cpp = reporting(AMX, "AMX")
    with pytest.raises(AmxFaultError, match="AMX buffers although extra buffers were off"):
        load_llama(llama_cpp, Path("m.gguf"), n_ctx=512, threads=1)
    assert llama_cpp.closed == [True]
    # The load's lines went to the library's log, not to llama-cpp-python's printer, which
    # is the one in place again.
    assert "load_tensors:          AMX model buffer size =    12.00 MiB" in caplog.messages
    assert llama_cpp._logger.lines == []
    assert llama_cpp.current["callback"] == llama_cpp._logger.llama_log_callback

    llm = load_llama(reporting(AMX, "CPU_Mapped"), Path("m.gguf"), n_ctx=512, threads=1)
    assert llm.params.use_extra_bufts is False


def test_extra_buffers_in_an_amx_build_need_a_probe_that_survived(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    verdicts: list[Path] = []

    def probe(path: Path) -> bool:
        verdicts.append(path)
        return runs

    monkeypatch.setattr(llama_load, "amx_runs", probe)
    runs = False
    with pytest.raises(AmxFaultError, match=r"extra_buffers is true.*GGML_AMX_INT8=OFF"):
        load_llama(reporting(AMX, "AMX"), Path("m.gguf"), n_ctx=512, threads=1, extra_buffers=True)
    runs = True
    llm = load_llama(
        reporting(AMX, "AMX"), Path("m.gguf"), n_ctx=512, threads=1, extra_buffers=True
    )
    assert llm.params.use_extra_bufts is True
    assert verdicts == [Path("m.gguf"), Path("m.gguf")]
    # Builds without AMX never need the probe.
    load_llama(reporting(NO_AMX, "CPU_REPACK"), Path("m.gguf"), n_ctx=512, threads=1)
    assert len(verdicts) == 2


def test_the_probe_reports_a_child_that_a_signal_killed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    crash = f"import os, signal; os.kill(os.getpid(), signal.{signal.SIGSEGV.name})"
    monkeypatch.setattr(llama_load, "_probe_command", lambda path: [sys.executable, "-c", crash])
    monkeypatch.setattr(llama_load, "_amx_verdicts", {})
    model = tmp_path / "m.gguf"
    assert amx_runs(model) is False
    # Asked once per file and process.
    monkeypatch.setattr(llama_load, "_probe_command", lambda path: [sys.executable, "-c", ""])
    assert amx_runs(model) is False
    assert amx_runs(tmp_path / "other.gguf") is True


# -- the real bindings --------------------------------------------------------------------------


def test_system_info_reads_whole_while_other_threads_read_it_too() -> None:
    """llama.cpp builds the text in one static buffer; unguarded, about 1 read in 100 from
    three threads came back cut short, and one cut before ``AMX_INT8 = 1`` had turned extra
    buffers on in an AMX build, whose kernels then crashed the process."""
    llama_cpp = pytest.importorskip("llama_cpp")
    whole = system_info(llama_cpp)
    seen: set[str] = set()

    def read() -> None:
        for _ in range(10_000):
            seen.add(system_info(llama_cpp))

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {whole}


@pytest.fixture
def smollm2_file() -> Path:
    pytest.importorskip("llama_cpp")
    path = model_dir() / CATALOG["smollm2-135m"].filename
    if not path.is_file():
        pytest.skip(f"SmolLM2-135M is not at {path}; run: moa models pull smollm2-135m")
    return path


@pytest.mark.slow
def test_a_real_load_reports_where_its_weights_went(
    smollm2_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import llama_cpp

    caplog.set_level("DEBUG", logger="moa.providers.local")
    llm = load_llama(llama_cpp, smollm2_file, n_ctx=256, threads=1)
    llm.close()
    (line,) = [r.getMessage() for r in caplog.records if "weights in" in r.getMessage()]
    assert "CPU" in line and "unreported" not in line and "AMX" not in line


@pytest.mark.slow
def test_the_real_probe_runs_a_model_with_extra_buffers(
    smollm2_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(llama_load, "_amx_verdicts", {})
    assert amx_runs(smollm2_file) is True


OUTPUT_DURING_LOADS = """
import sys, threading, time
from pathlib import Path
import llama_cpp
from moa.providers.llama_load import load_llama

done = threading.Event()

def loads():
    for _ in range(3):
        load_llama(llama_cpp, Path(sys.argv[1]), n_ctx=256, threads=1).close()
    done.set()

threading.Thread(target=loads).start()
n = 0
while not done.is_set():
    print(f"err {n}", file=sys.stderr, flush=True)
    print(f"out {n}", flush=True)
    n += 1
    time.sleep(0.0005)
print(f"total {n}", flush=True)
"""


@pytest.mark.slow
def test_what_other_threads_print_during_a_load_is_kept(smollm2_file: Path, tmp_path: Path) -> None:
    """llama-cpp-python sends the process's stdout and stderr to /dev/null while it loads;
    unguarded, about three lines in four printed meanwhile were lost (``--show-layers``
    panels among them)."""
    log = tmp_path / "both.txt"
    with log.open("w") as both:  # one file for both, as `> out.txt 2>&1` makes
        subprocess.run(
            [sys.executable, "-c", OUTPUT_DURING_LOADS, str(smollm2_file)],
            stdout=both,
            stderr=both,
            timeout=120,
            check=True,
        )
    lines = log.read_text().splitlines()
    total = int(lines[-1].split()[1])
    assert total > 20
    assert sum(line.startswith("err ") for line in lines) == total
    assert sum(line.startswith("out ") for line in lines) == total
    assert [line for line in lines if line.split()[0] not in ("err", "out", "total")] == []
