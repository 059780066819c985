"""A persistent call cache: wrap any provider so that a repeated call costs nothing.

The key of a call is its provider name, model, messages and every sampling
parameter (seed and ``extra`` included); the value is the completion text,
its usage and finish reason, and how long the original call took. Reuse is
deterministic by design: a call with ``temperature > 0`` and no seed is cached
by its key like any other, so a rerun gets back the very same sample instead
of drawing a new one. That is what makes a resumed evaluation free; give
distinct seeds to calls that must be distinct samples.

>>> store = SQLiteCallStore("calls.sqlite")                         # doctest: +SKIP
>>> registry = CachingRegistry(store=store).add("fake", FakeProvider())  # doctest: +SKIP

Only completed calls are stored: errors, cancellations and interrupted streams
never are. Identical calls running at the same time are made once.

``cache_only=True`` turns the cache into a replay: a call it holds is answered,
any other raises :class:`~moa.errors.CacheMissError`, which ends the run, and
no model is ever called, so none needs to be installed and no key needs to be
valid. That is how a committed call log is shown to rerun a report for free.

``recording_calls()`` notes the key of every call made inside it that goes
through a cache, answered or filled, so that a run can write exactly the calls
it used as a call log (``--record-calls``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from moa.errors import CacheMissError, ConfigError, MissingAPIKeyError
from moa.files import private_file
from moa.providers.base import Provider
from moa.providers.registry import ProviderRegistry
from moa.providers.settings import LocalSettings, ProviderSettings
from moa.types import Completion, CompletionChunk, CompletionRequest, Usage, estimate_tokens

__all__ = [
    "DEFAULT_CACHE",
    "KEY_VERSION",
    "ROW_FIELDS",
    "CacheHit",
    "CachedCall",
    "CachedProvider",
    "CachingRegistry",
    "CallRecording",
    "SQLiteCallStore",
    "cache_key",
    "recording_calls",
    "recording_hits",
    "registry_with_cache",
]

DEFAULT_CACHE = Path("~/.cache/moa/calls.sqlite")
"""The call cache ``moa eval``, ``moa select`` and ``moa cache`` share unless told otherwise."""
_SCHEMA_VERSION = 1
KEY_VERSION = _SCHEMA_VERSION
"""Version of :func:`cache_key`'s digest; rows made under another version never match."""
ROW_FIELDS = (
    "key",
    "provider",
    "model",
    "text",
    "prompt_tokens",
    "completion_tokens",
    "calls",
    "finish_reason",
    "latency_s",
    "ttft_s",
    "created",
)
"""The columns of a stored call, in table order (see :meth:`SQLiteCallStore.rows`)."""


@dataclass(frozen=True)
class CachedCall:
    """What the cache keeps of one completed call."""

    text: str
    usage: Usage | None
    """``None`` when the provider reported none (the engine then estimates it, as it did)."""
    finish_reason: str | None
    latency_s: float
    ttft_s: float | None = None


@dataclass(frozen=True)
class CacheHit:
    """A call answered from the cache, with the timing of the call that filled it."""

    provider: str
    model: str
    text: str
    latency_s: float
    ttft_s: float | None

    @property
    def model_id(self) -> str:
        return f"{self.provider}:{self.model}"


# Hits are reported to whoever opened ``recording_hits`` in the current task
# (child tasks inherit the context), so concurrent runs never see each other's hits.
_HITS: ContextVar[list[CacheHit] | None] = ContextVar("moa_cache_hits", default=None)


T = TypeVar("T")


def _restore(var: ContextVar[T], token: Token[T]) -> None:
    """Undo ``var.set`` when a recording block ends, wherever it ends.

    A block inside a coroutine that was abandoned (a run stopped by Ctrl-C or
    SIGTERM leaves some behind) ends when the garbage collector closes the
    coroutine, in whatever context the collector runs: the context the variable
    was set in is then gone, there is nothing to restore, and ``reset`` would
    raise an error that surfaces as an unraisable exception somewhere else.
    """
    with suppress(ValueError):
        var.reset(token)


