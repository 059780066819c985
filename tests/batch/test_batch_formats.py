"""Input and output formats of ``moa batch``: every line gets an answer or its own error."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from batch_helpers import fake_mixture, read_lines, write_requests

from moa.batch import BatchOptions, LocalEngine, read_input, run_batch
from moa.errors import ConfigError


def _request(custom_id: str, content: str, **body: object) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o", "messages": [{"role": "user", "content": content}], **body},
        }
    )


def test_batch_api_output_lines_carry_the_server_completion_body(tmp_path: Path) -> None:
    source = write_requests(tmp_path / "in.jsonl", 3)
    summary = run_batch(BatchOptions(source, tmp_path / "out.jsonl"), fake_mixture)
    assert (summary.done, summary.failed, summary.complete) == (3, 0, True)
    lines = read_lines(tmp_path / "out.jsonl")
    assert [line["custom_id"] for line in lines] == ["req-0", "req-1", "req-2"]
    body = lines[0]["response"]["body"]  # type: ignore[index]
    assert lines[0]["response"]["status_code"] == 200  # type: ignore[index]
    assert body["object"] == "chat.completion"
    assert body["model"] == "fake-moa"
    assert body["choices"][0]["message"]["content"].startswith("omega answers ")
    assert [a["model"] for a in body["moa"]["layers"][0]["agents"]] == [
        "fake:alpha",
        "fake:beta",
        "fake:gamma",
    ]
    assert body["usage"]["total_tokens"] > 0
    assert body["moa"]["cost"] > 0
    bodies = [line["response"]["body"] for line in lines]  # type: ignore[index]
    assert summary.tokens == sum(b["usage"]["total_tokens"] for b in bodies)


def test_bad_lines_get_their_own_error_and_never_stop_the_others(tmp_path: Path) -> None:
    lines = [
        _request("good-1", "first"),
        "{this is not json",
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        _request("good-1", "again the same id"),
        json.dumps({"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {}}),
        _request("many", "two answers", n=2),
        _request("no-messages", "x").replace('"messages"', '"nessages"'),
        _request("fails-upstream", "PLEASE FAIL"),
        "",
        _request("good-2", "second"),
    ]
    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(lines) + "\n")
    summary = run_batch(BatchOptions(source, tmp_path / "out.jsonl"), fake_mixture)
    by_position = read_lines(tmp_path / "out.jsonl")
    assert len(by_position) == 9  # the blank line is no request
    assert summary.done == 2 and summary.failed == 7
    assert by_position[0]["response"]["status_code"] == 200  # type: ignore[index]
    assert "not valid JSON" in by_position[1]["error"]["message"]  # type: ignore[index]
    assert "no custom_id" in by_position[2]["error"]["message"]  # type: ignore[index]
    assert "repeats line 1" in by_position[3]["error"]["message"]  # type: ignore[index]
    assert "/v1/embeddings" in by_position[4]["error"]["message"]  # type: ignore[index]
    for line, param in ((by_position[5], "n"), (by_position[6], "messages")):
        assert line["response"]["status_code"] == 400  # type: ignore[index]
        assert line["response"]["body"]["error"]["param"] == param  # type: ignore[index]
    assert by_position[7]["response"]["status_code"] == 502  # type: ignore[index]
    assert by_position[8]["custom_id"] == "good-2"
    assert by_position[8]["response"]["status_code"] == 200  # type: ignore[index]


def test_a_request_may_choose_its_strategy_like_a_server_request(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(_request("q", "hi", moa={"quorum": 2}) + "\n")
    run_batch(BatchOptions(source, tmp_path / "out.jsonl"), fake_mixture)
    [line] = read_lines(tmp_path / "out.jsonl")
    assert line["response"]["status_code"] == 200  # type: ignore[index]


def _table_rows() -> list[dict[str, object]]:
    return [
        {"id": 1, "prompt": "What is 2+2?"},
        {"id": 2, "prompt": ""},
        {"id": 3, "prompt": "Name a colour."},
    ]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_tables_come_back_in_order_with_answer_usage_and_cost_columns(
    tmp_path: Path, suffix: str
) -> None:
    source = tmp_path / f"in{suffix}"
    rows = _table_rows()
    if suffix == ".jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".csv":
        with source.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "prompt"])
            writer.writeheader()
            writer.writerows(rows)
    else:
        parquet = pytest.importorskip("pyarrow.parquet")
        import pyarrow

        parquet.write_table(pyarrow.Table.from_pylist(rows), source)
    output = tmp_path / f"out{suffix}"
    summary = run_batch(BatchOptions(source, output, defaults={"max_tokens": 32}), fake_mixture)
    assert (summary.done, summary.failed) == (2, 1)
    if suffix == ".jsonl":
        table = read_lines(output)
    elif suffix == ".csv":
        with output.open(newline="") as handle:
            table = list(csv.DictReader(handle))
    else:
        import pyarrow.parquet as parquet

        table = parquet.read_table(output).to_pylist()
    assert [str(row["id"]) for row in table] == ["1", "2", "3"]
    assert str(table[0]["answer"]).startswith("omega answers ")
    assert int(table[0]["total_tokens"]) > 0  # type: ignore[call-overload]
    assert float(table[0]["cost"]) > 0  # type: ignore[arg-type]
    assert table[1]["answer"] in (None, "")
    assert "empty" in str(table[1]["error"])
    assert not (tmp_path / f"out{suffix}.partial.jsonl").exists()


def test_a_messages_column_and_a_system_prompt(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    conversation = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Bye"},
    ]
    source.write_text(json.dumps({"chat": conversation}) + "\n")
    data = read_input(source, column="chat", system="Be brief.")
    request = json.loads(data.items[0].request or "")
    assert request["messages"][0] == {"role": "system", "content": "Be brief."}
    assert request["messages"][1:] == conversation
    run_batch(BatchOptions(source, tmp_path / "out.jsonl", column="chat"), fake_mixture)
    assert read_lines(tmp_path / "out.jsonl")[0]["answer"]


def test_a_missing_column_or_unknown_format_is_a_config_error(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ConfigError, match="--column"):
        read_input(source)
    other = tmp_path / "in.txt"
    other.write_text("x")
    with pytest.raises(ConfigError, match=r"\.jsonl"):
        read_input(other)
    requests = write_requests(tmp_path / "req.jsonl", 1)
    with pytest.raises(ConfigError, match=r"Batch API output is \.jsonl"):
        run_batch(BatchOptions(requests, tmp_path / "out.csv"), fake_mixture, LocalEngine())


def test_line_separators_inside_strings_do_not_split_a_line(tmp_path: Path) -> None:
    source = tmp_path / "in.jsonl"
    rows = [{"prompt": "first\u2028line"}, {"prompt": "second\x85line"}]
    source.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    data = read_input(source)
    assert [json.loads(i.request or "")["messages"][-1]["content"] for i in data.items] == [
        "first\u2028line",
        "second\x85line",
    ]
    run_batch(BatchOptions(source, tmp_path / "out.jsonl"), fake_mixture)
    run_batch(BatchOptions(source, tmp_path / "out.jsonl"), fake_mixture)  # resumes: reads it back
    assert [line["error"] for line in read_lines(tmp_path / "out.jsonl")] == [None, None]
