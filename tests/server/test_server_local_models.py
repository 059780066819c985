"""A mixture whose local model is not installed: listed as unavailable, named at startup.

The model directory is an empty temporary one, and loading a model is a test
failure: telling that a file is missing must not cost a load.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from server_helpers import ServeFactory
from typer.testing import CliRunner

from moa import Mixture, MixtureSpec, ProviderRegistry
from moa.cli.main import app
from moa.providers.catalog import CATALOG
from moa.testing import FakeProvider

USER: Any = [{"role": "user", "content": "What is 2 + 2?"}]
PULL = "local model 'smollm2-135m' is not installed; run: moa models pull smollm2-135m"


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    def no_loading(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded")

    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("MOA_MODEL_DIR", str(folder))
    monkeypatch.setattr("moa.providers.local.LocalModel", no_loading)
    return folder


def test_a_mixture_whose_local_model_is_missing_is_unavailable(
    serve: ServeFactory, models: Path
) -> None:
    fake = FakeProvider()
    spec = {
        "layers": [[{"model": "local:smollm2-135m"}, {"model": "fake:a"}]],
        "aggregator": {"model": "fake:agg"},
    }
    pocket = Mixture(MixtureSpec.model_validate(spec), ProviderRegistry().add("fake", fake))
    base = serve(mixtures={"pocket": pocket})
    api = openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    [model] = api.models.list().data
    assert model.model_extra is not None
    assert model.model_extra["moa"]["available"] is False
    assert model.model_extra["moa"]["problem"] == PULL
    with pytest.raises(openai.InternalServerError) as caught:
        api.chat.completions.create(model="pocket", messages=USER)
    assert caught.value.code == "mixture_misconfigured"
    assert isinstance(caught.value.body, dict) and caught.value.body["message"] == PULL
    assert fake.calls == []
    # Pulled while the server runs: available from then on (the file is not read to tell).
    (models / CATALOG["smollm2-135m"].filename).write_bytes(b"not a model")
    shape = api.models.retrieve("pocket").model_extra
    assert shape is not None and shape["moa"]["available"] is True


def test_startup_names_the_mixtures_whose_local_models_are_missing(
    tmp_path: Path, models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pocket.yaml").write_text(
        'layers:\n  - [{model: "local:smollm2-135m"}]\naggregator: {model: "local:smollm2-135m"}\n',
        "utf-8",
    )
    served: list[object] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.append(app))
    monkeypatch.setattr("moa.server.app.tune_gc_for_serving", lambda: None)  # not this process's
    result = CliRunner().invoke(
        app, ["serve", "--config-dir", str(tmp_path)], env={"COLUMNS": "500"}
    )
    assert result.exit_code == 0, result.output
    assert len(served) == 1
    assert f"pocket cannot run here: {PULL}" in result.output
    # The shipped presets of local models too.
    pull_one = (
        "local model 'qwen2.5-coder-1.5b' is not installed; run: moa models pull qwen2.5-coder-1.5b"
    )
    assert f"local cannot run here: {pull_one}" in result.output
    assert "local-mix cannot run here: local models 'qwen2.5-coder-1.5b', " in result.output
    pull_all = "run: moa models pull qwen2.5-coder-1.5b qwen2.5-coder-0.5b smollm2-135m"
    assert pull_all in result.output