@contextmanager
def recording_hits() -> Iterator[list[CacheHit]]:
    """Collect the cache hits of every call made inside the block (and its child tasks)."""
    hits: list[CacheHit] = []
    token = _HITS.set(hits)
    try:
        yield hits
    finally:
        _restore(_HITS, token)


@dataclass
class CallRecording:
    """The keys of the calls a run used, per cache file (see :func:`recording_calls`)."""

    keys: dict[Path, set[str]] = field(default_factory=dict)

    def add(self, store: SQLiteCallStore, key: str) -> None:
        self.keys.setdefault(store.path, set()).add(key)

    def __len__(self) -> int:
        return sum(len(keys) for keys in self.keys.values())


_RECORDING: ContextVar[CallRecording | None] = ContextVar("moa_call_recording", default=None)


@contextmanager
def recording_calls() -> Iterator[CallRecording]:
    """Note every call made inside the block (and its tasks) that goes through a call cache:
    the ones it answered and the ones it stored."""
    recording = CallRecording()
    token = _RECORDING.set(recording)
    try:
        yield recording
    finally:
        _restore(_RECORDING, token)


def _note(store: SQLiteCallStore, key: str) -> None:
    recording = _RECORDING.get()
    if recording is not None:
        recording.add(store, key)


def cache_key(provider: str, request: CompletionRequest) -> str:
    """A stable digest of everything that determines a call's answer."""
    params = request.params
    payload: dict[str, Any] = {
        "v": _SCHEMA_VERSION,
        "provider": provider,
        "model": request.model,
        "messages": [m.to_dict() for m in request.messages],
        "continue_final": request.continue_final,
        "temperature": params.temperature,
        "top_p": params.top_p,
        "max_tokens": params.max_tokens,
        "stop": list(params.stop) if params.stop is not None else None,
        "seed": params.seed,
        "extra": _jsonable(params.extra),
    }
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return repr(value)


