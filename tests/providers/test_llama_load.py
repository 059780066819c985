"""Loading a GGUF: the model parameters llama-cpp-python's constructor does not expose."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from moa.providers.llama_load import extra_buffers_default, load_llama


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


def test_the_setting_overrides_the_default() -> None:
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
