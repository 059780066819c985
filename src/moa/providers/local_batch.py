"""Several generations of one local model decoded together, one token of each per step.

On a CPU, decoding is bound by the memory bandwidth of reading the weights:
one step over four sequences reads them once, as a step over one does, so it
costs far less than four steps (``benchmarks/local/batch.py`` measures it).
:class:`BatchDecoder` runs a group of chat calls that way on a llama.cpp
context of its own, next to the model's ordinary one. Sequences with the same
prompt share its evaluation; each has its own sampler, seed, stop strings and
token budget, and leaves the batch as soon as it ends or is cancelled.

Sampling follows llama-cpp-python's chat completions at the same settings
(top-k 40, top-p, min-p 0.05, temperature, then a seeded draw; greedy at
temperature 0). Numbers in a batch are not bit-identical to those of a lone
call, so a sampled token can differ between the two.
"""

from __future__ import annotations

import codecs
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["BATCHABLE", "BatchCall", "BatchDecoder"]

BATCHABLE = frozenset({"temperature", "top_p", "max_tokens", "stop", "seed"})
"""Call parameters a batched sequence honours; a call with any other goes alone."""

_DEFAULT_TEMPERATURE = 0.2  # llama-cpp-python's chat completion default
_DEFAULT_TOP_P = 0.95
_TOP_K = 40
_MIN_P = 0.05


@dataclass
class BatchCall:
    """One call in a batch: its prompt, settings, and where its text goes."""

    prompt: list[int]
    kwargs: dict[str, Any]
    emit: Callable[[str], None]
    cancelled: Callable[[], bool]
    stop: list[str] = field(default_factory=list)
    """Stop strings: the template's and the call's."""
    on_end: Callable[[], None] = lambda: None
    """Called as the sequence leaves the batch (finished, or cancelled), before the others end."""
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def max_tokens(self) -> int | None:
        value = self.kwargs.get("max_tokens")
        return int(value) if value is not None and value > 0 else None


class _Text:
    """Turns token bytes into text, holding back what could be the start of a stop string."""

    def __init__(self, stop: Sequence[str], emit: Callable[[str], None]) -> None:
        self.stop = [s for s in stop if s]
        self.emit = emit
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""
        self.hold = max((len(s) for s in self.stop), default=1) - 1

    def add(self, piece: bytes) -> bool:
        """Add a token's bytes; True when a stop string has appeared (the text ends before it)."""
        self.pending += self.decoder.decode(piece)
        for stop in self.stop:
            at = self.pending.find(stop)
            if at >= 0:
                self.pending = self.pending[:at]
                self.flush()
                return True
        if len(self.pending) > self.hold:
            cut = len(self.pending) - self.hold
            self.emit(self.pending[:cut])
            self.pending = self.pending[cut:]
        return False

    def flush(self) -> None:
        self.pending += self.decoder.decode(b"", final=True)
        if self.pending:
            self.emit(self.pending)
        self.pending = ""


