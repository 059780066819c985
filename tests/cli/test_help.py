"""Every command's help reads as prose at any terminal width."""

from __future__ import annotations

import typer
from typer.main import get_command
from typer.testing import CliRunner

from moa.cli.common import unwrap_help
from moa.cli.main import app


def commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    names = [(*prefix, info.name or "") for info in group.registered_commands]
    for sub in group.registered_groups:
        assert sub.typer_instance is not None and sub.name
        names += commands(sub.typer_instance, (*prefix, sub.name))
    return names


def test_no_paragraph_of_any_commands_help_breaks_where_the_source_did() -> None:
    root = get_command(app)
    paths = commands(app)
    assert ("select",) in paths and ("judge", "validate") in paths
    for path in paths:
        command = root
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (path, paragraph)
    narrow = CliRunner().invoke(app, ["select", "--help"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0
    said = narrow.output.splitlines()
    # The sentence flows on: the line that ends a wrapped line is followed by its words.
    assert not any(line.rstrip().endswith("on the held-out") for line in said)


def test_a_list_keeps_its_lines() -> None:
    group = typer.Typer()

    @group.command()
    def listed() -> None:
        """Title.

        Two kinds:
        - one
        - two

        A wrapped
        paragraph.
        """

    unwrap_help(group)
    assert group.registered_commands[0].help == (
        "Title.\n\nTwo kinds:\n- one\n- two\n\nA wrapped paragraph."
    )
