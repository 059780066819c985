"""The batch decoder's bookkeeping over a stand-in for llama.cpp's C API (no model file).

The stand-in records every ``llama_decode``; its "model" says token 7 until a
call's budget runs out. What is checked is what the decoder feeds it: which
sequences, which chunks of which prompts, and when it stops.
"""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from moa.providers.local_batch import BatchCall, BatchDecoder

N_BATCH = 512


class _Params:
    @classmethod
    def from_buffer_copy(cls, other: object) -> _Params:
        return cls()


class _Batch:
    def __init__(self, size: int) -> None:
        self.token = [0] * size
        self.pos = [0] * size
        self.n_seq_id = [0] * size
        self.seq_id = [[0] for _ in range(size)]
        self.logits = [False] * size
        self.n_tokens = 0


class FakeLlama:
    """Just the C functions the decoder calls; ``on_decode`` runs after each decode."""

    def __init__(self) -> None:
        self.decodes: list[list[tuple[int, int]]] = []
        """Per decode, the (sequence id, position) of each token fed."""
        self.on_decode: Callable[[int], None] = lambda count: None

    def llama_decode(self, ctx: object, batch: _Batch) -> int:
        n = batch.n_tokens
        self.decodes.append([(batch.seq_id[i][0], batch.pos[i]) for i in range(n)])
        self.on_decode(len(self.decodes))
        return 0

    def llama_batch_init(self, size: int, embd: int, n_seq: int) -> _Batch:
        return _Batch(size)

    def __getattr__(self, name: str) -> Callable[..., Any]:
        answers: dict[str, Any] = {"llama_sampler_sample": 7, "llama_vocab_is_eog": False}
        return lambda *args: answers.get(name, object())


def _decoder(lib: FakeLlama, n_seq: int = 2) -> BatchDecoder:
    llm = SimpleNamespace(context_params=_Params(), model=object(), detokenize=lambda t: b"x")
    return BatchDecoder(lib, llm, n_seq=n_seq, row_ctx=4096, threads=1)  # type: ignore[arg-type]


def _call(prompt: list[int], cancelled: list[bool], out: list[str], ended: list[bool]) -> BatchCall:
    return BatchCall(
        prompt,
        {"temperature": 0.0, "max_tokens": 3},
        out.append,
        lambda: cancelled[0],
        on_end=lambda: ended.append(True),
    )


def _prompt_chunks(lib: FakeLlama, seq_len: int) -> int:
    """Decodes that fed a prompt chunk (only steps feed a single token per sequence)."""
    return sum(1 for fed in lib.decodes if len(fed) == min(N_BATCH, seq_len))


def test_a_call_cancelled_during_its_prompt_stops_it_between_chunks() -> None:
    lib = FakeLlama()
    gone, stays = [False], [False]
    out_gone: list[str] = []
    out_stays: list[str] = []
    ended: list[bool] = []
    long_a, long_b = list(range(1, 1501)), list(range(2001, 3501))  # 3 chunks each

    def cancel_first(count: int) -> None:
        if count == 1:
            gone[0] = True  # Ctrl-C after the first chunk of the first prompt

    lib.on_decode = cancel_first
    decoder = _decoder(lib)
    decoder.run([_call(long_a, gone, out_gone, ended), _call(long_b, stays, out_stays, ended)])
    chunks = [fed for fed in lib.decodes if len(fed) > 1]
    # One chunk of the cancelled prompt, then the other prompt's three chunks only.
    assert [len(fed) for fed in chunks] == [512, 512, 512, 475]
    # The cancelled call left before the next prompt's evaluation and freed sequence 0,
    # where the other call moved (ids in use stay 0, 1, ...: one pass over the weights).
    assert chunks[1][0] == (0, 0) and chunks[3][-1] == (0, 1498)
    assert out_gone == [] and "".join(out_stays) == "xxx" and ended == [True, True]
    steps = [fed for fed in lib.decodes if len(fed) == 1]
    assert steps and all(fed[0][0] == 0 for fed in steps)
    assert decoder.stats.prompt_tokens == 512 + 1499 + 1


def test_a_batch_whose_calls_are_all_cancelled_ends_without_finishing_any_prompt() -> None:
    lib = FakeLlama()
    flags = [False]
    ended: list[bool] = []
    lib.on_decode = lambda count: flags.__setitem__(0, True)
    prompt = list(range(1, 1501))
    calls = [_call(prompt, flags, [], ended) for _ in range(2)]  # one shared evaluation
    _decoder(lib).run(calls)
    assert len(lib.decodes) == 1 and ended == [True, True]


def test_a_prompt_shared_with_a_call_still_waiting_is_evaluated_in_full() -> None:
    lib = FakeLlama()
    gone, stays = [False], [False]
    out: list[str] = []
    lib.on_decode = lambda count: gone.__setitem__(0, True)
    prompt = list(range(1, 1501))
    _decoder(lib).run([_call(prompt, gone, [], []), _call(prompt, stays, out, [])])
    assert [len(fed) for fed in lib.decodes if len(fed) > 2] == [512, 512, 475]
    assert "".join(out) == "xxx"
