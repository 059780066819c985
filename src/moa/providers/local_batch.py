"""Several generations of one local model decoded together, one token of each per step.

On a CPU, decoding is bound by the memory bandwidth of reading the weights:
one step over four sequences reads them once, as a step over one does, so it
costs far less than four steps (``benchmarks/local/batch.py`` measures it).
:class:`BatchDecoder` runs a group of chat calls that way on a llama.cpp
context of its own, next to the model's ordinary one. Sequences with the same
prompt share its evaluation; each has its own sampler, seed, stop strings and
token budget, and leaves the batch as soon as it ends or is cancelled (also while
its prompt is being evaluated, between two chunks of it). A call
that arrives while the batch runs takes a free row between two steps
(continuous batching), so the batch stays full while calls keep coming.

Sampling follows llama-cpp-python's chat completions at the same settings
(top-k 40, top-p, min-p 0.05, temperature, then a seeded draw; greedy at
temperature 0). Numbers in a batch are not bit-identical to those of a lone
call, so a sampled token can differ between the two.
"""

from __future__ import annotations

import codecs
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from types import ModuleType
from typing import Any

__all__ = ["BATCHABLE", "Accept", "BatchCall", "BatchDecoder", "BatchStats", "More"]

logger = logging.getLogger(__name__)

_LOG_EVERY_S = 60.0
"""A running batch logs what it did (at DEBUG) this often, and when it ends."""

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


@dataclass
class BatchStats:
    """What a batch context has done: prompt evaluation and decoding steps, and their time."""

    calls: int = 0
    prompt_tokens: int = 0
    """Prompt tokens evaluated (a prompt shared by rows that entered together counts once)."""
    prompt_s: float = 0.0
    steps: int = 0
    row_steps: int = 0
    """Tokens decoded: each step decodes one token of every row in it."""
    step_s: float = 0.0
    passes: int = 0
    """Runs of consecutive sequence ids in the steps: llama.cpp reads the weights once each."""
    wall_s: float = 0.0

    def __sub__(self, other: BatchStats) -> BatchStats:
        return BatchStats(
            **{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)}
        )

    def describe(self) -> str:
        rows = self.row_steps / self.steps if self.steps else 0.0
        return (
            f"{self.calls} calls in {self.wall_s:.0f}s; "
            f"{self.prompt_tokens} prompt tokens in {self.prompt_s:.1f}s "
            f"({self.prompt_tokens / self.prompt_s if self.prompt_s else 0:.0f}/s); "
            f"{self.steps} steps of {rows:.1f} rows "
            f"({self.passes / self.steps if self.steps else 0:.1f} passes) in {self.step_s:.1f}s "
            f"({self.row_steps / self.step_s if self.step_s else 0:.1f} tokens/s); "
            f"{max(self.wall_s - self.prompt_s - self.step_s, 0):.1f}s besides"
        )


Accept = Callable[[BatchCall], bool]
More = Callable[[int, Accept], list[BatchCall]]
"""Asked between steps while rows are free: ``more(free rows, accept)`` returns the
calls that join, each one that ``accept`` took (it says whether the call fits)."""


@dataclass(eq=False)
class _Row:
    """A sequence in the running batch: its call, llama.cpp sequence id and sampler."""

    call: BatchCall
    seq_id: int
    sampler: Any
    text: _Text
    position: int
    owner: _Row | None = None
    """The row whose evaluated prompt this one copied into its own cache."""
    logits_at: int = -1

    @property
    def group(self) -> _Row:
        return self.owner or self


