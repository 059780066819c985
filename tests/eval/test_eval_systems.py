from __future__ import annotations

import pytest

from moa.config import MixtureConfig, parse_config
from moa.errors import ConfigError
from moa.eval.systems import merged_provider_settings


def config(**local: object) -> MixtureConfig:
    return parse_config({"aggregator": {"model": "local:qwen2.5-coder-1.5b"}, "local": local})


def test_systems_differing_only_in_batch_width_share_the_widest() -> None:
    _, local = merged_provider_settings([config(batch=16), config(batch=5), config(batch=32)])
    assert local.batch == 32


def test_systems_differing_in_anything_else_cannot_share_a_model() -> None:
    with pytest.raises(ConfigError, match="only batch may differ"):
        merged_provider_settings([config(batch=4, n_ctx=2048), config(batch=4)])
