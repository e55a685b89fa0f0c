"""Pretrained checkpoints, found on local disk only.

featbank never downloads weights: machines that run it often have no route to a model hub, and a
silent download (or a silent fall-back to random weights) would corrupt a feature bank without
anyone noticing. An extractor that needs a checkpoint declares a :class:`WeightsSpec`; at set-up
the file is looked up on local disk (the user's weights directory first, then the torch-hub and
Hugging Face caches where those tools would have put it) and its SHA-256 is checked.

Some upstreams publish a checksum (OpenAI's CLIP URLs carry it); most do not. For those the spec
says ``sha256=None`` and featbank pins the file the first time it is imported into the weights
directory (``featbank weights import``), in ``featbank-weights.lock.json``: later runs check the
file against that pin, and every bank group records the checksum of the file it was built with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from featbank.errors import WeightsMissingError

WEIGHTS_ENV = "FEATBANK_WEIGHTS"
LOCK_NAME = "featbank-weights.lock.json"


@dataclass(frozen=True)
class WeightsSpec:
    """One checkpoint file: where it comes from, what it must hash to, and under what terms.

    ``sha256`` is ``None`` when the upstream publishes no checksum (see the module docstring).
    ``hf_repo``/``hf_filename`` name the file inside a Hugging Face cache snapshot, when the
    upstream distributes it there, so a cache filled elsewhere is found without copying.
    ``tool_cache`` is the folder (``~`` allowed) the upstream's own loader downloads into, for
    the same reason (OpenAI's ``clip.load`` keeps ``ViT-B-32.pt`` in ``~/.cache/clip``).
    ``snapshot`` says the checkpoint is the whole folder holding ``filename`` (a Hugging Face
    snapshot: config, code, tokenizer, shards), which ``featbank weights import`` copies whole;
    ``filename`` is its key file, the one that is checksummed.
    """

    filename: str
    sha256: str | None
    source: str
    license: str
    non_commercial: bool = False
    hf_repo: str | None = None
    hf_filename: str | None = None
    tool_cache: str | None = None
    snapshot: bool = False

    def describe(self) -> str:
        pin = self.sha256 or "not published upstream (pinned on `featbank weights import`)"
        terms = f"{self.license}{', NON-COMMERCIAL' if self.non_commercial else ''}"
        return f"{self.filename} (sha256 {pin}; license {terms}); obtain it from {self.source}"


@dataclass(frozen=True)
class WeightsPolicy:
    """How a run finds and accepts weights; picklable, so dask workers get the same policy.

    ``random`` builds every deep extractor with seeded random weights instead of loading them:
    for tests and pipeline dry-runs only, only on request, and recorded in the bank (the groups get
    their own keys, so random features never mix with real ones). ``accept_non_commercial`` is the
    explicit opt-in that checkpoints under non-commercial licences require.
    """

    directory: Path | None = None
    random: bool = False
    accept_non_commercial: bool = False


@dataclass(frozen=True)
class ResolvedWeights:
    """A checkpoint found on disk and verified: what provenance records."""

    path: Path
    sha256: str
    pinned_by: str  # "upstream", "lock" or "unpinned"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The directory given on the command line, else ``$FEATBANK_WEIGHTS``, else none."""
    chosen = explicit or os.environ.get(WEIGHTS_ENV)
    return Path(chosen).expanduser() if chosen else None


def _torch_hub_dir() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")).expanduser() / "hub" / "checkpoints"


def _hf_hub_dir() -> Path:
    if "HF_HUB_CACHE" in os.environ:
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    return home / "hub"


def candidates(spec: WeightsSpec, directory: Path | None) -> Iterator[Path]:
    """Where a checkpoint may lie, in the order they are tried."""
    if directory is not None:
        yield directory / spec.filename
    yield _torch_hub_dir() / spec.filename
    if spec.tool_cache:
        yield Path(spec.tool_cache).expanduser() / spec.filename
    if spec.hf_repo:
        snapshots = _hf_hub_dir() / f"models--{spec.hf_repo.replace('/', '--')}" / "snapshots"
        if snapshots.is_dir():
            yield from sorted(snapshots.glob(f"*/{spec.hf_filename or spec.filename}"))


def read_lock(directory: Path | None) -> dict[str, str]:
    if directory is None or not (directory / LOCK_NAME).is_file():
        return {}
    return json.loads((directory / LOCK_NAME).read_text())


def _howto(spec: WeightsSpec) -> str:
    return (f"featbank needs {spec.describe()}. Place it in the weights directory (--weights-dir or "
            f"${WEIGHTS_ENV}) or import it with `featbank weights import PATH`.")


def expected_sha256(spec: WeightsSpec, directory: Path | None) -> tuple[str | None, str]:
    """The checksum a file must have, and who says so: upstream, the lock file, or nobody yet."""
    if spec.sha256:
        return spec.sha256, "upstream"
    pinned = read_lock(directory).get(spec.filename)
    return (pinned, "lock") if pinned else (None, "unpinned")


def resolve(spec: WeightsSpec, policy: WeightsPolicy | Path | None) -> ResolvedWeights:
    """A verified checkpoint, or one error that says exactly what is missing and how to obtain it."""
    if not isinstance(policy, WeightsPolicy):
        policy = WeightsPolicy(directory=policy)
    if spec.non_commercial and not policy.accept_non_commercial:
        raise WeightsMissingError(
            f"{spec.filename} is licensed {spec.license}, which forbids commercial use; pass "
            f"--accept-non-commercial to confirm this run is non-commercial research.")
    tried = list(candidates(spec, policy.directory))
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        where = ", ".join(str(p) for p in tried) if tried else "nowhere (no weights directory is set)"
        raise WeightsMissingError(f"{spec.filename} was not found (looked in {where}). {_howto(spec)}")
    expected, pinned_by = expected_sha256(spec, policy.directory)
    actual = sha256_of(found)
    if expected is not None and actual != expected:
        raise WeightsMissingError(f"{found} has sha256 {actual}, expected {expected} ({pinned_by}). "
                                  f"{_howto(spec)}")
    return ResolvedWeights(found, actual, pinned_by)


def import_weights(source: Path, spec: WeightsSpec, directory: Path,
                   verify: Callable[[Path], None] | None = None) -> ResolvedWeights:
    """Copy a checkpoint into the weights directory under its expected name and pin it.

    ``source`` is the file, or for a snapshot checkpoint (``spec.snapshot``) the folder that holds
    its key file; the whole folder is copied and the key file is what gets pinned. A file whose
    upstream checksum is known must match it; an unpinned one is pinned now, so a later replacement
    of the file (a re-download of a different release) is caught. ``verify`` (the extractor's strict
    load check) runs on the key file before anything is copied or pinned: a pin vouches for a file
    only once that file has been shown to be the model, never for a README saved under its name.
    The copy lands under a ``.partial`` name and is renamed into place, so an interrupted import
    leaves nothing half-copied under the expected name.
    """
    if source.is_dir() and not spec.snapshot:
        raise WeightsMissingError(f"{source} is a folder, but {spec.filename} is one file: import the file itself")
    key_file = source / Path(spec.filename).name if source.is_dir() else source
    if not key_file.is_file():
        raise WeightsMissingError(f"{key_file} does not exist")
    actual = sha256_of(key_file)
    expected, pinned_by = expected_sha256(spec, directory)
    if expected is not None and actual != expected:
        raise WeightsMissingError(f"{key_file} has sha256 {actual}, but {spec.filename} must have "
                                  f"{expected} ({pinned_by}); it is not the file featbank expects")
    if verify is not None:
        try:
            verify(key_file)
        except WeightsMissingError as exc:
            raise WeightsMissingError(f"{exc}. Nothing was imported or pinned.") from exc
    target = directory / spec.filename
    if key_file is source:
        _copy_into_place(source, target, shutil.copyfile)
    else:
        _copy_into_place(source, target.parent, shutil.copytree)
    if spec.sha256 is None:
        lock = read_lock(directory)
        lock[spec.filename] = actual
        partial_lock = directory / (LOCK_NAME + ".partial")
        partial_lock.write_text(json.dumps(lock, indent=2, sort_keys=True) + "\n")
        partial_lock.replace(directory / LOCK_NAME)
    return ResolvedWeights(target, actual, "upstream" if spec.sha256 else "lock")


def _copy_into_place(source: Path, target: Path, copy: Callable[[Path, Path], object]) -> None:
    """``copy`` to ``target.partial``, then swap it in for ``target`` (a file or a folder)."""
    if source.resolve() == target.resolve():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    partial, old = (target.with_name(target.name + suffix) for suffix in (".partial", ".replaced"))
    for leftover in (partial, old):  # from an interrupted import
        if leftover.is_dir():
            shutil.rmtree(leftover)
    copy(source, partial)
    if target.is_dir():
        target.replace(old)
        partial.replace(target)
        shutil.rmtree(old)
    else:
        partial.replace(target)
