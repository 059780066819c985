"""Loading a GGUF file into llama-cpp-python, with the model parameters its constructor hides.

``llama_cpp.Llama`` builds its model parameters itself and exposes only some of
them. One that matters here is ``use_extra_bufts``: whether llama.cpp may move
weights into CPU "extra" buffers with repacked layouts (``CPU_REPACK``, and
``AMX`` on CPUs with Intel AMX). A build made on an AMX machine (pip compiles
llama.cpp for the CPU it runs on) uses the AMX kernels, and those crash the
process with a segmentation fault in ``ggml_backend_amx_mul_mat`` on machines
that do not grant the program AMX — virtual machines among them — at the first
matrix product. So by default extra buffers stay off in builds with AMX and on
everywhere else; ``local: {extra_buffers: ...}`` decides otherwise.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["extra_buffers_default", "load_llama"]

_DEFAULTS_SWAP = threading.Lock()
"""Held while the bindings' default model parameters are replaced (one load at a time)."""


def extra_buffers_default(llama_cpp: ModuleType) -> bool:
    """Whether extra (repacked) weight buffers are safe to use: not in a build with AMX."""
    info = llama_cpp.llama_print_system_info()
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return "AMX_INT8 = 1" not in text


def load_llama(
    llama_cpp: ModuleType,
    path: Path,
    *,
    n_ctx: int,
    threads: int,
    extra_buffers: bool | None = None,
) -> Any:
    """A ``llama_cpp.Llama`` for ``path``; ``extra_buffers`` ``None`` means the safe default."""
    if extra_buffers is None:
        extra_buffers = extra_buffers_default(llama_cpp)
    with _model_defaults(llama_cpp, use_extra_bufts=extra_buffers):
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )


@contextmanager
def _model_defaults(llama_cpp: ModuleType, **fields: Any) -> Iterator[None]:
    """Make ``Llama()`` start from default model parameters with ``fields`` changed.

    ``Llama.__init__`` takes its starting point from the bindings module's
    ``llama_model_default_params``; that function is swapped for the time of one
    load. Fields an older llama-cpp-python does not have are left alone.
    """
    bindings = llama_cpp.llama_cpp
    with _DEFAULTS_SWAP:
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