class BatchDecoder:
    """A llama.cpp context for ``n_seq`` sequences of one loaded model (``llm``)."""

    def __init__(self, llama_cpp: ModuleType, llm: Any, *, n_seq: int, n_ctx: int, threads: int):
        self.llama_cpp = llama_cpp
        self.llm = llm
        self.n_seq = n_seq
        self.n_ctx = n_ctx
        # The settings llama-cpp-python gave the model's own context, for the same numbers.
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = n_ctx
        params.n_batch = min(512, n_ctx)
        params.n_ubatch = params.n_batch
        params.n_seq_max = n_seq
        params.kv_unified = True  # one cache for all, sized n_ctx: prompts are often shared
        params.n_threads = threads
        params.n_threads_batch = threads
        self.n_batch = int(params.n_batch)
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context for batched decoding")
        self.batch = llama_cpp.llama_batch_init(max(self.n_batch, n_seq), 0, n_seq)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)

    def close(self) -> None:
        if self.ctx:
            self.llama_cpp.llama_batch_free(self.batch)
            self.llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def fits(self, sequences: Sequence[BatchCall]) -> bool:
        """Whether every sequence's prompt and token budget fit the shared cache together."""
        if len(sequences) > self.n_seq:
            return False
        prompts = {tuple(s.prompt) for s in sequences}
        budget = sum(s.max_tokens or self.n_ctx for s in sequences)
        return sum(len(p) for p in prompts) + budget <= self.n_ctx

    # -- decoding ---------------------------------------------------------------------

    def run(self, sequences: Sequence[BatchCall]) -> None:
        """Decode every sequence to its end; ``emit`` gets each one's text as it grows."""
        lib = self.llama_cpp
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        samplers = [self._sampler(s.kwargs) for s in sequences]
        try:
            logits_at, positions = self._prompts(sequences)
            texts = [_Text(s.stop, s.emit) for s in sequences]
            active = list(range(len(sequences)))
            while active:
                step: list[tuple[int, int]] = []
                for i in active:
                    seq = sequences[i]
                    if seq.cancelled():
                        continue
                    token = lib.llama_sampler_sample(samplers[i], self.ctx, logits_at[i])
                    if lib.llama_vocab_is_eog(self.vocab, token):
                        seq.finish_reason = "stop"
                        continue
                    seq.completion_tokens += 1
                    if texts[i].add(self._piece(token)):
                        seq.finish_reason = "stop"
                        continue
                    limit = seq.max_tokens
                    if limit is not None and seq.completion_tokens >= limit:
                        seq.finish_reason = "length"
                        continue
                    if positions[i] + 1 >= self.n_ctx:
                        seq.finish_reason = "length"
                        continue
                    step.append((i, token))
                going = {i for i, _ in step}
                for i in active:
                    if i not in going:
                        texts[i].flush()
                        sequences[i].on_end()
                active = [i for i, _ in step]
                if step:
                    self._decode_step(step, positions, logits_at)
        finally:
            for sampler in samplers:
                lib.llama_sampler_free(sampler)

    def _prompts(self, sequences: Sequence[BatchCall]) -> tuple[list[int], list[int]]:
        """Evaluate each distinct prompt once; sequences that share one get a copy of it.

        Returns, per sequence, the batch row holding its next-token logits and its
        next position. Every prompt but its last token is evaluated first; the last
        tokens of all go in one final decode, so that all rows exist together.
        """
        lib = self.llama_cpp
        owner: dict[tuple[int, ...], int] = {}
        for i, seq in enumerate(sequences):
            owner.setdefault(tuple(seq.prompt), i)
        for prompt, i in owner.items():
            self._evaluate(list(prompt[:-1]), i)
        batch = self.batch
        rows: dict[int, int] = {}
        for row, (prompt, i) in enumerate(owner.items()):
            self._put(row, prompt[-1], len(prompt) - 1, i, logits=True)
            rows[i] = row
        batch.n_tokens = len(owner)
        self._decode()
        memory = lib.llama_get_memory(self.ctx)
        logits_at = []
        for i, seq in enumerate(sequences):
            source = owner[tuple(seq.prompt)]
            if source != i:
                lib.llama_memory_seq_cp(memory, source, i, -1, -1)
            logits_at.append(rows[source])
        return logits_at, [len(s.prompt) for s in sequences]

    def _evaluate(self, tokens: list[int], seq_id: int) -> None:
        """Feed ``tokens`` (positions 0...) to sequence ``seq_id``, in chunks, without logits."""
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            for j, token in enumerate(chunk):
                self._put(j, token, start + j, seq_id, logits=False)
            self.batch.n_tokens = len(chunk)
            self._decode()

    def _put(self, row: int, token: int, position: int, seq_id: int, *, logits: bool) -> None:
        batch = self.batch
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = logits

    def _decode_step(
        self, step: list[tuple[int, int]], positions: list[int], logits_at: list[int]
    ) -> None:
        for row, (i, token) in enumerate(step):
            self._put(row, token, positions[i], i, logits=True)
            positions[i] += 1
            logits_at[i] = row
        self.batch.n_tokens = len(step)
        self._decode()

    def _decode(self) -> None:
        status = self.llama_cpp.llama_decode(self.ctx, self.batch)
        if status != 0:
            raise RuntimeError(f"llama_decode failed with status {status} (context window full?)")

    def _piece(self, token: int) -> bytes:
        return bytes(self.llm.detokenize([token]))

    def _sampler(self, kwargs: dict[str, Any]) -> Any:
        lib = self.llama_cpp
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        temperature = kwargs.get("temperature")
        temperature = _DEFAULT_TEMPERATURE if temperature is None else float(temperature)
        if temperature <= 0:
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
            return chain
        top_p = kwargs.get("top_p")
        seed = kwargs.get("seed")
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_top_k(_TOP_K))
        lib.llama_sampler_chain_add(
            chain, lib.llama_sampler_init_top_p(_DEFAULT_TOP_P if top_p is None else top_p, 1)
        )
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_min_p(_MIN_P, 1))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(temperature))
        seed = random.randrange(2**31) if seed is None else int(seed) & 0xFFFFFFFF
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed))
        return chain