class BatchDecoder:
    """A llama.cpp context for ``n_seq`` sequences of one loaded model (``llm``), each with a
    cache of ``row_ctx`` cells."""

    def __init__(
        self,
        llama_cpp: ModuleType,
        llm: Any,
        *,
        n_seq: int,
        row_ctx: int,
        threads: int,
        label: str = "a model",
    ) -> None:
        self.llama_cpp = llama_cpp
        self.llm = llm
        self.label = label
        self.n_seq = n_seq
        self.row_ctx = row_ctx
        """Cache cells of one row: each sequence has a cache of its own."""
        # The settings llama-cpp-python gave the model's own context, for the same numbers.
        params = type(llm.context_params).from_buffer_copy(llm.context_params)
        params.n_ctx = self.row_ctx * n_seq
        params.n_batch = min(512, params.n_ctx)
        params.n_ubatch = params.n_batch
        params.n_seq_max = n_seq
        # A cache per sequence, not one shared by all: in a shared cache every token attends
        # over the cells of every sequence (masked), which made evaluating four different
        # 1,800-token prompts 1.6x slower, and decoding after them 1.2x (Qwen2.5-Coder-1.5B,
        # 2 threads). Rows with the same prompt still evaluate it once and copy its cells.
        params.kv_unified = False
        params.n_threads = threads
        params.n_threads_batch = threads
        self.n_batch = int(params.n_batch)
        self.ctx = llama_cpp.llama_init_from_model(llm.model, params)
        if not self.ctx:
            raise RuntimeError("llama.cpp could not create a context for batched decoding")
        self.batch = llama_cpp.llama_batch_init(max(self.n_batch, n_seq), 0, n_seq)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.stats = BatchStats()
        """Everything this context has done (see :meth:`run` for its log lines)."""

    def close(self) -> None:
        if self.ctx:
            self.llama_cpp.llama_batch_free(self.batch)
            self.llama_cpp.llama_free(self.ctx)
            self.ctx = None

    def fits(self, sequences: Sequence[BatchCall]) -> bool:
        """Whether there are rows for the sequences, and each prompt and budget fit a row."""
        return len(sequences) <= self.n_seq and all(self._fits_row(s) for s in sequences)

    def _fits_row(self, call: BatchCall) -> bool:
        return len(call.prompt) + (call.max_tokens or self.row_ctx) <= self.row_ctx

    # -- decoding ---------------------------------------------------------------------

    def run(self, sequences: Sequence[BatchCall], more: More | None = None) -> None:
        """Decode every sequence to its end; ``emit`` gets each one's text as it grows.

        Between steps, while a row is free, ``more`` may hand over further calls
        (continuous batching): those its ``accept`` took, which fit the cache with
        their whole budgets in a row of their own, so no step can run out of room. A newcomer's
        prompt is evaluated at once; its first token is sampled at the next step.
        """
        lib = self.llama_cpp
        lib.llama_memory_clear(lib.llama_get_memory(self.ctx), True)
        free = list(range(self.n_seq - 1, -1, -1))  # sequence ids, the lowest taken first
        alive: list[_Row] = []  # rows holding a sampler, freed as they leave or at the end
        started = logged_at = time.perf_counter()
        logged = replace(self.stats)
        try:
            rows: list[_Row] = []
            joining = list(sequences)
            while True:
                now = time.perf_counter()
                if now - logged_at >= _LOG_EVERY_S:
                    self.stats.wall_s += now - logged_at
                    self._log(self.stats - logged, "running")
                    logged, logged_at = replace(self.stats), now
                step: list[tuple[_Row, int]] = []
                for row in rows:
                    token = self._next(row)
                    if token is None:
                        self._leave(row, free, alive)
                    else:
                        step.append((row, token))
                going = [row for row, _ in step]
                if more is not None and len(going) + len(joining) < self.n_seq:
                    joining += more(self.n_seq - len(going) - len(joining), self._fits_row)
                entering = self._enter(joining, free, alive)
                self.stats.calls += len(entering)
                joining = []
                if not step and not entering:
                    return
                self._decode_step(step, entering)
                rows = [*going, *entering]
        finally:
            for row in alive:
                lib.llama_sampler_free(row.sampler)
            self.stats.wall_s += time.perf_counter() - logged_at
            self._log(self.stats - logged, f"ended after {time.perf_counter() - started:.0f}s")

    def _log(self, stats: BatchStats, state: str) -> None:
        if stats.calls or stats.steps or stats.prompt_tokens:
            logger.debug("batch of %s (%s): %s", self.label, state, stats.describe())

    def _next(self, row: _Row) -> int | None:
        """Sample ``row``'s next token; None when its answer ends here (or it was cancelled)."""
        lib = self.llama_cpp
        call = row.call
        if call.cancelled():
            return None
        token = int(lib.llama_sampler_sample(row.sampler, self.ctx, row.logits_at))
        if lib.llama_vocab_is_eog(self.vocab, token):
            call.finish_reason = "stop"
            return None
        call.completion_tokens += 1
        if row.text.add(self._piece(token)):
            call.finish_reason = "stop"
            return None
        limit = call.max_tokens
        if (
            limit is not None and call.completion_tokens >= limit
        ) or row.position + 1 >= self.row_ctx:
            call.finish_reason = "length"
            return None
        return token

    def _leave(self, row: _Row, free: list[int], alive: list[_Row]) -> None:
        """The row's answer is over: its last text goes out; its sampler, cells and id are freed.

        Freed now, not when the batch ends: a batch that keeps taking calls outlives many rows.
        The row with the highest id then moves into the freed one (its cells are copied), so
        the ids in use stay 0, 1, 2, ...: a step over them is one pass over the weights.
        """
        lib = self.llama_cpp
        memory = lib.llama_get_memory(self.ctx)
        alive.remove(row)
        lib.llama_sampler_free(row.sampler)
        row.text.flush()
        row.call.on_end()
        lib.llama_memory_seq_rm(memory, row.seq_id, -1, -1)
        freed = row.seq_id
        top = max(alive, key=lambda other: other.seq_id, default=None)
        if top is not None and top.seq_id > freed:
            lib.llama_memory_seq_cp(memory, top.seq_id, freed, -1, -1)
            lib.llama_memory_seq_rm(memory, top.seq_id, -1, -1)
            freed, top.seq_id = top.seq_id, freed
        free.append(freed)
        free.sort(reverse=True)

    def _enter(self, calls: Sequence[BatchCall], free: list[int], alive: list[_Row]) -> list[_Row]:
        """Rows for ``calls``, with each distinct prompt evaluated but for its last token.

        Calls with the same prompt share one evaluation: the first owns it; the
        others copy its cells once the last token is in (:meth:`_decode_step`).
        """
        owners: dict[tuple[int, ...], _Row] = {}
        rows = []
        for call in calls:
            key = tuple(call.prompt)
            row = _Row(
                call,
                -1,
                self._sampler(call.kwargs),
                _Text(call.stop, call.emit),
                len(call.prompt),
                owners.get(key),
            )
            alive.append(row)
            rows.append(row)
            if row.owner is None:
                owners[key] = row
        # Owners take the lower ids: the step that decodes their prompts' last tokens (the
        # copies have none yet) then covers consecutive ids, one pass over the weights.
        for row in sorted(rows, key=lambda row: row.owner is not None):
            row.seq_id = free.pop()
        for owner in owners.values():
            group = [row for row in rows if row.group is owner]
            if not self._evaluate(
                owner.call.prompt[:-1],
                owner.seq_id,
                partial(_all_cancelled, group),
            ):
                for row in group:  # every call waiting for this prompt was cancelled
                    rows.remove(row)
                    self._leave(row, free, alive)
        return rows

    def _decode_step(self, step: list[tuple[_Row, int]], entering: list[_Row]) -> None:
        """One decode: each going row's new token and each new prompt's last token."""
        owners = [row for row in entering if row.owner is None]
        tokens = [(row, token, row.position) for row, token in step]
        tokens += [(row, row.call.prompt[-1], row.position - 1) for row in owners]
        for row, _ in step:
            row.position += 1
        # In order of sequence id: with a cache per sequence, llama.cpp puts into one pass over
        # the weights only sequences whose ids follow one another in the batch, so a batch in
        # any other order (rows leave and join in any order) costs a pass for every break.
        tokens.sort(key=lambda entry: entry[0].seq_id)
        for index, (row, token, position) in enumerate(tokens):
            self._put(index, token, position, row.seq_id, logits=True)
            row.logits_at = index
        self.batch.n_tokens = len(tokens)
        started = time.perf_counter()
        self._decode()
        self.stats.step_s += time.perf_counter() - started
        self.stats.steps += 1
        self.stats.passes += _runs([row.seq_id for row, _, _ in tokens])
        self.stats.row_steps += len(step)
        self.stats.prompt_tokens += len(owners)  # the last token of each new prompt
        memory = self.llama_cpp.llama_get_memory(self.ctx)
        for row in entering:
            if row.owner is not None:
                self.llama_cpp.llama_memory_seq_cp(memory, row.owner.seq_id, row.seq_id, -1, -1)
                row.logits_at = row.owner.logits_at

    def _evaluate(
        self, tokens: list[int], seq_id: int, abandoned: Callable[[], bool] = lambda: False
    ) -> bool:
        """Feed ``tokens`` (positions 0...) to sequence ``seq_id``, in chunks, without logits.

        Before each chunk ``abandoned`` is asked whether anyone still wants the
        prompt: a long prompt takes minutes on a small CPU, and a cancelled call
        (Ctrl-C, a client gone) should not hold the batch that long. False when
        it gave up.
        """
        started = time.perf_counter()
        done = 0
        try:
            for start in range(0, len(tokens), self.n_batch):
                if abandoned():
                    return False
                chunk = tokens[start : start + self.n_batch]
                for j, token in enumerate(chunk):
                    self._put(j, token, start + j, seq_id, logits=False)
                self.batch.n_tokens = len(chunk)
                self._decode()
                done += len(chunk)
            return not abandoned()
        finally:
            self.stats.prompt_s += time.perf_counter() - started
            self.stats.prompt_tokens += done

    def _put(self, row: int, token: int, position: int, seq_id: int, *, logits: bool) -> None:
        batch = self.batch
        batch.token[row] = token
        batch.pos[row] = position
        batch.n_seq_id[row] = 1
        batch.seq_id[row][0] = seq_id
        batch.logits[row] = logits

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


def _all_cancelled(rows: Sequence[_Row]) -> bool:
    return all(row.call.cancelled() for row in rows)


def _runs(ids: Sequence[int]) -> int:
    """How many runs of consecutive numbers ``ids`` (sorted) makes: [0, 1, 2, 5, 6] makes 2."""
    return sum(1 for i, value in enumerate(ids) if i == 0 or value != ids[i - 1] + 1)
