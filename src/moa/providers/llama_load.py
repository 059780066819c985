"""Loading a GGUF file into llama-cpp-python, kept off llama.cpp's AMX kernels where they fault.

``llama_cpp.Llama`` builds its model parameters itself and exposes only some of
them. One that matters here is ``use_extra_bufts``: whether llama.cpp may move
weights into CPU "extra" buffers with repacked layouts (``CPU_REPACK``, and
``AMX`` in builds made on CPUs with Intel AMX: pip compiles llama.cpp for the CPU
it runs on). The AMX matrix product faults (``ldtilecfg`` in
``ggml_backend_amx_mul_mat``) on machines that report AMX but do not run it —
virtual machines among them — and takes the process down with a segmentation
fault at the first product over more than one row. So in builds with AMX, extra
buffers stay off unless ``local: {extra_buffers: true}`` asks for them and a
child process has shown that AMX runs here (:func:`amx_runs`).

Three pieces of llama.cpp state are process-wide, and every use of them here
happens under one lock (:data:`_LLAMA_GLOBALS`):

- ``llama_print_system_info()`` writes its text into one static buffer. Models
  loading on several threads at once (a mixture's proposers each load on their
  own worker) used to read it while another thread was rewriting it; a read that
  missed ``AMX_INT8 = 1`` turned extra buffers on, and the model's weights went
  to AMX buffers.
- The bindings' ``llama_model_default_params``, swapped for the time of a load.
- The log callback, through which a load reports the buffer types its weights went
  to. Every load checks them: AMX buffers that nothing allowed close the model and
  raise instead of crashing later.
- The process's standard output and error: to keep a quiet load quiet,
  llama-cpp-python points file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``)
  at ``/dev/null`` for the time of the load, for the whole process, so whatever
  another thread printed meanwhile was lost (an agent's panel of ``--show-layers``,
  a server's log line). Loads here leave them alone: llama.cpp's own messages go
  through the log callback, which the bindings keep quiet anyway.
"""

from __future__ import annotations

import ctypes
import logging
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

from moa.errors import ConfigError

__all__ = [
    "AmxFaultError",
    "amx_runs",
    "extra_buffers_default",
    "has_amx_kernels",
    "load_llama",
    "system_info",
]

logger = logging.getLogger("moa.providers.local")

_LLAMA_GLOBALS = threading.RLock()
"""Held around every use of llama.cpp's process-wide state (see the module's docstring)."""

_BUFFER_LINE = re.compile(r"(\S+) model buffer size")
_GGML_ERROR = 4  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_AMX_BUFFER = "AMX"
_PROBE_TIMEOUT_S = 600.0
_amx_verdicts: dict[Path, bool] = {}
"""Per model file: whether the AMX probe ran it (this process asks each file once)."""

_BUILD_WITHOUT_AMX = (
    "CMAKE_ARGS='-DGGML_NATIVE=OFF -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON "
    "-DGGML_AVX512_BF16=ON -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_BF16=OFF' "
    "pip install --force-reinstall --no-cache-dir llama-cpp-python"
)


class AmxFaultError(ConfigError):
    """A model's weights reached llama.cpp's AMX buffers where AMX is not known to run."""


def system_info(llama_cpp: ModuleType) -> str:
    """``llama_print_system_info()``, read while no other thread can rewrite its buffer."""
    with _LLAMA_GLOBALS:
        info = llama_cpp.llama_print_system_info()
        return info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)


def has_amx_kernels(llama_cpp: ModuleType) -> bool:
    """Whether this llama.cpp build was compiled with its AMX kernels."""
    return "AMX_INT8 = 1" in system_info(llama_cpp)


def extra_buffers_default(llama_cpp: ModuleType) -> bool:
    """Whether extra (repacked) weight buffers are on by default: not in a build with AMX."""
    return not has_amx_kernels(llama_cpp)


def load_llama(
    llama_cpp: ModuleType,
    path: Path,
    *,
    n_ctx: int,
    threads: int,
    extra_buffers: bool | None = None,
) -> Any:
    """A ``llama_cpp.Llama`` for ``path``; ``extra_buffers`` ``None`` means the safe default.

    Raises :class:`AmxFaultError` when extra buffers were asked for in a build with AMX
    and AMX does not run here, or when the weights went to AMX buffers nonetheless.
    """
    amx_build = has_amx_kernels(llama_cpp)
    if extra_buffers is None:
        extra_buffers = not amx_build
    amx_allowed = extra_buffers and amx_build and amx_runs(path)
    if extra_buffers and amx_build and not amx_allowed:
        raise AmxFaultError(
            f"local.extra_buffers is true, but this llama.cpp build's AMX kernels crash on "
            f"this machine (a child process that loaded {path.name} with them died); remove "
            f"the setting, or for the CPU_REPACK layouts install a build without AMX: "
            f"{_BUILD_WITHOUT_AMX}"
        )
    with (
        _LLAMA_GLOBALS,
        _model_defaults(llama_cpp, use_extra_bufts=extra_buffers),
        _outputs_left_alone(llama_cpp),
        _load_log(llama_cpp) as buffers,
    ):
        llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
    logger.debug("loaded %s: weights in %s", path.name, ", ".join(buffers) or "unreported")
    if _AMX_BUFFER in buffers and not amx_allowed:
        llm.close()
        raise AmxFaultError(
            f"llama.cpp put {path.name}'s weights into AMX buffers although extra buffers "
            f"were {'on' if extra_buffers else 'off'}; its AMX kernels are not known to run "
            f"on this machine, so the model was not used"
        )
    return llm


