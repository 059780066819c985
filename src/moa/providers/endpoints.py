"""Built-in provider names: hosted OpenAI-compatible APIs, local servers, and ``local``.

Any of these can be used in a model id without configuration, e.g.
``together:Qwen/Qwen2.5-72B-Instruct-Turbo`` or ``ollama:llama3.2``; a
``providers:`` block in a config file overrides any field or adds new names.
"""

from __future__ import annotations

from moa.providers.settings import ProviderSettings

__all__ = ["BUILTIN_PROVIDERS"]


def _remote(base_url: str, env: str) -> ProviderSettings:
    return ProviderSettings(base_url=base_url, api_key_env=env, requires_key=True)


def _server(base_url: str, env: str, *, supports_continue: bool = False) -> ProviderSettings:
    return ProviderSettings(
        base_url=base_url, api_key_env=env, requires_key=False, supports_continue=supports_continue
    )


BUILTIN_PROVIDERS: dict[str, ProviderSettings] = {
    "together": _remote("https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    "openai": _remote("https://api.openai.com/v1", "OPENAI_API_KEY"),
    "groq": _remote("https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    "openrouter": _remote("https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    "fireworks": _remote("https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    "deepinfra": _remote("https://api.deepinfra.com/v1/openai", "DEEPINFRA_API_KEY"),
    "ollama": _server("http://localhost:11434/v1", "OLLAMA_API_KEY"),
    "vllm": _server("http://localhost:8000/v1", "VLLM_API_KEY", supports_continue=True),
    "llamacpp": _server("http://localhost:8080/v1", "LLAMACPP_API_KEY", supports_continue=True),
    "local": ProviderSettings(kind="local"),
}
