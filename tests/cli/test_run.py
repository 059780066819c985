from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from moa.cli.main import app, main
from moa.providers.registry import register_kind
from moa.testing import FakeProvider

runner = CliRunner()

CONFIG = """
providers:
  scripted: {kind: scripted-test}
layers:
  - [{model: "scripted:a"}, {model: "scripted:b"}]
aggregator: {model: "scripted:agg"}
retry: {max_attempts: 1}
"""


@pytest.fixture
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider(
        "scripted",
        replies={"a": "alpha says 4", "b": "beta says 5", "agg": "The answer is 4."},
    )
    register_kind("scripted-test", lambda name, settings, local: provider)
    yield provider


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "mix.yaml"
    path.write_text(CONFIG)
    return path


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_run_streams_the_final_answer(fake: FakeProvider, config: Path) -> None:
    code, out, _ = invoke("run", "What is 2+2?", "--config", str(config))
    assert code == 0
    assert out.strip() == "The answer is 4."
    assert fake.calls[0].messages[-1].content == "What is 2+2?"


def test_json_prints_every_call(fake: FakeProvider, config: Path) -> None:
    code, out, _ = invoke("run", "q", "--config", str(config), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["output"] == "The answer is 4."
    assert [a["output"] for a in data["layers"][0]["agents"]] == ["alpha says 4", "beta says 5"]
    assert data["aggregator"]["model"] == "scripted:agg"
    assert data["usage"]["calls"] == 3
    assert set(data["layers"][0]["agents"][0]) >= {"model", "output", "error", "usage", "latency_s"}


def test_show_layers_prints_intermediate_answers(fake: FakeProvider, config: Path) -> None:
    code, out, err = invoke("run", "q", "--config", str(config), "--show-layers")
    assert code == 0
    assert "alpha says 4" in err and "beta says 5" in err and "layer 1" in err
    assert out.strip() == "The answer is 4."


def test_a_named_agents_panel_shows_its_model_id_as_text(
    fake: FakeProvider, tmp_path: Path
) -> None:
    path = tmp_path / "named.yaml"
    path.write_text(CONFIG.replace('{model: "scripted:a"}', '{model: "scripted:a", name: "first"}'))
    code, _, err = invoke("run", "q", "--config", str(path), "--show-layers")
    assert code == 0
    assert "first [scripted:a]" in err  # brackets are not read as rich markup


def test_stdin_prompt_and_system(fake: FakeProvider, config: Path) -> None:
    code, _, _ = invoke(
        "run", "-", "--config", str(config), "--system", "Be brief.", stdin="from stdin\n"
    )
    assert code == 0
    first = fake.calls[0].messages
    assert first[0].content == "Be brief." and first[1].content == "from stdin\n"


def test_failures_are_shown(fake: FakeProvider, config: Path) -> None:
    from moa.errors import ProviderStatusError

    fake.script("b", ProviderStatusError("model overloaded", status_code=400))
    code, _, err = invoke("run", "q", "--config", str(config), "--show-layers")
    assert code == 0 and "FAILED" in err and "model overloaded" in err


def test_bad_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("aggregator: {model: 'x:y', temprature: 1}")
    code, _, err = invoke("run", "q", "--config", str(path))
    assert code == 2 and "aggregator.temprature" in err


def test_quorum_failure_exits_1(fake: FakeProvider, config: Path) -> None:
    from moa.errors import ProviderStatusError

    fake.script("a", ProviderStatusError("a down", status_code=400))
    fake.script("b", ProviderStatusError("b down", status_code=400))
    code, _, err = invoke("run", "q", "--config", str(config))
    assert code == 1 and "a down" in err and "b down" in err


def test_chat_keeps_history(fake: FakeProvider, config: Path) -> None:
    code, _, _ = invoke("chat", "--config", str(config), stdin="first\nsecond\n/exit\n")
    assert code == 0
    last = fake.calls_for("agg")[-1].messages
    assert [m.role for m in last[1:]] == ["user", "assistant", "user"]
    assert last[-1].content == "second"


def test_bare_prompt_means_run(
    fake: FakeProvider, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["a bare question", "--config", str(config)])
    assert exit_info.value.code == 0
    assert "The answer is 4." in capsys.readouterr().out


def test_options_before_the_prompt_mean_run(
    fake: FakeProvider, config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--config", str(config), "a question"])
    assert exit_info.value.code == 0
    assert "The answer is 4." in capsys.readouterr().out


def test_chat_shows_every_turns_answer(fake: FakeProvider, config: Path) -> None:
    fake.script("agg", ["first answer", "second answer"])
    code, out, err = invoke(
        "chat", "--config", str(config), "--show-layers", stdin="one\ntwo\n/exit\n"
    )
    assert code == 0
    assert "first answer" in out and "second answer" in out
    assert err.count(" answer ─") == 2  # each turn's answer gets its own heading


def test_an_error_with_brackets_is_printed_as_it_is(fake: FakeProvider, config: Path) -> None:
    from moa.errors import ProviderStatusError

    for name in ("a", "b"):
        fake.script(name, ProviderStatusError("upstream said [/x] and [[A]]", status_code=400))
    code, _, err = invoke("run", "q", "--config", str(config))
    assert code == 1
    assert "upstream said [/x] and [[A]]" in err


def test_show_layers_shows_both_waves_of_an_adaptive_vote_as_one_layer(tmp_path: Path) -> None:
    from moa.testing import FunctionProvider
    from moa.types import CompletionRequest

    def sample(request: CompletionRequest) -> str:
        seed = request.params.seed or 0
        return f"sample {seed} says: The answer is {'78788'[seed]}"

    register_kind("waves-test", lambda name, settings, local: FunctionProvider(sample))
    path = tmp_path / "vote.yaml"
    path.write_text(
        "providers:\n  waves: {kind: waves-test}\naggregator: {model: 'waves:m'}\n"
        "strategy: {type: vote, samples: 5, greedy_first: true, adaptive: true}\n"
    )
    code, out, err = invoke("run", "q", "--config", str(path), "--show-layers")
    assert code == 0, err
    assert out.strip() == "sample 1 says: The answer is 8"
    assert all(f"sample {seed} says" in err for seed in range(5))
    assert "layer 1: 3 agent(s)" in err and "layer 1: 2 more agent(s)" in err


def test_python_dash_m_moa_is_the_same_command_line() -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "moa", "--version"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("moa ")