class SQLiteCallStore:
    """Completed calls in one SQLite file, safe to share between threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                conn = sqlite3.connect(
                    private_file(self.path), check_same_thread=False, timeout=30.0
                )
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS calls ("
                    " key TEXT PRIMARY KEY, provider TEXT, model TEXT, text TEXT,"
                    " prompt_tokens INTEGER, completion_tokens INTEGER, calls INTEGER,"
                    " finish_reason TEXT, latency_s REAL, ttft_s REAL, created REAL)"
                )
                conn.commit()
            except sqlite3.Error as exc:
                raise ConfigError(
                    f"cannot open the call cache {str(self.path)!r}: {exc}; "
                    "give another path or disable the cache"
                ) from exc
            self._conn = conn
        return self._conn

    def get(self, key: str) -> CachedCall | None:
        with self._lock:
            row = (
                self._connection()
                .execute(
                    "SELECT text, prompt_tokens, completion_tokens, calls, finish_reason,"
                    " latency_s, ttft_s FROM calls WHERE key = ?",
                    (key,),
                )
                .fetchone()
            )
        if row is None:
            return None
        text, prompt, completion, calls, finish, latency, ttft = row
        usage = None if prompt is None else Usage(prompt, completion, calls)
        return CachedCall(text, usage, finish, latency, ttft)

    def put(self, key: str, provider: str, model: str, call: CachedCall) -> None:
        usage = call.usage
        with self._lock:
            conn = self._connection()
            conn.execute(
                "INSERT OR REPLACE INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    provider,
                    model,
                    call.text,
                    None if usage is None else usage.prompt_tokens,
                    None if usage is None else usage.completion_tokens,
                    None if usage is None else usage.calls,
                    call.finish_reason,
                    call.latency_s,
                    call.ttft_s,
                    time.time(),
                ),
            )
            conn.commit()

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connection().execute("SELECT COUNT(*) FROM calls").fetchone()
        return int(count)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Per model id ``provider:model``: stored calls and their completion tokens."""
        with self._lock:
            found = (
                self._connection()
                .execute(
                    "SELECT provider, model, COUNT(*), COALESCE(SUM(completion_tokens), 0)"
                    " FROM calls GROUP BY provider, model ORDER BY provider, model"
                )
                .fetchall()
            )
        return {
            f"{provider}:{model}": (int(n), int(tokens)) for provider, model, n, tokens in found
        }

    def rows(
        self, models: Sequence[str] = (), keys: Iterable[str] | None = None
    ) -> list[dict[str, Any]]:
        """Every stored call as a row (oldest first); ``models`` keeps ids ``provider:model``,
        ``keys`` (when given) the calls with these keys."""
        with self._lock:
            found = (
                self._connection()
                .execute(f"SELECT {', '.join(ROW_FIELDS)} FROM calls ORDER BY created, key")
                .fetchall()
            )
        rows = [dict(zip(ROW_FIELDS, row, strict=True)) for row in found]
        wanted = set(models)
        chosen = None if keys is None else set(keys)
        return [
            r
            for r in rows
            if (not wanted or f"{r['provider']}:{r['model']}" in wanted)
            and (chosen is None or r["key"] in chosen)
        ]

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Store rows made by :meth:`rows` whose keys are not here yet; returns how many."""
        values = [tuple(row[name] for name in ROW_FIELDS) for row in rows]
        marks = ", ".join("?" * len(ROW_FIELDS))
        with self._lock:
            conn = self._connection()
            before = conn.total_changes
            conn.executemany(f"INSERT OR IGNORE INTO calls VALUES ({marks})", values)
            conn.commit()
            return conn.total_changes - before

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class CachedProvider(Provider):
    """``inner`` behind the call cache ``store``; answers a repeated call without calling it."""

    def __init__(
        self,
        inner: Provider,
        store: SQLiteCallStore,
        *,
        name: str | None = None,
        cache_only: bool = False,
    ) -> None:
        self.inner = inner
        self.store = store
        self.name = name or inner.name
        """The provider name in model ids; part of every cache key."""
        self.cache_only = cache_only
        """Answer only from the cache: a miss raises :class:`~moa.errors.CacheMissError`."""
        self.max_concurrency = inner.max_concurrency
        self.supports_continue = inner.supports_continue  # type: ignore[misc]
        self.hits = 0
        self.misses = 0
        self._pending: dict[str, asyncio.Event] = {}

    def concurrency_key(self, request: CompletionRequest) -> Hashable:
        return self.inner.concurrency_key(request)

    def check_model(self, model: str) -> None:
        """The inner provider's check; none for a replay, which calls no model."""
        if not self.cache_only:
            self.inner.check_model(model)

    async def complete(self, request: CompletionRequest) -> Completion:
        key = cache_key(self.name, request)
        cached = await self._lookup(key, request)
        if cached is not None:
            usage = cached.usage or _estimated(request, cached.text)
            return Completion(cached.text, usage, cached.finish_reason, request.model)
        with self._filling(key, request):
            started = time.perf_counter()
            completion = await self.inner.complete(request)
            latency = time.perf_counter() - started
            call = CachedCall(
                completion.text, completion.usage, completion.finish_reason, latency, None
            )
            self.store.put(key, self.name, request.model, call)
            _note(self.store, key)
            return completion

    async def stream(self, request: CompletionRequest) -> AsyncIterator[CompletionChunk]:
        key = cache_key(self.name, request)
        cached = await self._lookup(key, request)
        if cached is not None:
            yield CompletionChunk(cached.text, cached.usage, cached.finish_reason)
            return
        with self._filling(key, request):
            started = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            usage: Usage | None = None
            finish: str | None = None
            async for chunk in self.inner.stream(request):
                if chunk.text and first is None:
                    first = time.perf_counter() - started
                parts.append(chunk.text)
                usage = chunk.usage or usage
                finish = chunk.finish_reason or finish
                yield chunk
            latency = time.perf_counter() - started
            call = CachedCall("".join(parts), usage, finish, latency, first)
            self.store.put(key, self.name, request.model, call)
            _note(self.store, key)

    async def _lookup(self, key: str, request: CompletionRequest) -> CachedCall | None:
        # An identical call in flight will fill the cache: wait for it instead of repeating it.
        while (pending := self._pending.get(key)) is not None:
            await pending.wait()
        cached = self.store.get(key)
        if cached is not None:
            self.hits += 1
            _note(self.store, key)
            hits = _HITS.get()
            if hits is not None:
                hits.append(
                    CacheHit(self.name, request.model, cached.text, cached.latency_s, cached.ttft_s)
                )
        return cached

    @contextmanager
    def _filling(self, key: str, request: CompletionRequest) -> Iterator[None]:
        """Mark ``key`` as being computed; identical calls wait until this block ends."""
        self.misses += 1
        if self.cache_only:
            raise CacheMissError(f"{self.name}:{request.model}", str(self.store.path))
        done = self._pending[key] = asyncio.Event()
        try:
            yield
        finally:
            del self._pending[key]
            done.set()

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __repr__(self) -> str:
        return f"CachedProvider({self.inner!r}, {str(self.store.path)!r})"


