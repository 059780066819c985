"""Any file given as a mixture config gives a mixture or a ConfigError, never another error."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from moa.config import load_mixture
from moa.errors import ConfigError

FIELDS = [
    "name",
    "layers",
    "aggregator",
    "defaults",
    "providers",
    "strategy",
    "retry",
    "quorum",
    "local",
    "model",
    "temperature",
    "max_tokens",
    "type",
    "base_url",
    "api_key_env",
    "timeout",
    "seed",
    "stop",
    "kind",
    "samples",
    "batch",
    "n_ctx",
    "extra",
    "deadline",
    "max_attempts",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["local:smollm2-135m", "fake:a", "x:y:z", "layered"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(FIELDS), st.text(max_size=8)), inner, max_size=5),
    ),
    max_leaves=25,
)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))


def loads_or_refuses(path: Path) -> None:
    """Any other exception fails the test."""
    with contextlib.suppress(ConfigError):
        load_mixture(path)


@FUZZ
@given(data=values)
def test_structured_configs(tmp_path_factory: Any, data: Any) -> None:
    path = tmp_path_factory.mktemp("cfg") / "mix.yaml"
    path.write_text(yaml.safe_dump(data), "utf-8")
    loads_or_refuses(path)


@FUZZ
@given(text=st.one_of(st.text(max_size=300), st.binary(max_size=300).map(bytes.hex)))
def test_any_text(tmp_path_factory: Any, text: str) -> None:
    path = tmp_path_factory.mktemp("cfg") / "mix.yaml"
    path.write_text(text, "utf-8")
    loads_or_refuses(path)


@FUZZ
@given(raw=st.binary(max_size=300))
def test_any_bytes(tmp_path_factory: Any, raw: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "mix.yaml"
    path.write_bytes(raw)
    loads_or_refuses(path)


def laughs(levels: int = 7, width: int = 9) -> str:
    """YAML aliases that expand a few lines into ``width ** levels`` nodes."""
    lines = ["l0: &l0 [" + ", ".join(["x"] * width) + "]"]
    for n in range(1, levels):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * width) + "]")
    return "\n".join(lines) + f"\nlayers: *l{levels - 1}\ndefaults: {{stop: *l{levels - 1}}}\n"


def test_hostile_yaml(tmp_path: Path) -> None:
    hostile = [
        laughs(),
        laughs().replace("\nl0:", "\nname: x\nl0:").split("\n", 1)[1],
        "layers: " + "[" * 5000 + "]" * 5000,
        "!!python/object/apply:os.system ['echo pwned']",
        "\ufeffname: bom\naggregator: {model: fake:a}\n",
        "aggregator: {model: fake:a}\nlocal: {batch: 1e309}\n",
    ]
    for n, text in enumerate(hostile):
        path = tmp_path / f"hostile{n}.yaml"
        path.write_text(text, "utf-8")
        loads_or_refuses(path)
