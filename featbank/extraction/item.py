"""Extraction of one item: decode once, run every requested extractor, pool, report per extractor.

This module knows nothing about banks or schedulers: it turns a file and a list of extractors into
:class:`~featbank.bank.store.StepFeatures`, one per extractor. A broken file fails every extractor of that
item with the decoder's message; an extractor that raises fails only itself; an item without an
audio track gives audio extractors an ``ABSENT`` row (flagged, all steps masked), not an error.
Nothing raised while decoding one item may stop a run over thousands: an unexpected exception (a
decoder bug, ``MemoryError`` on a huge frame) fails that item with its traceback, like an
extractor's own exception does.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import numpy as np

from extractors.base import Extractor
from featbank.bank.store import ABSENT, FAILED, OK, ItemRecord, StepFeatures
from featbank.errors import MediaError
from featbank.extraction.decode import STEP_BUFFERS, MediaSource, Step, audio_steps, iter_steps, open_media
from featbank.extraction.pixels import Luma, StepPixels
from featbank.extraction.sampling import Plan
from featbank.io.manifest import MediaItem


class StepRunner:
    """Collects one extractor's steps for one item and runs ``forward`` a batch at a time.

    Steps arrive in buffers the decoder hands to the next step once this one is added (see
    :func:`~featbank.extraction.decode.iter_steps`): an extractor that runs one step at a time gets
    a view of that buffer; a larger batch is built by copying each step into a batch buffer taken
    once per item from the same pool, instead of stacking fresh copies for every batch.
    """

    def __init__(self, extractor: Extractor, plan: Plan, text: str | None = None) -> None:
        self.extractor = extractor
        self.plan = plan
        self.text = text
        self.steps = np.full((plan.n_steps, extractor.step_dim), np.nan, dtype=np.float32)
        self._pending: list[tuple[int, Step]] = []
        self._batch: np.ndarray | None = None
        self.error: str | None = None

    def add(self, step: int, data: Step) -> None:
        if self.error is not None:
            return
        try:
            self._pending.append((step, self._keep(data, len(self._pending))))
        except Exception as exc:  # frames changing size mid-video: this row fails, not the run
            self._failed(exc)
            return
        if len(self._pending) >= self.extractor.batch_size:
            self.flush()

    def _keep(self, data: Step, row: int) -> Step:
        """What survives of ``data`` until the batch runs: ``data`` itself when it runs at once."""
        if self.extractor.batch_size == 1:
            return data
        if isinstance(data, StepPixels):
            luma = data.luma and Luma(data.luma.codes.copy(), data.luma.scale, data.luma.offset)
            return StepPixels(None if data.rgb is None else data.rgb.copy(), luma)
        if self._batch is None:
            self._batch = STEP_BUFFERS.take((self.extractor.batch_size, *data.shape), data.dtype)
        self._batch[row] = data
        return self._batch[row]

    def _batched(self) -> np.ndarray | list[StepPixels]:
        data = [d for _, d in self._pending]
        if isinstance(data[0], StepPixels):
            return data
        if self.extractor.batch_size == 1:
            return data[0][None]
        return self._batch[:len(data)]

    def flush(self) -> None:
        if not self._pending or self.error is not None:
            self._pending.clear()
            return
        index = [s for s, _ in self._pending]
        try:
            out = np.asarray(self.extractor.forward_item(self._batched(), np.asarray(index), self.text))
            if out.shape != (len(index), self.extractor.step_dim):
                raise ValueError(f"forward_item returned shape {out.shape}, "
                                 f"expected {(len(index), self.extractor.step_dim)}")
            self.steps[index] = out
        except Exception as exc:  # an extractor bug must fail this row, not the whole run
            self._failed(exc)
        self._pending.clear()

    def _failed(self, exc: Exception) -> None:
        self.error = f"{self.extractor.name} failed: {exc!r}\n{traceback.format_exc(limit=3)}"

    def fail(self, message: str) -> None:
        self.error = self.error or message

    def result(self) -> StepFeatures:
        self.flush()
        if self._batch is not None:
            STEP_BUFFERS.give(self._batch)
            self._batch = None
        if self.error is not None:
            return StepFeatures(status=FAILED, error=self.error)
        mask = np.ones(self.plan.n_steps, dtype=bool)
        return StepFeatures(
            status=OK,
            pooled=self.extractor.pool(self.steps, mask),
            steps=self.steps,
            mask=mask,
            timestamps=self.plan.timestamps.astype(np.float32),
            frame_indices=self.plan.frame_indices.astype(np.int32),
        )


def _unexpected(path: Path, what: str, exc: Exception) -> str:
    return f"{path}: unexpected error while {what}: {exc!r}\n{traceback.format_exc(limit=5)}"


def _run_video(source: MediaSource, runners: list[StepRunner]) -> None:
    try:
        plans, pixels = [r.plan for r in runners], [r.extractor.pixels for r in runners]
        for p, step, frames in iter_steps(source, plans, pixels, pool=STEP_BUFFERS):
            runners[p].add(step, frames)
    except MediaError as exc:
        for r in runners:
            r.fail(str(exc))
    except Exception as exc:  # see the module docstring: one item must not stop the run
        for r in runners:
            r.fail(_unexpected(source.path, "decoding frames", exc))


def _run_audio(source: MediaSource, runners: list[StepRunner]) -> dict[int, StepFeatures]:
    """Audio runners get their steps; without an audio track they are ``ABSENT`` instead."""
    absent: dict[int, StepFeatures] = {}
    tracks: dict[int, np.ndarray | None] = {}
    for i, r in enumerate(runners):
        rate = r.extractor.sampling.sample_rate
        try:
            if rate not in tracks:
                tracks[rate] = source.audio(rate)
        except MediaError as exc:
            r.fail(str(exc))
            continue
        except Exception as exc:  # see the module docstring
            r.fail(_unexpected(source.path, "decoding audio", exc))
            continue
        if tracks[rate] is None:
            absent[i] = StepFeatures(status=ABSENT, timestamps=r.plan.timestamps.astype(np.float32),
                                     error="no audio track")
            continue
        for step, chunk in enumerate(audio_steps(tracks[rate], r.plan, rate)):
            r.add(step, chunk)
    return absent


def extract_item(path: MediaItem, extractors: list[Extractor],
                 texts: dict[str, str] | None = None) -> tuple[ItemRecord, dict[str, StepFeatures]]:
    """Decode ``path`` once and return its probe record and one result per extractor key.

    ``texts`` holds the item's manifest text by column, for extractors that read one (prompts).
    """
    texts = texts or {}
    size = path.stat().st_size if isinstance(path, Path) and path.is_file() else 0
    try:
        source = open_media(path)
    except Exception as exc:  # MediaError is the expected kind; see the module docstring
        error = str(exc) if isinstance(exc, MediaError) else _unexpected(path, "opening", exc)
        return ItemRecord(None, size), {e.key: StepFeatures(status=FAILED, error=error) for e in extractors}
    runners = [StepRunner(e, e.sampling.plan(source.info), texts.get(e.text_column or "")) for e in extractors]
    video = [r for r in runners if r.extractor.sampling.modality == "video"]
    audio = [r for r in runners if r.extractor.sampling.modality == "audio"]
    _run_video(source, video)
    absent = _run_audio(source, audio)
    results = {r.extractor.key: r.result() for r in video}
    results.update({r.extractor.key: absent.get(i) or r.result() for i, r in enumerate(audio)})
    return ItemRecord(source.info, size), results
