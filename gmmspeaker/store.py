"""HDF5 feature store: features computed once, cached per utterance, streamed in chunks.

Layout of a store directory::

    store/
      manifest.json          utterance id -> shard, frame counts, source signature;
                             the feature config and its hash; written atomically
      shard-<random>.h5      "frames": every utterance of the shard, one after the other,
                             (n_frames, dim) float32, chunked; "ids", "offsets" (n + 1),
                             "n_total" (frames before VAD) index it
      .lock                  held by the one process extracting into the store; a second
                             writer stops with a one-line error naming the holder's pid

Each shard is built in memory by exactly one worker, written under a temporary name and
renamed when complete, so a crash never leaves a half-written shard that the store trusts
(and a full disk is a one-line error, see :func:`gmmspeaker._io.atomic_h5`). A shard
carries its own index (ids, offsets, source paths and signatures): once renamed it is
durable, even if the manifest (rewritten temp + rename at most every
:data:`MANIFEST_INTERVAL` seconds, so that a run costs O(utterances) manifest writing, not
O(utterances^2)) never heard of it. The next extraction adopts such shards' utterances
whose source files are unchanged, and deletes the other orphans. An utterance is recomputed
when its audio file changed (see :func:`source_signature`; opt-in: its bytes,
:func:`content_hash`) or the feature config changed;
if it can no longer be used, its entry is removed (never left serving the old frames).
A source is stat'ed before it is read and again after; a file replaced meanwhile is read
again. Entries of a missing or unreadable shard are recomputed by the next extraction.
Shard names are random and never reused (see :func:`_new_shard_name`).

Why one contiguous dataset per shard rather than one dataset per utterance: EM reads every
frame once per iteration, and h5py costs about a millisecond per dataset access. With
thousands of short utterances (FSDD: 0.4 s each) per-utterance datasets made reading
dominate UBM training; contiguous frames are streamed with one slice per run of
neighbouring utterances.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gmmspeaker._io import atomic_h5, atomic_write_json, file_lock
from gmmspeaker._typing import PathLike
from gmmspeaker.errors import AudioError, DataError, GmmSpeakerError, SkippedInputWarning

__all__ = [
    "FeatureStore",
    "ChunkSource",
    "ExtractionReport",
    "extract_to_store",
    "config_hash",
    "source_signature",
    "content_hash",
]

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
#: Lock file held by the one process that writes a store (a second writer stops).
LOCK = ".lock"
#: Seconds between manifest rewrites while extracting. Finished shards do not depend on it:
#: each is self-describing and adopted by the next run if the manifest missed it.
MANIFEST_INTERVAL = 5.0
STORE_VERSION = 2  # 2: contiguous frames per shard (1: one dataset per utterance)


def config_hash(config_dict: dict[str, Any]) -> str:
    """Stable SHA-1 of a JSON-serialisable configuration."""
    blob = json.dumps(config_dict, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha1(blob).hexdigest()


def store_key(config_dict: dict[str, Any], channel: int | str | None = None) -> str:
    """What a feature store's frames depend on besides the audio: the front-end configuration
    and the channel read from multi-channel files (the hash a store records and checks).

    Averaging the channels (``None`` or ``"mix"``) keeps the configuration's own hash, so
    stores made before channels could be chosen stay valid.
    """
    if channel is None or channel == "mix":
        return config_hash(config_dict)
    return config_hash({**config_dict, "channel": int(channel)})


class _UtteranceBar:
    """The features progress bar: it moves per utterance, as the workers finish them.

    Workers put a 1 per utterance on a queue served by a ``multiprocessing.Manager`` of
    this process, and a thread here moves the bar. Under a Dask backend the workers may
    run on other machines that cannot reach that queue, so there the bar moves per
    finished shard instead.

    Parameters
    ----------
    total : int
        Utterances to extract.
    backend : str or None
        The joblib backend named by the caller (None: the active one).
    """

    def __init__(self, total: int, backend: str | None) -> None:
        import threading

        from joblib.parallel import get_active_backend
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc="features", unit="utt")
        self.ticks: Any = None
        self._manager: Any = None
        self._thread: threading.Thread | None = None
        dask = backend == "dask" or type(get_active_backend()[0]).__name__.startswith("Dask")
        if not dask:
            import multiprocessing

            self._manager = multiprocessing.Manager()
            self.ticks = self._manager.Queue()
            self._thread = threading.Thread(target=self._drain, name="features-progress", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            n = self.ticks.get()
            if n is None:
                return
            self.bar.update(n)

    def shard_done(self, n_utterances: int) -> None:
        """A shard of ``n_utterances`` finished (moves the bar only where workers cannot)."""
        if self.ticks is None:
            self.bar.update(n_utterances)

    def close(self) -> None:
        """Wait for the last ticks, stop the queue's server, close the bar."""
        if self._thread is not None:
            self.ticks.put(None)
            self._thread.join()
            self._manager.shutdown()
        self.bar.close()