def amx_runs(path: Path) -> bool:
    """Whether a child process can load ``path`` with extra buffers and evaluate a prompt.

    The AMX kernels fault at the first matrix product over several rows, which
    kills the process: only a child can find out. Asked once per file and process.
    """
    path = path.resolve()
    with _LLAMA_GLOBALS:
        known = _amx_verdicts.get(path)
    if known is not None:
        return known
    try:
        done = subprocess.run(
            _probe_command(path), capture_output=True, timeout=_PROBE_TIMEOUT_S, check=False
        )
        runs = done.returncode == 0
        outcome = f"exit {done.returncode}"
    except subprocess.TimeoutExpired:
        runs, outcome = False, f"no answer in {_PROBE_TIMEOUT_S:.0f}s"
    logger.info("AMX probe with %s: %s", path.name, outcome)
    with _LLAMA_GLOBALS:
        _amx_verdicts[path] = runs
    return runs


def _probe_command(path: Path) -> list[str]:
    return [sys.executable, "-m", "moa.providers.amx_probe", str(path)]


@contextmanager
def _model_defaults(llama_cpp: ModuleType, **fields: Any) -> Iterator[None]:
    """Make ``Llama()`` start from default model parameters with ``fields`` changed.

    ``Llama.__init__`` takes its starting point from the bindings module's
    ``llama_model_default_params``; that function is swapped for the time of one
    load. Fields an older llama-cpp-python does not have are left alone.
    """
    bindings = llama_cpp.llama_cpp
    with _LLAMA_GLOBALS:
        original = bindings.llama_model_default_params
        known = {k: v for k, v in fields.items() if hasattr(original(), k)}

        def defaults() -> Any:
            params = original()
            for key, value in known.items():
                setattr(params, key, value)
            return params

        bindings.llama_model_default_params = defaults
        try:
            yield
        finally:
            bindings.llama_model_default_params = original


@contextmanager
def _outputs_left_alone(llama_cpp: ModuleType) -> Iterator[None]:
    """Keep llama-cpp-python from redirecting the process's stdout and stderr during a load."""
    modules = [getattr(llama_cpp, name, None) for name in ("llama", "_internals")]
    patched = [m for m in modules if m is not None and hasattr(m, "suppress_stdout_stderr")]
    with _LLAMA_GLOBALS:
        originals = [m.suppress_stdout_stderr for m in patched]
        for module in patched:
            module.suppress_stdout_stderr = _LeaveOutputs
        try:
            yield
        finally:
            for module, original in zip(patched, originals, strict=True):
                module.suppress_stdout_stderr = original


class _LeaveOutputs:
    """Stands in for llama-cpp-python's ``suppress_stdout_stderr``: changes nothing."""

    def __init__(self, disable: bool = True) -> None:
        self.disable = disable

    def __enter__(self) -> _LeaveOutputs:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


@contextmanager
def _load_log(llama_cpp: ModuleType) -> Iterator[list[str]]:
    """The buffer types a load reports (``CPU_Mapped``, ``CPU_REPACK``, ``AMX``...).

    llama.cpp names them in its log; for the time of the load a callback collects
    them and sends every line to this module's logger, at DEBUG (``MOA_LOG=debug``
    shows them) or, for llama.cpp's errors, WARNING. llama-cpp-python's own callback
    is not given them: it reads llama.cpp's warnings as errors and prints them
    (its level numbers predate llama.cpp's), which a quiet load must not do.
    Bindings without that callback report nothing.
    """
    buffers: list[str] = []
    own = getattr(getattr(llama_cpp, "_logger", None), "llama_log_callback", None)
    callback_type = getattr(llama_cpp, "llama_log_callback", None)
    if own is None or callback_type is None:
        yield buffers
        return

    def collect(level: int, text: bytes | None, user_data: Any) -> None:
        if not text:
            return
        line = text.decode("utf-8", "replace")
        match = _BUFFER_LINE.search(line)
        if match:
            buffers.append(match.group(1))
        if line.strip():
            logger.log(logging.WARNING if level == _GGML_ERROR else logging.DEBUG, line.rstrip())

    callback = callback_type(collect)
    with _LLAMA_GLOBALS:
        llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
        try:
            yield buffers
        finally:
            llama_cpp.llama_log_set(own, ctypes.c_void_p(0))
