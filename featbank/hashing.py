"""Content digests: the key that lets two tracks listing the same video share one bank row."""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HASH_THREADS = 4


def file_digest(path: Path) -> bytes:
    """SHA-256 of the file's bytes (hashlib releases the GIL, so threads overlap the reads)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").digest()


def digest_paths(paths: list[Path], cache: dict[tuple[str, int, int], bytes] | None = None) -> list[bytes]:
    """Digest of every path, reusing ``cache`` entries whose (path, size, mtime) still match."""
    cache = cache or {}

    def one(path: Path) -> bytes:
        st = path.stat()
        hit = cache.get((str(path.resolve()), st.st_size, st.st_mtime_ns))
        return hit if hit is not None else file_digest(path)

    with ThreadPoolExecutor(HASH_THREADS) as pool:
        return list(pool.map(one, paths))