def _new_shard_name(store_dir: Path) -> str:
    """A shard name never used before in ``store_dir``.

    Names are random, not derived from the shard's contents: a name that hashed the id
    list was reused when the same ids were extracted again, and a manifest entry left
    from the earlier write then pointed at rows of the new shard, which may belong to
    another utterance. A fresh name per write makes such an entry point at a file that
    no longer exists (a clear error) instead of at someone else's frames, and costs
    nothing on read, unlike a per-entry checksum verified on every EM pass.
    """
    while True:
        name = f"shard-{uuid.uuid4().hex[:16]}.h5"
        if not (store_dir / name).exists():
            return name


def source_signature(path: PathLike) -> list[int]:
    """What says an audio file is unchanged: ``[size, mtime_ns, inode, ctime_ns]``.

    Size and modification time alone miss a file rewritten and ``touch -r``-ed back and
    two equal-size files swapped by renaming (an unpacked archive gives all its files one
    mtime). The inode changes when another file is renamed over the path, and the status
    change time (ctime) changes on every write, rename or ``touch`` and cannot be set back,
    so either catches both. Metadata-only changes (``chmod``, a copy to another disk) also
    change it: the utterance is then recomputed, never served stale. For a check of the
    bytes themselves see :func:`content_hash` (``extract_to_store(content_check=True)``).
    """
    st = os.stat(path)
    return [int(st.st_size), int(st.st_mtime_ns), int(st.st_ino), int(st.st_ctime_ns)]


