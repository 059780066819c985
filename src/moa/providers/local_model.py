"""One GGUF model loaded in-process through llama-cpp-python.

Everything here blocks and runs on a worker thread of
:class:`~moa.providers.local.LocalProvider`, which makes sure a model serves
one generation at a time. A :class:`Generation` is the state shared with the
event loop: a cancel flag checked once per token (and, while the prompt is
evaluated, inside llama.cpp itself) and the token counts of the call.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from moa.errors import ConfigError, FeatureUnavailableError
from moa.providers.catalog import verify_file
from moa.providers.llama_load import load_llama
from moa.providers.local_batch import BATCHABLE, Accept, BatchCall, BatchDecoder, More
from moa.providers.local_prompt import plain_messages, tokens_for
from moa.providers.turns import Turns
from moa.types import GenerationParams, Message

__all__ = [
    "Done",
    "Emit",
    "Entry",
    "Generation",
    "LocalModel",
    "MoreEntries",
    "call_kwargs",
    "import_llama",
]

Emit = Callable[[str], None]
Done = Callable[[str | None], None]
Entry = tuple["Generation", Sequence[Message], Mapping[str, Any], Emit, Done]
"""A call for :meth:`LocalModel.generate_batch`: its state, conversation, settings and ends."""
MoreEntries = Callable[[int, Callable[[Entry], bool]], list[Entry]]
"""Further calls for a running batch: ``more(free rows, take)`` returns the entries ``take``
accepted, in order, and stops at the first it refused."""

# Set by the provider from its own fields, or meaningless for a chat answer.
_MANAGED = frozenset({"self", "messages", "prompt", "suffix", "echo", "stream", "model"})
_FIELDS = ("temperature", "top_p", "max_tokens", "stop", "seed")
# Tool calling would turn the answer into a structured call the mixture cannot use.
_UNSUPPORTED = frozenset(
    {"functions", "function_call", "tools", "tool_choice", "stopping_criteria"}
)
# Settings only the bindings' chat completion takes: such a call goes through it.
_CHAT_ONLY = frozenset({"response_format", "top_logprobs"})


def import_llama() -> ModuleType:
    """The ``llama_cpp`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        import llama_cpp
    except ImportError as exc:
        raise ConfigError(
            "local models need llama-cpp-python: pip install 'mixture-of-agents[local]'"
        ) from exc
    return llama_cpp


def call_kwargs(
    llama_type: Any, params: GenerationParams, *, continue_final: bool
) -> dict[str, Any]:
    """Keyword arguments for ``create_chat_completion`` (or ``create_completion`` to continue).

    Unknown ``params.extra`` keys are errors that list the accepted ones.
    """
    chat = inspect.signature(llama_type.create_chat_completion).parameters
    plain = inspect.signature(llama_type.create_completion).parameters
    accepted = set(chat) - _MANAGED - _UNSUPPORTED - set(_FIELDS)
    kwargs: dict[str, Any] = chat_defaults(llama_type) if continue_final else {}
    for key, value in params.extra.items():
        if key in _FIELDS:
            raise ConfigError(f"extra parameter {key!r}: set the agent's {key} field instead")
        if key not in accepted:
            raise ConfigError(
                f"local models do not accept the extra parameter {key!r}; "
                f"accepted: {', '.join(sorted(accepted))}"
            )
        if continue_final and key not in plain:
            raise FeatureUnavailableError(
                f"extra parameter {key!r} cannot be used when continuing an answer"
            )
        kwargs[key] = value
    for key in _FIELDS:
        value = getattr(params, key)
        if value is not None:
            kwargs[key] = list(value) if key == "stop" else value
    return kwargs


def chat_defaults(llama_type: Any) -> dict[str, Any]:
    """The settings in which ``create_chat_completion``'s defaults differ from
    ``create_completion``'s: a chat answer sent through the latter samples the same way."""
    return dict(_chat_defaults(llama_type))


@functools.cache
def _chat_defaults(llama_type: Any) -> tuple[tuple[str, Any], ...]:
    chat = inspect.signature(llama_type.create_chat_completion).parameters
    plain = inspect.signature(llama_type.create_completion).parameters
    defaults: dict[str, Any] = {}
    for key in (set(chat) & set(plain)) - _MANAGED:
        default = chat[key].default
        if default is not inspect.Parameter.empty and default != plain[key].default:
            defaults[key] = default
    return tuple(defaults.items())


class Generation:
    """One running call: its cancel flag and its token counts (as llama.cpp counted them)."""

    def __init__(self) -> None:
        self.cancelled = threading.Event()
        self.prompt_tokens = 0
        self.completion_tokens = 0


class LocalModel:
    """A GGUF file, loaded on first use. Callers must hold :attr:`busy` around every method."""

    def __init__(
        self,
        label: str,
        path: Path,
        *,
        sha256: str | None,
        n_ctx: int,
        threads: int,
        extra_buffers: bool | None = None,
    ) -> None:
        self.label = label
        self.path = path
        self.sha256 = sha256
        self.n_ctx = n_ctx
        self.threads = threads
        self.extra_buffers = extra_buffers
        self.busy = Turns()
        """Held for the whole of one generation: llama.cpp contexts are not shareable."""
        self.active: Generation | None = None
        self._llm: Any = None
        self._llama_cpp: ModuleType | None = None
        self._abort_callback: Any = None
        self._abort_on = False
        self._batch: BatchDecoder | None = None

    @property
    def loaded(self) -> bool:
        return self._llm is not None

    def load(self) -> None:
        """Verify (catalog files) and load the model unless already loaded."""
        if self._llm is not None:
            return
        llama_cpp = import_llama()
        if self.sha256 is not None:
            verify_file(self.path, self.sha256, name=self.label)
        try:
            llm = load_llama(
                llama_cpp,
                self.path,
                n_ctx=self.n_ctx,
                threads=self.threads,
                extra_buffers=self.extra_buffers,
            )
        except (ValueError, RuntimeError) as exc:
            raise ConfigError(
                f"could not load local model {self.label!r} from {self.path}: {exc}"
            ) from exc
        if "tokenizer.chat_template" in llm.metadata:
            # Use the model's own template, the same one continue_final renders with.
            llm.chat_format = "chat_template.default"
        self._llama_cpp = llama_cpp
        self._abort_callback = llama_cpp.ggml_abort_callback(self._should_abort)
        self._instrument(llm, llama_cpp)
        self._llm = llm

    def close(self) -> None:
        if self._batch is not None:
            self._batch.close()
            self._batch = None
        if self._llm is not None:
            self._llm.close()
            self._llm = None

    def _should_abort(self, _data: object) -> bool:
        active = self.active
        return active is not None and active.cancelled.is_set()

    def _set_abort(self, on: bool) -> None:
        """Let llama.cpp poll the cancel flag while it evaluates a prompt, and only then.

        The callback runs for every graph node, which is cheap next to a prompt
        batch but not worth paying for every generated token, where the flag is
        checked anyway.
        """
        if on == self._abort_on or self._llama_cpp is None:
            return
        callback = self._abort_callback if on else self._llama_cpp.ggml_abort_callback()
        self._llama_cpp.llama_set_abort_callback(self._llm.ctx, callback, None)
        self._abort_on = on

    def _instrument(self, llm: Any, llama_cpp: ModuleType) -> None:
        """Count tokens and stop on cancellation inside llama.cpp's own token loop.

        Streamed chunks carry no usage and ``create_chat_completion`` takes no
        stopping criteria, but every call goes through ``Llama.generate``.
        """
        original = llm.generate
        vocab = llama_cpp.llama_model_get_vocab(llm.model)

        def generate(tokens: Sequence[int], *args: Any, **kwargs: Any) -> Iterator[int]:
            run = self.active
            if run is not None:
                run.prompt_tokens = len(tokens)
            self._set_abort(run is not None)
            try:
                for token in original(tokens, *args, **kwargs):
                    self._set_abort(False)
                    if run is not None:
                        if run.cancelled.is_set():
                            return
                        if not llama_cpp.llama_vocab_is_eog(vocab, token):
                            run.completion_tokens += 1
                    yield token
            finally:
                self._set_abort(False)

        llm.generate = generate

    def generate(
        self,
        run: Generation,
        messages: Sequence[Message],
        kwargs: Mapping[str, Any],
        *,
        continue_final: bool,
    ) -> Iterator[tuple[str, str | None]]:
        """Yield ``(text, finish_reason)`` pieces as llama.cpp produces them."""
        self.load()
        self.active = run
        try:
            templated = bool(self._llm.metadata.get("tokenizer.chat_template"))
            if continue_final or (templated and not set(kwargs) & _CHAT_ONLY):
                stream = self._complete(messages, kwargs, continue_final=continue_final)
                for chunk in stream:
                    choice = chunk["choices"][0]
                    yield choice.get("text") or "", choice.get("finish_reason")
            else:
                # Only the bindings' chat completion knows these settings, or a chat format
                # for a model without a template of its own.
                chat = plain_messages(self._llm, messages)
                stream = self._llm.create_chat_completion(chat, stream=True, **kwargs)
                for chunk in stream:
                    choice = chunk["choices"][0]
                    yield choice["delta"].get("content") or "", choice.get("finish_reason")
        finally:
            self.active = None

    def _render(self, messages: Sequence[Message], *, partial: str | None) -> Any:
        """The conversation as the model's chat template renders it, ready for the answer.

        ``partial``: the start of the assistant's answer, to be continued. Returns
        the template's rendering (its stop strings and criteria) and the prompt tokens,
        in which every message's content is plain text (:mod:`~moa.providers.local_prompt`).
        """
        assert self._llama_cpp is not None
        template = self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise FeatureUnavailableError(f"local model {self.label!r} has no chat template")
        llm = self._llm
        formatter = self._llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llm, llm.token_eos()),
            bos_token=_token_text(llm, llm.token_bos()),
            add_generation_prompt=True,
            stop_token_ids=[llm.token_eos()],
        )
        return tokens_for(llm, formatter, messages, partial=partial)

    def _complete(
        self, messages: Sequence[Message], kwargs: Mapping[str, Any], *, continue_final: bool
    ) -> Any:
        """Render the conversation (up to the partial answer, to continue one) with the model's
        template, then generate from those tokens as a chat answer would be sampled.

        llama.cpp keeps the evaluated prefix of the previous call, so continuing
        an answer that grew by a few tokens only evaluates those tokens.
        """
        try:
            if continue_final:
                rendered, prompt = self._render(messages[:-1], partial=messages[-1].content)
            else:
                rendered, prompt = self._render(messages, partial=None)
        except FeatureUnavailableError as exc:
            raise FeatureUnavailableError(f"{exc}, so an answer cannot be continued") from exc
        options = {**chat_defaults(type(self._llm)), **kwargs}
        if rendered.stop:
            options["stop"] = [*options.get("stop", []), *_stops(rendered.stop)]
        return self._llm.create_completion(
            prompt=prompt, stream=True, stopping_criteria=rendered.stopping_criteria, **options
        )

    # -- several calls at once ------------------------------------------------------------

    def can_batch(self, kwargs: Mapping[str, Any], *, continue_final: bool) -> bool:
        """Whether a call may share a batch: a plain chat answer with batchable parameters."""
        return not continue_final and set(kwargs) <= BATCHABLE

    def generate_batch(
        self,
        calls: Sequence[Entry],
        *,
        n_seq: int,
        more: MoreEntries | None = None,
    ) -> bool:
        """Decode ``calls`` together; each one's text goes to its ``emit`` as it grows.

        Each call's ``done`` gets its finish reason as soon as that call ends (its
        token counts are then in its :class:`Generation`). While rows are free,
        ``more(free rows, accept)`` may bring further calls into the running batch:
        those ``accept`` took. False, with nothing run, when ``calls`` cannot share
        this model's batch context: no chat template, or too long together.
        """
        self.load()
        assert self._llama_cpp is not None
        if not self._llm.metadata.get("tokenizer.chat_template"):
            return False
        batch = [self._batch_call(entry) for entry in calls]
        if self._batch is None:
            # Every row has the window a call alone has.
            self._batch = BatchDecoder(
                self._llama_cpp,
                self._llm,
                n_seq=n_seq,
                row_ctx=self.n_ctx,
                threads=self.threads,
                label=self.label,
            )
        if not self._batch.fits(batch):
            return False
        self._batch.run(batch, None if more is None else self._joining(more))
        return True

    def _batch_call(self, entry: Entry) -> BatchCall:
        run, messages, kwargs, emit, done = entry
        rendered, prompt = self._render(messages, partial=None)
        stop = [*kwargs.get("stop", []), *(_stops(rendered.stop) if rendered.stop else [])]
        call = BatchCall(prompt, dict(kwargs), emit, run.cancelled.is_set, stop)
        call.on_end = _ender(call, run, done)
        return call

    def _joining(self, more: MoreEntries) -> More:
        """``more`` for the decoder: entries rendered once, and only those that fit taken.

        A call kept waiting (no room yet) stays rendered until it is taken; a long
        batch takes many calls, so those taken are forgotten.
        """
        rendered: dict[int, tuple[Generation, BatchCall | None]] = {}

        def render(entry: Entry) -> BatchCall | None:
            known = rendered.get(id(entry[0]))
            if known is None:
                try:
                    call: BatchCall | None = self._batch_call(entry)
                except Exception:  # its own turn on the model reports it
                    call = None
                known = rendered[id(entry[0])] = (entry[0], call)
            return known[1]

        def joining(rows: int, accept: Accept) -> list[BatchCall]:
            taken: list[BatchCall] = []

            def take(entry: Entry) -> bool:
                call = render(entry)
                if call is None or not accept(call):
                    return False
                del rendered[id(entry[0])]
                taken.append(call)
                return True

            more(rows, take)
            return taken

        return joining


def _ender(call: BatchCall, run: Generation, done: Done) -> Callable[[], None]:
    def end() -> None:
        run.prompt_tokens = len(call.prompt)
        run.completion_tokens = call.completion_tokens
        done(call.finish_reason)

    return end


def _stops(stop: str | list[str]) -> list[str]:
    return stop if isinstance(stop, list) else [stop]


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    return bytes(llm.detokenize([token], special=True)).decode("utf-8", errors="replace")
