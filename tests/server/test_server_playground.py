"""The playground in a real headless Chromium, end to end against a mixture of fakes."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_helpers import ANSWER, ServeFactory, fake_mixture

from moa import Mixture, MixtureSpec, ProviderRegistry, ProviderStatusError
from moa.testing import FakeProvider, FunctionProvider
from moa.types import CompletionRequest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing: apt-get install -y chromium (CI installs it)",
)

MIXTURE = {
    "name": "fake-moa",
    "layers": [[{"model": "fake:a"}, {"model": "fake:b"}, {"model": "fake:c"}]],
    "aggregator": {"model": "fake:agg"},
    "retry": {"max_attempts": 1},
}


@pytest.fixture
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser.new_page(viewport={"width": 1280, "height": 900})
        finally:
            browser.close()


def ask(page: Any, question: str) -> None:
    page.fill("#prompt", question)
    page.click("#send")


def test_a_question_fills_the_graph_and_streams_the_answer(
    serve: ServeFactory, page: Any, tmp_path: Path
) -> None:
    fake = FakeProvider(
        replies={
            "a": "Alpha thinks the answer is 4.",
            "b": "Beta thinks it is 5.",
            "c": "Gamma also says 4.",
            "agg": ["Two plus two is 4.", "Then add one: 5."],
        },
        token_delay={"a": 0.15, "b": 0.02, "c": 0.02, "agg": 0.1},
    )
    base = serve(mixtures={"fake-moa": fake_mixture(fake, MIXTURE)})
    page.goto(base + "/")
    page.wait_for_selector("#model option[value='fake-moa']", state="attached")
    ask(page, "What is 2 + 2?")
    # Live: a card shows its text while its agent still writes, and so does the answer.
    page.wait_for_selector(".agent-card.working .text:not(:empty)")
    page.wait_for_selector(".message.assistant.streaming .body:not(:empty)")

    answer = page.locator(".message.assistant").last
    answer.locator(".body").filter(has_text="Two plus two is 4.").wait_for()
    page.wait_for_selector("#send:not([disabled])")

    proposers = page.locator(".layer.proposer .agent-card")
    assert proposers.count() == 3
    texts = [proposers.nth(i).locator(".text").inner_text() for i in range(3)]
    assert texts == ["Alpha thinks the answer is 4.", "Beta thinks it is 5.", "Gamma also says 4."]
    for i in range(3):
        card = proposers.nth(i)
        assert "done" in (card.get_attribute("class") or "")
        assert "tokens" in card.locator(".stats").inner_text()
        assert " s" in card.locator(".stats").inner_text()
    aggregator = page.locator(".layer.aggregator .agent-card")
    assert aggregator.count() == 1
    assert aggregator.locator(".text").inner_text() == "Two plus two is 4."
    assert "3 answered" in page.locator(".layer.proposer .tally").inner_text()
    assert "4 calls" in page.locator("#totals").inner_text()
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

    # The answer just made can be compared with one model (served by the pass-through).
    assert page.input_value("#compare-model") == "fake:agg"
    page.click("#compare")
    page.wait_for_selector("#comparison .side.single.done")
    assert page.locator("#comparison .side.mixture .text").inner_text() == "Two plus two is 4."
    assert page.locator("#comparison .side.single .text").inner_text() == ANSWER

    # A second turn sends the whole conversation.
    ask(page, "And plus one?")
    page.locator(".message.assistant").nth(1).locator(".body").filter(
        has_text="Then add one: 5."
    ).wait_for()
    second = fake.calls_for("agg")[-1]
    turns = [(m.role, m.content) for m in second.messages if m.role != "system"]
    assert turns == [
        ("user", "What is 2 + 2?"),
        ("assistant", "Two plus two is 4."),
        ("user", "And plus one?"),
    ]


def test_the_second_wave_of_an_adaptive_vote_joins_its_layer(
    serve: ServeFactory, page: Any
) -> None:
    def sample(request: CompletionRequest) -> str:
        seed = request.params.seed or 0
        return f"sample {seed}: the answer is {'78788'[seed]}"

    strategy = {"type": "vote", "samples": 5, "greedy_first": True, "adaptive": True}
    spec = {"name": "fake-moa", "aggregator": {"model": "fake:m"}, "strategy": strategy}
    provider = ProviderRegistry().add("fake", FunctionProvider(sample))
    base = serve(mixtures={"fake-moa": Mixture(MixtureSpec.model_validate(spec), provider)})
    page.goto(base + "/")
    page.wait_for_selector("#model option[value='fake-moa']", state="attached")
    ask(page, "What is 2 + 2?")
    answer = page.locator(".message.assistant .body")
    answer.filter(has_text="sample 1: the answer is 8").wait_for()
    page.wait_for_selector("#send:not([disabled])")
    assert page.locator(".layer.proposer").count() == 1
    cards = page.locator(".layer.proposer .agent-card")
    assert cards.count() == 5
    texts = [cards.nth(i).locator(".text").inner_text() for i in range(5)]
    assert texts == [f"sample {seed}: the answer is {'78788'[seed]}" for seed in range(5)]
    assert all("done" in (cards.nth(i).get_attribute("class") or "") for i in range(5))
    assert page.locator(".layer.proposer .tally").inner_text() == "5 answered"


def test_failed_agents_and_errors_are_shown(serve: ServeFactory, page: Any) -> None:
    fake = FakeProvider(
        replies={"b": ProviderStatusError("upstream overloaded", status_code=503), "agg": "Fine."}
    )
    broken = FakeProvider(
        replies={"a": RuntimeError("x"), "b": RuntimeError("y"), "c": RuntimeError("z")}
    )
    base = serve(
        mixtures={
            "fake-moa": fake_mixture(fake, MIXTURE),
            "broken": fake_mixture(broken, {**MIXTURE, "name": "broken"}),
        }
    )
    page.goto(base + "/")
    page.wait_for_selector("#model option[value='fake-moa']", state="attached")
    page.select_option("#model", "fake-moa")
    ask(page, "Hello?")
    page.locator(".message.assistant .body").filter(has_text="Fine.").wait_for()
    failed = page.locator(".agent-card.failed")
    assert failed.count() == 1
    assert "upstream overloaded" in failed.locator(".error").inner_text()
    assert "1 failed" in page.locator(".layer.proposer .tally").inner_text()

    page.select_option("#model", "broken")
    ask(page, "Hello again?")
    error = page.locator(".message.error").last
    error.wait_for()
    assert "fewer than 1 agent" in error.inner_text()


def test_the_key_field_unlocks_a_server_with_keys(serve: ServeFactory, page: Any) -> None:
    from pydantic import SecretStr

    base = serve(api_keys=(SecretStr("pw-123"),))
    page.goto(base + "/")
    notice = page.locator("#notice")
    notice.filter(has_text="API key").wait_for()
    assert page.locator("#model option").count() == 0
    page.locator("#runs-empty").filter(has_text="API key").wait_for()
    page.fill("#api-key", "pw-123")
    page.dispatch_event("#api-key", "change")
    page.wait_for_selector("#model option[value='fake-moa']", state="attached")
    ask(page, "Hi?")
    page.locator(".message.assistant .body").filter(has_text="The final answer is four.").wait_for()
    # The history list is read with the same key, and looks again after the answer.
    page.locator("#runs-list .run").filter(has_text="Hi?").wait_for()


HOSTILE = '<img src="x" onerror="window.pwned = 1"><b>bold</b>'


def _wait_for_runs(base: str, count: int) -> list[dict[str, Any]]:
    """The server's runs, once its background writer has written ``count`` of them."""
    deadline = time.monotonic() + 10
    while True:
        runs: list[dict[str, Any]] = httpx.get(f"{base}/v1/moa/runs").json()["data"]
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        time.sleep(0.02)


