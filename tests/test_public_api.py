from __future__ import annotations

import moa
import moa.engine
import moa.errors


def public_names(module: object) -> set[str]:
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, type(moa))
    } - {"annotations", "TYPE_CHECKING"}


def test_all_lists_exactly_the_public_names() -> None:
    for module in (moa, moa.engine):
        assert set(module.__all__) == public_names(module) | {"__version__"} & set(module.__all__)


def test_error_tree() -> None:
    for name in moa.errors.__all__:
        assert issubclass(getattr(moa.errors, name), moa.errors.MoAError)
    assert issubclass(moa.RateLimitError, moa.ProviderError)
    assert issubclass(moa.MissingAPIKeyError, moa.ConfigError)
    assert moa.RateLimitError("x").retryable
    assert not moa.ProviderStatusError("x", status_code=400).retryable
    assert moa.ProviderStatusError("x", status_code=503).retryable