def content_hash(path: PathLike) -> str:
    """SHA-256 (hex) of a file's bytes: the opt-in content check of the feature store."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


#: Attempts to read a source file that keeps changing while it is read.
READ_ATTEMPTS = 3


def _read_source(
    src: Path, config: Any, resample: bool, content_check: bool, channel: int | str | None = None
) -> tuple[Any, list[int], str | None, int]:
    """Features of one audio file with the signature (and hash) of the bytes they come from,
    and its number of channels (``channel`` picks one, else they are averaged, as
    :func:`~gmmspeaker.audio.load_audio` does).

    The file is stat'ed before it is read and again after: a file replaced or rewritten
    while it was read is read again (up to :data:`READ_ATTEMPTS` times), so the recorded
    signature always describes the frames stored, never a newer file.
    """
    from gmmspeaker.audio import read_audio
    from gmmspeaker.features import extract

    for _ in range(READ_ATTEMPTS):
        try:
            before = source_signature(src)
            digest = content_hash(src) if content_check else None
        except OSError as exc:
            raise AudioError(f"{src}: cannot read audio file ({exc.strerror or exc})") from None
        signal, _, channels = read_audio(  # the channels from the same open
            src,
            sample_rate=config.sample_rate,
            resample_audio=resample,
            min_samples=config.frame_length_samples,
            channel=channel,
        )
        feats = extract(signal, config, name=str(src))
        if _signature_or_none(src) == before:
            return feats, before, digest, channels
        logger.info("%s changed while it was read; reading it again", src)
    raise AudioError(
        f"{src}: the file kept changing while it was read ({READ_ATTEMPTS} attempts); retry when it is complete"
    )


@dataclass
class ExtractionReport:
    """What :func:`extract_to_store` did.

    Attributes
    ----------
    computed, cached : list of str
        Utterance ids extracted in this call / found up to date in the store.
    skipped : dict of str to str
        Utterance id -> reason, for bad audio skipped with ``on_bad_audio="skip"``.
    frames_total, frames_kept : int
        Frames before and after VAD over the utterances computed in this call.
    """

    computed: list[str] = field(default_factory=list)
    cached: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    frames_total: int = 0
    frames_kept: int = 0

    @property
    def kept_fraction(self) -> float:
        """Fraction of frames VAD kept over the utterances computed in this call."""
        return self.frames_kept / self.frames_total if self.frames_total else float("nan")


def _extract_shard(
    items: list[tuple[str, str]],
    store_dir: str,
    shard_name: str,
    config_dict: dict[str, Any],
    compression: str | None,
    resample: bool,
    ticks: Any = None,
    content_check: bool = False,
    channel: int | str | None = None,
    store_hash: str | None = None,
) -> tuple[str, dict[str, dict[str, Any]], dict[str, str]]:
    """Worker: extract ``items`` [(utt_id, path)] into one shard; return metadata and failures.

    ``ticks``, a queue (or None), receives a 1 per utterance done, for a progress bar.
    ``store_hash`` is the store's key (:func:`store_key`), written into the shard.
    """
    import h5py

    from gmmspeaker.features import FeatureConfig

    config = FeatureConfig.from_dict(config_dict)
    final = Path(store_dir) / shard_name
    meta: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    dim = config.dim
    # built in memory and written in one go (atomic_h5): a full disk is a one-line error
    # naming the shard and its size, never an HDF5 failure half-way (which crashed h5py)
    with atomic_h5(final) as h5:
        h5.attrs["gmmspeaker_store_version"] = STORE_VERSION
        h5.attrs["config_hash"] = store_hash or config_hash(config_dict)
        blocks: list[np.ndarray] = []  # the frames, written once at the end (one HDF5 write)
        ids: list[str] = []
        offsets = [0]
        n_totals: list[int] = []
        for utt_id, path in items:
            src = Path(path)
            try:
                feats, sig, digest, channels = _read_source(src, config, resample, content_check, channel)
            except (AudioError, DataError) as exc:
                failures[utt_id] = str(exc)
                if ticks is not None:
                    ticks.put(1)
                continue
            frames = np.ascontiguousarray(feats.frames, dtype=np.float32)
            start = offsets[-1]
            blocks.append(frames)
            ids.append(utt_id)
            offsets.append(start + frames.shape[0])
            n_totals.append(int(feats.n_total))
            meta[utt_id] = {
                "shard": shard_name,
                "offset": int(start),
                "n_frames": int(frames.shape[0]),
                "n_total": int(feats.n_total),
                "source": str(src),
                "signature": sig,
            }
            if digest is not None:
                meta[utt_id]["content"] = digest
            if channels > 1 and channel is None:
                meta[utt_id]["channels"] = channels  # averaged without being asked: warned
            if ticks is not None:
                ticks.put(1)
        ds = h5.create_dataset(
            "frames",
            shape=(offsets[-1], dim),
            maxshape=(None, dim),
            dtype=np.float32,
            chunks=(4096, dim),
            compression=compression,
        )
        if blocks:
            ds[...] = np.concatenate(blocks)
        h5.create_dataset("ids", data=np.array(ids, dtype=object), dtype=h5py.string_dtype())
        h5.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
        h5.create_dataset("n_total", data=np.asarray(n_totals, dtype=np.int64))
        # what makes the shard self-describing: a shard renamed into place is durable
        # even if the manifest never hears of it (see _adopt_orphans)
        h5.create_dataset(
            "sources",
            data=np.array([meta[u]["source"] for u in ids], dtype=object),
            dtype=h5py.string_dtype(),
        )
        h5.create_dataset(
            "signatures",
            data=np.asarray([meta[u]["signature"] for u in ids], dtype=np.int64).reshape(len(ids), 4),
        )
        if content_check:
            h5.create_dataset(
                "contents",
                data=np.array([meta[u]["content"] for u in ids], dtype=object),
                dtype=h5py.string_dtype(),
            )
    return shard_name, meta, failures


class FeatureStore:
    """Read access to a feature store directory written by :func:`extract_to_store`.

    Parameters
    ----------
    path : path-like
        The store directory (holding ``manifest.json``).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.is_file():
            raise DataError(f"{self.path}: not a feature store (no {MANIFEST}); run feature extraction first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            version = manifest.get("version")
            self.config: dict[str, Any] = manifest["config"]
            self.config_hash: str = manifest["config_hash"]
            self._utts: dict[str, dict[str, Any]] = manifest["utterances"]
            self.skipped: dict[str, str] = manifest.get("skipped", {})
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{manifest_path}: corrupt feature-store manifest ({exc})") from exc
        if version != STORE_VERSION:
            raise DataError(
                f"{manifest_path}: feature store format {version} is not this gmmspeaker's "
                f"({STORE_VERSION}); re-run feature extraction to rebuild it"
            )

    # -- metadata -------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        """Utterance ids in the store, sorted."""
        return sorted(self._utts)

    def __len__(self) -> int:
        return len(self._utts)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._utts

    def n_frames(self, utt_id: str) -> int:
        """Number of (VAD-kept) frames of an utterance."""
        return int(self._entry(utt_id)["n_frames"])

    def n_total(self, utt_id: str) -> int:
        """Number of frames of an utterance before VAD."""
        return int(self._entry(utt_id)["n_total"])

    @property
    def dim(self) -> int:
        """Feature dimension."""
        from gmmspeaker.features import FeatureConfig

        return FeatureConfig.from_dict(self.config).dim

    def problem(self, *, config_hash: str | None = None, ids: Iterable[str] = ()) -> str | None:
        """Why this store cannot serve a run that expects ``config_hash`` and ``ids`` (None: it can).

        A store is rebuilt whenever it is extracted with another feature configuration
        (e.g. ``gmmspeaker features --out`` on a run's store with another ``--config``);
        a run that recorded the configuration it extracted with asks here before trusting
        the store. Utterances recorded as skipped (bad audio) count as present. Only the
        manifest and the shards' existence are checked (cheap); unreadable shards are
        found on reading and repaired by re-extraction.
        """
        if config_hash is not None and self.config_hash != config_hash:
            return (
                f"{self.path}: holds features of another configuration (hash {self.config_hash[:12]}, "
                f"expected {config_hash[:12]}): it was rewritten by another extraction; "
                "re-run feature extraction"
            )
        missing = [u for u in ids if u not in self._utts and u not in self.skipped]
        if missing:
            return (
                f"{self.path}: no features for {len(missing)} utterances (e.g. {missing[0]!r}); "
                "re-run feature extraction"
            )
        gone = sorted(
            {e["shard"] for e in self._utts.values()} - {f.name for f in self.path.glob("shard-*.h5")}
        )
        if gone:
            return f"{self.path}: {len(gone)} feature shards are missing (e.g. {gone[0]}); re-run feature extraction"
        return None

    def check(self, *, config_hash: str | None = None, ids: Iterable[str] = ()) -> None:
        """Raise :class:`DataError` with :meth:`problem`'s message if there is one."""
        problem = self.problem(config_hash=config_hash, ids=ids)
        if problem is not None:
            raise DataError(problem)

    def _entry(self, utt_id: str) -> dict[str, Any]:
        try:
            return self._utts[utt_id]
        except KeyError:
            raise DataError(f"{self.path}: no features for utterance {utt_id!r} in the store") from None

    # -- data -----------------------------------------------------------------
    def get(self, utt_id: str) -> np.ndarray:
        """Features of one utterance, shape (n_frames, dim), float32."""
        return self.get_many([utt_id])[utt_id]

    __getitem__ = get

    def get_many(self, utt_ids: Iterable[str]) -> dict[str, np.ndarray]:
        """Features of several utterances, opening each shard once."""
        ids = list(utt_ids)
        return {u: x for u, x in iter_utterances(str(self.path), [self.item(u) for u in ids])}

    def item(self, utt_id: str) -> tuple[str, str, int, int]:
        """``(utt_id, shard, offset, n_frames)`` of an utterance: what :func:`iter_utterances` reads."""
        e = self._entry(utt_id)
        return utt_id, e["shard"], int(e["offset"]), int(e["n_frames"])

    def iter_chunks(
        self, utt_ids: Sequence[str] | None = None, *, chunk_frames: int = 20_000
    ) -> Iterator[np.ndarray]:
        """Stream the frames of ``utt_ids`` (default: all) in chunks of at most ``chunk_frames`` rows.

        Memory is bounded by one chunk, whatever the store size. Frames come in the order
        of ``utt_ids``.
        """
        ids = self.ids if utt_ids is None else list(utt_ids)
        yield from _iter_chunks(str(self.path), [self.item(u) for u in ids], chunk_frames)

    def sources(
        self,
        utt_ids: Sequence[str] | None = None,
        *,
        n_parts: int = 8,
        chunk_frames: int = 20_000,
        unit_frames: int | None = None,
        every: int = 1,
        phases: Sequence[int] | None = None,
    ) -> list[ChunkSource]:
        """Split ``utt_ids`` into ``n_parts`` picklable chunk factories (for parallel EM).

        The split depends only on the ids, ``n_parts`` and ``unit_frames``, never on the
        number of jobs, so statistics summed over the parts do not depend on the
        parallelism. With ``unit_frames``, there are at least ``ceil(total frames /
        unit_frames)`` parts (so large data gives enough work units for many workers).
        With ``every > 1`` the sources yield every ``every``-th frame of each utterance,
        starting at its frame ``phases[i]`` (one per id, ``0 <= phase < every``); the
        parts are split on the full frame counts.
        """
        ids = self.ids if utt_ids is None else list(utt_ids)
        if not ids:
            raise DataError(f"{self.path}: no utterances to stream")
        every = int(every)
        if every > 1:
            if phases is None or len(phases) != len(ids):
                raise ValueError(f"sources: every={every} needs one phase per utterance")
            ph = [int(p) for p in phases]
            if any(not 0 <= p < every for p in ph):
                raise ValueError(f"sources: phases must lie in [0, {every})")
        else:
            every, ph = 1, [0] * len(ids)
        if unit_frames is not None:
            total = sum(self.n_frames(u) for u in ids)
            n_parts = max(n_parts, -(-total // max(1, int(unit_frames))))
        n_parts = max(1, min(n_parts, len(ids)))
        bounds = np.linspace(0, len(ids), n_parts + 1).round().astype(int)
        return [
            ChunkSource(
                str(self.path),
                tuple(self.item(u) for u in ids[a:b]),
                int(chunk_frames),
                every,
                tuple(ph[a:b]) if every > 1 else None,
            )
            for a, b in zip(bounds[:-1], bounds[1:])
        ]


@dataclass(frozen=True)
class ChunkSource:
    """A picklable chunk factory over some utterances of a store (what :meth:`FeatureStore.sources` returns).

    Calling it streams the frames (every ``every``-th of each utterance, from its phase) in
    chunks of at most ``chunk_frames`` rows. ``n_frames`` is the number of rows it yields,
    known from the store's index without reading: EM's first pass uses it to keep only
    this source's share of the initialisation subsample (:meth:`GaussianMixture.fit_stream`).
    """

    store_dir: str
    items: tuple[tuple[str, str, int, int], ...]
    chunk_frames: int
    every: int = 1
    phases: tuple[int, ...] | None = None

    def __call__(self) -> Iterator[np.ndarray]:
        return _iter_chunks(self.store_dir, self.items, self.chunk_frames, self.every, self.phases)

    @property
    def n_frames(self) -> int:
        """Rows the source yields: ``len(range(phase, n, every))`` summed over its utterances."""
        if self.every <= 1 or self.phases is None:
            return sum(int(it[3]) for it in self.items)
        return sum(len(range(int(p), int(it[3]), self.every)) for it, p in zip(self.items, self.phases))


def _up_to_date(entry: dict[str, Any], path: Path, content_check: bool) -> bool:
    """Whether a manifest entry still describes the file at ``path``.

    By default its signature (:func:`source_signature`) must be unchanged. With
    ``content_check`` its bytes must hash as recorded, whatever the file's metadata say
    (the entry's signature is then refreshed).
    """
    if entry.get("source") != str(path):
        return False
    sig = _signature_or_none(path)
    if sig is None:
        return False
    if not content_check:
        return entry.get("signature") == sig
    try:
        same = entry.get("content") == content_hash(path)
    except OSError:
        return False
    if same:
        entry["signature"] = sig
    return same


def _signature_or_none(path: Path) -> list[int] | None:
    try:
        return source_signature(path)
    except OSError:
        return None


def _listing(problems: dict[str, str], limit: int = 20) -> str:
    lines = [f"  {msg}" for _, msg in sorted(problems.items())[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def _corrupt(shard_path: Path, why: str) -> DataError:
    return DataError(
        f"{shard_path}: corrupt or unreadable feature shard ({why}); re-run feature extraction "
        "(gmmspeaker features, or run --from-stage features): it recomputes this shard's utterances"
    )


def _segments(
    items: Sequence[tuple[str, str, int, int]],
) -> Iterator[tuple[str, int, int, list[tuple[str, int]]]]:
    """Group (utt_id, shard, offset, n) into runs that are contiguous in one shard.

    Yields (shard, start, stop, [(utt_id, n), ...]) in the order of ``items``.
    """
    cur: list[Any] | None = None
    for utt_id, shard, off, n in items:
        if cur is not None and cur[0] == shard and cur[2] == off:
            cur[2] = off + n
            cur[3].append((utt_id, n))
        else:
            if cur is not None:
                yield cur[0], cur[1], cur[2], cur[3]
            cur = [shard, off, off + n, [(utt_id, n)]]
    if cur is not None:
        yield cur[0], cur[1], cur[2], cur[3]


def _read_rows(
    store_dir: str, items: Sequence[tuple[str, str, int, int]], piece: int
) -> Iterator[tuple[list[tuple[str, int]], np.ndarray]]:
    """Read the frames of ``items`` as pieces of at most ``piece`` rows of contiguous runs.

    Yields ([(utt_id, rows of it in this piece)], frames); an utterance may span pieces.
    Each shard is opened once per run of items in it; shapes and finiteness are checked.
    """
    import h5py

    h5: Any = None
    open_name: str | None = None
    try:
        for shard, start, stop, utts in _segments(items):
            shard_path = Path(store_dir) / shard
            if shard != open_name:
                if h5 is not None:
                    h5.close()
                    h5 = None
                try:
                    h5 = h5py.File(shard_path, "r")
                    ds = h5["frames"]
                except (OSError, KeyError) as exc:
                    raise _corrupt(shard_path, str(exc)) from exc
                if ds.ndim != 2 or ds.dtype != np.float32:
                    raise _corrupt(shard_path, f"frames are {ds.shape} {ds.dtype}, expected (n, dim) float32")
                open_name = shard
            if stop > ds.shape[0]:
                raise _corrupt(
                    shard_path, f"{utts[-1][0]!r} ends at row {stop} but the shard has {ds.shape[0]}"
                )
            # walk the run piece by piece, attributing rows to utterances
            u, left = 0, utts[0][1]
            for a in range(start, stop, piece):
                b = min(stop, a + piece)
                try:
                    block = ds[a:b]
                except OSError as exc:
                    raise _corrupt(shard_path, str(exc)) from exc
                if not np.isfinite(block).all():
                    raise _corrupt(shard_path, "features contain NaN or inf")
                owners: list[tuple[str, int]] = []
                need = b - a
                while need > 0:
                    while left == 0:
                        u += 1
                        left = utts[u][1]
                    take = min(need, left)
                    owners.append((utts[u][0], take))
                    left -= take
                    need -= take
                yield owners, block
    finally:
        if h5 is not None:
            h5.close()


def iter_utterances(
    store_dir: str, items: Sequence[tuple[str, str, int, int]]
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield (utt_id, frames) for each item, whole utterances, in order."""
    k, got = 0, 0
    parts: list[np.ndarray] = []
    for owners, block in _read_rows(store_dir, items, 1 << 18):
        pos = 0
        for utt_id, n in owners:
            parts.append(block[pos : pos + n])
            pos += n
            got += n
            if got == items[k][3]:
                yield utt_id, np.concatenate(parts) if len(parts) > 1 else parts[0]
                parts, got, k = [], 0, k + 1


def _iter_chunks(
    store_dir: str,
    items: Sequence[tuple[str, str, int, int]],
    chunk_frames: int,
    every: int = 1,
    phases: Sequence[int] | None = None,
) -> Iterator[np.ndarray]:
    """Yield chunks of at most ``chunk_frames`` rows of the items' frames, in order.

    With ``every > 1`` only every ``every``-th frame of each utterance is kept, from frame
    ``phases[i]`` of item ``i`` (rows ``phases[i], phases[i] + every, ...``).
    """
    buf: list[np.ndarray] = []
    n_buf = 0
    k, got = 0, 0  # the item the next rows belong to, and rows of it already read
    for owners, block in _read_rows(store_dir, items, chunk_frames):
        if every > 1:
            assert phases is not None
            keep: list[np.ndarray] = []
            pos = 0
            for _, n in owners:
                while items[k][3] == 0:  # _read_rows names no empty utterance
                    k += 1
                first = (int(phases[k]) - got) % every
                keep.append(block[pos + first : pos + n : every])
                pos += n
                got += n
                if got == items[k][3]:
                    k, got = k + 1, 0
            block = np.concatenate(keep) if len(keep) > 1 else keep[0]
        start = 0
        while start < block.shape[0]:
            take = min(chunk_frames - n_buf, block.shape[0] - start)
            buf.append(block[start : start + take])
            n_buf += take
            start += take
            if n_buf == chunk_frames:
                yield np.concatenate(buf) if len(buf) > 1 else buf[0]
                buf, n_buf = [], 0
    if n_buf:
        yield np.concatenate(buf) if len(buf) > 1 else buf[0]


def _adopt_orphans(
    store_dir: Path, manifest: dict[str, Any], wanted: dict[str, Path], content_check: bool = False
) -> int:
    """Record in ``manifest`` the utterances of shards it does not name but can trust.

    Each shard carries its utterance ids, offsets, source paths and source signatures,
    and is renamed into place only when complete, so a shard on disk is durable the
    moment it exists, whether or not the manifest was rewritten after it (the manifest is
    rewritten at most every :data:`MANIFEST_INTERVAL` seconds to stay O(utterances) per
    run). An utterance of such a shard is adopted when it is in ``wanted`` (id -> path),
    the path is the same, the file's current signature equals the one the shard recorded,
    and the manifest has no entry valid for that file. Shards of another feature config or
    store version, unreadable ones and those without sources are not trusted.

    Returns
    -------
    int
        Number of utterances adopted.
    """
    import h5py

    utts: dict[str, dict[str, Any]] = manifest["utterances"]
    live = {e["shard"] for e in utts.values()}
    adopted = 0
    for f in sorted(store_dir.glob("shard-*.h5")):
        if f.name in live:
            continue
        try:
            with h5py.File(f, "r") as h5:
                if (
                    h5.attrs.get("gmmspeaker_store_version") != STORE_VERSION
                    or h5.attrs.get("config_hash") != manifest["config_hash"]
                    or "sources" not in h5
                ):
                    continue
                ids = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["ids"][()]]
                sources = [x.decode() if isinstance(x, bytes) else str(x) for x in h5["sources"][()]]
                offsets = np.asarray(h5["offsets"][()], dtype=np.int64)
                n_total = np.asarray(h5["n_total"][()], dtype=np.int64)
                sigs = np.asarray(h5["signatures"][()], dtype=np.int64)
                contents = (
                    [x.decode() if isinstance(x, bytes) else str(x) for x in h5["contents"][()]]
                    if "contents" in h5
                    else None
                )
                n_rows = int(h5["frames"].shape[0])
        except (OSError, KeyError, ValueError) as exc:
            logger.warning("%s: unreadable orphan shard, removing it (%s)", f, exc)
            continue
        if not (len(sources) == len(ids) == len(n_total) == len(sigs) == len(offsets) - 1) or (
            offsets.size and offsets[-1] != n_rows
        ):
            continue
        for i, utt_id in enumerate(ids):
            path = wanted.get(utt_id)
            if path is None or str(path) != sources[i]:
                continue
            sig = _signature_or_none(path)
            entry = utts.get(utt_id)
            if sig is None or sig != sigs[i].tolist():
                continue
            if content_check and (contents is None or contents[i] != content_hash(path)):
                continue
            if entry is not None and _up_to_date(entry, path, content_check):
                continue  # the manifest already has valid features for this file
            utts[utt_id] = {
                "shard": f.name,
                "offset": int(offsets[i]),
                "n_frames": int(offsets[i + 1] - offsets[i]),
                "n_total": int(n_total[i]),
                "source": sources[i],
                "signature": sig,
            }
            if contents is not None:
                utts[utt_id]["content"] = contents[i]
            manifest["skipped"].pop(utt_id, None)
            manifest["skipped_signatures"].pop(utt_id, None)
            adopted += 1
    return adopted


def _shard_problem(path: Path, rows: int, dim: int) -> str | None:
    """Why the shard at ``path`` cannot serve ``rows`` rows of ``dim`` features (None: it can).

    Opens the file and checks the frames' shape and dtype; reads no frames.
    """
    import h5py

    if not path.is_file():
        return "missing"
    try:
        with h5py.File(path, "r") as h5:
            ds = h5["frames"]
            if ds.ndim != 2 or ds.dtype != np.float32 or ds.shape[1] != dim:
                return f"frames are {ds.shape} {ds.dtype}, expected (n, {dim}) float32"
            if ds.shape[0] < rows:
                return f"{ds.shape[0]} rows, the manifest needs {rows}"
    except (OSError, KeyError, ValueError) as exc:
        return f"unreadable ({exc})"
    return None


def _drop_unreadable_shards(store: Path, utts: dict[str, dict[str, Any]], dim: int) -> None:
    """Forget the entries of shards that are missing or unreadable, so they are recomputed."""
    need: dict[str, int] = {}
    for e in utts.values():
        need[e["shard"]] = max(need.get(e["shard"], 0), int(e["offset"]) + int(e["n_frames"]))
    for shard, rows in sorted(need.items()):
        problem = _shard_problem(store / shard, rows, dim)
        if problem is None:
            continue
        bad = [u for u, e in utts.items() if e["shard"] == shard]
        logger.warning(
            "%s: feature shard %s; recomputing its %d utterances", store / shard, problem, len(bad)
        )
        for u in bad:
            del utts[u]


def _load_manifest(store_dir: Path) -> dict[str, Any] | None:
    path = store_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        logger.warning("%s: unreadable manifest, the store will be rebuilt", path)
        return None


def extract_to_store(
    utterances: Iterable[tuple[str, PathLike]],
    store_dir: PathLike,
    config: Any,
    *,
    jobs: int = 1,
    shard_size: int = 100,
    compression: str | None = None,
    on_bad_audio: str = "error",
    resample: bool = False,
    progress: bool = False,
    backend: str | None = None,
    content_check: bool = False,
    channel: int | str | None = None,
) -> ExtractionReport:
    """Extract features of ``utterances`` into ``store_dir``, computing only what is missing.

    Parameters
    ----------
    utterances : iterable of (utt_id, path)
        Audio files to extract; ids must be unique.
    store_dir : path-like
        Store directory (created). A store made with another feature config is rebuilt.
    config : FeatureConfig
        Front-end configuration.
    jobs : int
        Parallel workers (joblib; -1 = all cores). Results do not depend on it.
    shard_size : int
        Utterances per shard (one worker writes one shard).
    compression : {None, "gzip", "lzf"}
        HDF5 compression of the feature datasets.
    on_bad_audio : {"error", "skip"}
        On unusable audio, raise one :class:`DataError` listing every bad file *after* the
        good ones are stored, or skip them with a :class:`SkippedInputWarning`.
    resample : bool
        Resample audio whose rate differs from ``config.sample_rate``.
    progress : bool
        Show a progress bar over shards.
    backend : str, optional
        joblib backend.
    content_check : bool
        Also hash every source file (SHA-256) and recompute an utterance whose bytes
        changed, even if its size, times and inode did not (see :func:`source_signature`
        for what the default check guarantees). Costs one read of every file per call.
    channel : int, "mix" or None
        Which channel of multi-channel audio to use (0 = the first); ``"mix"`` averages
        them; None averages them with a warning naming the files. A file without the
        asked channel is a bad file. Changing it rebuilds the store.

    Returns
    -------
    ExtractionReport
    """
    if on_bad_audio not in ("error", "skip"):
        raise GmmSpeakerError(f"on_bad_audio must be 'error' or 'skip', not {on_bad_audio!r}")
    store = Path(store_dir)
    store.mkdir(parents=True, exist_ok=True)
    cfg = dict(config.to_dict())
    chash = store_key(cfg, channel)
    items: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for utt_id, path in utterances:
        if utt_id in seen:
            raise DataError(f"duplicate utterance id {utt_id!r} in the extraction list")
        seen.add(utt_id)
        items.append((utt_id, Path(path)))
    if not items:
        raise DataError("nothing to extract: the utterance list is empty")

    with file_lock(
        store / LOCK,
        busy=f"{store}: another process (pid {{pid}}) is writing this feature store; "
        "wait for it to finish, or give another --out",
    ):
        return _extract_locked(
            store,
            items,
            cfg,
            chash,
            jobs=jobs,
            shard_size=shard_size,
            compression=compression,
            on_bad_audio=on_bad_audio,
            resample=resample,
            progress=progress,
            backend=backend,
            content_check=content_check,
            channel=channel,
        )


def _extract_locked(
    store: Path,
    items: list[tuple[str, Path]],
    cfg: dict[str, Any],
    chash: str,
    *,
    jobs: int,
    shard_size: int,
    compression: str | None,
    on_bad_audio: str,
    resample: bool,
    progress: bool,
    backend: str | None,
    content_check: bool,
    channel: int | str | None = None,
) -> ExtractionReport:
    """:func:`extract_to_store` holding the store's lock: no other writer is at work."""
    from joblib import Parallel, delayed

    from gmmspeaker.features import FeatureConfig

    manifest = _load_manifest(store)
    rebuild = False
    if manifest is not None and manifest.get("version") != STORE_VERSION:
        logger.info("%s: feature store of an older format, recomputing every utterance", store)
        manifest, rebuild = None, True
    if manifest is not None and manifest.get("config_hash") != chash:
        logger.warning(
            "%s: the store holds features of another configuration or channel (%d utterances); "
            "rebuilding it with this one",
            store,
            len(manifest.get("utterances", {})),
        )
        manifest = None
    if manifest is None:
        manifest = {
            "version": STORE_VERSION,
            "config": cfg,
            "config_hash": chash,
            "utterances": {},
            "skipped": {},
        }
    utts: dict[str, dict[str, Any]] = manifest["utterances"]
    skipped_prev: dict[str, str] = manifest.setdefault("skipped", {})
    skipped_sig: dict[str, Any] = manifest.setdefault("skipped_signatures", {})

    # Shards finished by an interrupted run and not yet in the manifest are adopted where
    # their sources are unchanged; the other orphans (superseded) are removed.
    adopted = 0 if rebuild else _adopt_orphans(store, manifest, {u: p for u, p in items}, content_check)
    if adopted:
        logger.info("%s: %d utterances recovered from shards of an interrupted run", store, adopted)
    _drop_unreadable_shards(store, utts, FeatureConfig.from_dict(cfg).dim)
    live = {e["shard"] for e in utts.values()}
    for f in store.glob("shard-*.h5"):
        if f.name not in live:
            f.unlink()
    for pattern in (".shard-*.tmp-*", ".shard-*.tmp"):  # the lock is ours: no live writer's
        for f in store.glob(pattern):
            f.unlink(missing_ok=True)

    report = ExtractionReport()
    todo: list[tuple[str, str]] = []
    for utt_id, path in items:
        entry = utts.get(utt_id)
        if entry is not None and _up_to_date(entry, path, content_check):
            report.cached.append(utt_id)
        elif (
            on_bad_audio == "skip"
            and utt_id in skipped_prev
            and skipped_sig.get(utt_id) == _signature_or_none(path)
        ):
            report.skipped[utt_id] = skipped_prev[utt_id]  # known bad and unchanged: not retried
            utts.pop(utt_id, None)  # and never served from an entry made before it went bad
        else:
            todo.append((utt_id, str(path)))

    if todo:
        shards = [todo[i : i + shard_size] for i in range(0, len(todo), shard_size)]
        names = [_new_shard_name(store) for _ in shards]
        logger.info(
            "extracting features of %d utterances (%d cached) into %d shards with %d jobs",
            len(todo),
            len(report.cached),
            len(shards),
            jobs,
        )
        failures: dict[str, str] = {}
        mixed: dict[str, str] = {}
        bar = _UtteranceBar(len(todo), backend) if progress else None
        try:
            tasks = (
                delayed(_extract_shard)(
                    s,
                    str(store),
                    n,
                    cfg,
                    compression,
                    resample,
                    None if bar is None else bar.ticks,
                    content_check,
                    channel,
                    chash,
                )
                for s, n in zip(shards, names)
            )
            results = Parallel(n_jobs=jobs, backend=backend, return_as="generator")(tasks)
            last_write = time.monotonic()
            for k, (_shard_name, meta, fails) in enumerate(results):
                for utt_id, entry in meta.items():
                    utts[utt_id] = entry
                    skipped_prev.pop(utt_id, None)
                    skipped_sig.pop(utt_id, None)
                    report.computed.append(utt_id)
                    report.frames_total += entry["n_total"]
                    report.frames_kept += entry["n_frames"]
                    if entry.get("channels", 1) > 1:
                        mixed[utt_id] = f"{entry['source']}: {entry['channels']} channels"
                failures.update(fails)
                for utt_id in fails:
                    utts.pop(utt_id, None)  # its source is no longer valid: its old frames must go
                if on_bad_audio == "skip":
                    skipped_prev.update(fails)
                    paths = dict(todo)
                    skipped_sig.update({u: _signature_or_none(Path(paths[u])) for u in fails})
                # Rewriting the manifest after every shard would cost O(utterances^2), so at most
                # every few seconds; shards finished in between are adopted by a resumed run.
                if time.monotonic() - last_write >= MANIFEST_INTERVAL or k == len(shards) - 1:
                    atomic_write_json(store / MANIFEST, manifest, indent=None)
                    last_write = time.monotonic()
                if bar is not None:
                    bar.shard_done(len(meta) + len(fails))
        finally:
            if bar is not None:
                bar.close()
        if mixed:
            logger.warning(
                "%d multi-channel audio file(s) averaged to one channel (the features describe the mix "
                "of the channels; if they hold different speakers, give one file per channel):\n%s",
                len(mixed),
                _listing(mixed),
            )
        # Shards no longer referenced (every utterance recomputed elsewhere) are removed.
        live = {e["shard"] for e in utts.values()}
        for f in store.glob("shard-*.h5"):
            if f.name not in live:
                f.unlink()
        if failures and on_bad_audio == "error":
            raise DataError(
                f"{len(failures)} of {len(items)} audio files could not be used "
                f"(the other features are stored; fix or remove these files, or set on_bad_audio: skip):\n"
                f"{_listing(failures)}"
            )
        report.skipped.update(failures)
    else:
        atomic_write_json(store / MANIFEST, manifest, indent=None)
    if report.skipped:
        warnings.warn(
            f"skipped {len(report.skipped)} unusable audio files:\n{_listing(report.skipped)}",
            SkippedInputWarning,
            stacklevel=3,
        )
    logger.info(
        "features: %d computed, %d cached, %d skipped",
        len(report.computed),
        len(report.cached),
        len(report.skipped),
    )
    return report