def _estimated(request: CompletionRequest, text: str) -> Usage:
    prompt = sum(estimate_tokens(m.content) for m in request.messages)
    return Usage(prompt, estimate_tokens(text), 1)


def registry_with_cache(
    providers: Mapping[str, ProviderSettings] | None,
    local: LocalSettings | None,
    cache: Path | None,
    cache_only: bool = False,
) -> ProviderRegistry:
    """A registry whose calls go through the cache file ``cache`` (``None``: no cache)."""
    if cache is None:
        if cache_only:
            raise ConfigError("--cache-only replays the call cache: leave out --no-cache")
        return ProviderRegistry(dict(providers or {}), local)
    store = SQLiteCallStore(cache.expanduser())
    return CachingRegistry(dict(providers or {}), local, store=store, cache_only=cache_only)


class CachingRegistry(ProviderRegistry):
    """A :class:`ProviderRegistry` whose every provider answers through one call cache."""

    def __init__(
        self,
        settings: Mapping[str, ProviderSettings] | None = None,
        local: LocalSettings | None = None,
        *,
        store: SQLiteCallStore,
        cache_only: bool = False,
    ) -> None:
        super().__init__(settings, local)
        self.store = store
        self.cache_only = cache_only
        """Replay only (see the module's docstring)."""
        self._cached: dict[str, CachedProvider] = {}
        self._keyless_stand_ins: dict[str, Provider] = {}

    def get(self, name: str) -> Provider:
        try:
            inner = super().get(name)
        except MissingAPIKeyError:
            if not self.cache_only:
                raise
            inner = self._keyless(name)  # a replay never calls it: no key is needed
        cached = self._cached.get(name)
        if cached is None or cached.inner is not inner:
            cached = self._cached[name] = CachedProvider(
                inner, self.store, name=name, cache_only=self.cache_only
            )
        return cached

    def _keyless(self, name: str) -> Provider:
        if name not in self._keyless_stand_ins:
            stand_in = _NeverCalled(name)
            stand_in.supports_continue = self._settings[name].supports_continue  # type: ignore[misc]
            self._keyless_stand_ins[name] = stand_in
        return self._keyless_stand_ins[name]

    def cached(self) -> list[CachedProvider]:
        """The cache wrappers made so far (their ``hits``/``misses`` count calls)."""
        return list(self._cached.values())


class _NeverCalled(Provider):
    """Stands in, in a replay, for a provider that could not be built for want of its key."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def complete(self, request: CompletionRequest) -> Completion:
        raise AssertionError("a cache-only provider is never called")  # pragma: no cover
