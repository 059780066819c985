from __future__ import annotations

from pathlib import Path

import pytest

from moa import ConfigError, MissingAPIKeyError
from moa.config import build_mixture, load_config, load_endpoints, parse_config, preset_names

ISSUE_SHAPE = """
providers:
  fake: {base_url: "http://127.0.0.1:8001/v1", api_key_env: FAKE_KEY}
layers:
  - [{model: "fake:a"}, {model: "fake:b", temperature: 0.2}, {model: "fake:c"}]
  - [{model: "fake:a"}, {model: "fake:b"}, {model: "fake:c"}]
aggregator: {model: "fake:agg", max_tokens: 512}
"""


def write(tmp_path: Path, text: str, name: str = "mix.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_documented_shape_loads(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ISSUE_SHAPE))
    assert config.name == "mix"
    assert [len(layer.agents) for layer in config.layers] == [3, 3]
    assert config.layers[0].agents[1].temperature == 0.2
    assert config.aggregator.max_tokens == 512
    assert config.providers["fake"].api_key_env == "FAKE_KEY"


def test_missing_key_names_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_KEY", raising=False)
    mixture = build_mixture(load_config(write(tmp_path, ISSUE_SHAPE)))
    with pytest.raises(MissingAPIKeyError, match="FAKE_KEY"):
        mixture.check()


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("aggregator: {model: 'fake:x', temprature: 0.1}", "aggregator.temprature"),
        ("aggregator: {model: 'fake:x'}\nlayrs: []", "layrs"),
        ("aggregator: {model: 'fake:x', temperature: 5}", "aggregator.temperature"),
        ("aggregator: {model: 'no-provider'}", "aggregator.model"),
        ("aggregator: {model: 'f:x'}\nlayers: [{agents: [{model: 'f:a'}], min_ok: 2}]", "layers.0"),
        (
            "aggregator: {model: 'f:x'}\nproviders: {p: {base_ur: 'http://x'}}",
            "providers.p.base_ur",
        ),
        (
            "aggregator: {model: 'f:x'}\nlayers: [[{model: 'f:a', stop: 3}]]",
            "layers.0.agents.0.stop",
        ),
    ],
)
def test_invalid_config_names_the_field(tmp_path: Path, text: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text))
    assert field in str(info.value)


def test_missing_aggregator_is_an_error() -> None:
    with pytest.raises(ConfigError, match="aggregator"):
        parse_config({"layers": []})


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "layers: [unclosed"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="neither a config file nor a preset"):
        load_config("no-such-preset")


def test_presets_load_and_have_the_expected_shapes() -> None:
    assert {"local", "local-mix", "together-moa", "together-moa-lite"} <= set(preset_names())
    mix = load_config("local-mix")
    assert [a.model for a in mix.layers[0].agents] == [
        "local:qwen2.5-coder-1.5b",
        "local:qwen2.5-coder-0.5b",
        "local:smollm2-135m",
    ]
    assert mix.aggregator.model == "local:qwen2.5-coder-1.5b"
    local = load_config("local")
    assert local.model_ids() == ["local:qwen2.5-coder-1.5b"]
    assert local.strategy.model_dump()["answer"] == "auto"
    moa = load_config("together-moa")
    assert [len(layer.agents) for layer in moa.layers] == [6, 6]
    lite = load_config("together-moa-lite")
    assert [len(layer.agents) for layer in lite.layers] == [6]


def test_the_local_vote_preset_is_the_configuration_select_chose() -> None:
    """The preset must stay the measured configuration: select.yaml and the fresh check's copy."""
    report = Path(__file__).parents[1] / "docs/reports/select-gsm8k-local"
    preset = load_config("local-vote")
    fields = {"name", "local"}  # how the run shared the CPU, not what it computes
    for measured in (report / "select.yaml", report / "fresh" / "local-vote.yaml"):
        assert preset.model_dump(exclude=fields) == load_config(measured).model_dump(exclude=fields)
    assert preset.local.batch == preset.strategy.model_dump()["samples"]


def test_instruction_override(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "instruction: Merge these.\naggregator: {model: 'f:x'}"))
    assert config.spec().instruction == "Merge these."


def test_endpoints_come_from_a_providers_only_file_or_a_whole_config(tmp_path: Path) -> None:
    only = tmp_path / "endpoints.yaml"
    only.write_text("providers:\n  mine: {base_url: 'http://127.0.0.1:9/v1'}\nlocal: {batch: 8}\n")
    endpoints = load_endpoints(only)
    assert endpoints.providers["mine"].base_url == "http://127.0.0.1:9/v1"
    assert endpoints.local.batch == 8 and "local" in endpoints.model_fields_set
    assert load_endpoints("local").providers == {}  # a preset: a whole config, no providers
    with pytest.raises(ConfigError, match="aggregator: Field required"):
        load_config(only)  # a mixture needs its aggregator; endpoints do not


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("provider:\n  mine: {base_url: 'http://127.0.0.1:9/v1'}\n", "provider: unknown key"),
        ("providers:\n  mine: {base_url: 3}\n", r"providers\.mine\.base_url"),
        ("providers:\n  mine: {colour: red}\n", r"providers\.mine\.colour: unknown key"),
        ("- providers\n", "top level must be a mapping"),
        (None, "does not exist"),
    ],
)
def test_endpoints_errors_name_the_key(tmp_path: Path, text: str | None, message: str) -> None:
    path = tmp_path / "endpoints.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_endpoints(path)