def test_history_opens_a_past_run_and_compares_it_with_one_model(
    serve: ServeFactory, fake: FakeProvider, page: Any, tmp_path: Path
) -> None:
    fake.script("b", ProviderStatusError("upstream overloaded", status_code=400))
    fake.script("c", HOSTILE)
    fake.script("solo", "Solo says eight, " + HOSTILE)
    base = serve()
    question = [{"role": "user", "content": "How many legs has a spider?"}]
    made = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "fake-moa", "messages": question}
    )
    assert made.status_code == 200
    [run] = _wait_for_runs(base, 1)

    page.goto(base + "/")
    entry = page.locator("#runs-list .run")
    entry.first.wait_for()
    assert entry.count() == 1
    listed = entry.inner_text()
    assert "fake-moa" in listed and "How many legs has a spider?" in listed
    assert "1 failed" in listed and "failed" in (entry.get_attribute("class") or "")

    # Opening it draws its conversation and every call as the live cards do.
    entry.click()
    page.wait_for_selector(".layer.aggregator .agent-card")
    assert page.locator(".message.user .body").inner_text() == "How many legs has a spider?"
    assert page.locator(".message.assistant .body").inner_text() == "The final answer is four."
    proposers = page.locator(".layer.proposer .agent-card")
    assert proposers.count() == 3
    assert proposers.nth(0).locator(".text").inner_text() == "alpha: 4"
    assert "upstream overloaded" in proposers.nth(1).locator(".error").inner_text()
    assert "failed" in (proposers.nth(1).get_attribute("class") or "")
    assert proposers.nth(2).locator(".text").inner_text() == HOSTILE  # shown as text
    assert "2 answered, 1 failed" in page.locator(".layer.proposer .tally").inner_text()
    aggregator = page.locator(".layer.aggregator .agent-card .text")
    assert aggregator.inner_text() == "The final answer is four."
    assert "4 calls" in page.locator("#totals").inner_text()
    assert run["id"][:12] in page.locator("#run-info").inner_text()
    assert "opened" in (entry.get_attribute("class") or "")

    # The search box asks the server's full-text search.
    page.fill("#runs-search", "beetle")
    page.press("#runs-search", "Enter")
    page.locator("#runs-empty").filter(has_text="No run matches").wait_for()
    page.fill("#runs-search", "spider")
    page.press("#runs-search", "Enter")
    page.locator("#runs-list .run").first.wait_for()
    page.fill("#runs-search", "")

    # Compare: the aggregator's model is offered; another single model is asked the same.
    assert page.input_value("#compare-model") == "fake:agg"
    assert page.locator("#comparison").is_hidden()
    page.fill("#compare-model", "fake:solo")
    page.click("#compare")
    page.wait_for_selector("#comparison .side.single.done")
    mixture_side = page.locator("#comparison .side.mixture")
    single_side = page.locator("#comparison .side.single")
    assert mixture_side.locator("h3").inner_text() == "fake-moa"
    assert mixture_side.locator(".text").inner_text() == "The final answer is four."
    assert "4 calls" in mixture_side.locator(".stats").inner_text()
    assert single_side.locator("h3").inner_text() == "fake:solo"
    assert single_side.locator(".text").inner_text() == "Solo says eight, " + HOSTILE
    assert "1 calls" in single_side.locator(".stats").inner_text()
    [solo] = fake.calls_for("solo")
    assert [(m.role, m.content) for m in solo.messages] == [("user", "How many legs has a spider?")]
    # Model text never became markup.
    assert page.locator("#graph img, #graph b, #messages img").count() == 0
    assert page.evaluate("window.pwned") is None
    page.screenshot(path=str(tmp_path / "playground-history.png"), full_page=True)

    # A follow-up continues the opened conversation; the list then shows every run made.
    ask(page, "And a beetle?")
    page.locator(".message.assistant").nth(1).locator(".body").filter(
        has_text="The final answer is four."
    ).wait_for()
    turns = [(m.role, m.content) for m in fake.calls_for("agg")[-1].messages if m.role != "system"]
    assert turns == [
        ("user", "How many legs has a spider?"),
        ("assistant", "The final answer is four."),
        ("user", "And a beetle?"),
    ]
    _wait_for_runs(base, 3)
    page.click("#runs-refresh")
    page.wait_for_function("document.querySelectorAll('#runs-list .run').length === 3")
    assert "fake:solo" in page.locator("#runs-list .run").nth(1).inner_text()


def test_history_says_when_the_server_keeps_none(serve: ServeFactory, page: Any) -> None:
    base = serve(history=False)
    page.goto(base + "/")
    page.locator("#runs-empty").filter(has_text="--no-history").wait_for()
    assert page.locator("#runs-list .run").count() == 0


def test_a_failed_run_opens_with_its_error(serve: ServeFactory, page: Any) -> None:
    broken = FakeProvider(
        replies={"a": RuntimeError("x"), "b": RuntimeError("y"), "c": RuntimeError("z")}
    )
    base = serve(mixtures={"broken": fake_mixture(broken, {**MIXTURE, "name": "broken"})})
    question = [{"role": "user", "content": "Anyone there?"}]
    failed = httpx.post(
        f"{base}/v1/chat/completions", json={"model": "broken", "messages": question}
    )
    assert failed.status_code >= 400
    _wait_for_runs(base, 1)
    page.goto(base + "/")
    page.click("#runs-list .run.failed")
    page.locator(".message.error .body").filter(has_text="QuorumError").wait_for()
    assert page.locator(".layer.proposer .agent-card.failed").count() == 3
    assert page.locator(".layer.aggregator").count() == 0
    assert page.locator("#compare-bar").is_hidden()  # no answer to compare with
