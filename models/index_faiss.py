"""A tenant's vector index over utterance ids (faiss), with its file on disk: a `VectorIndex`.

One `FaissIndex` per tenant, made by `models.registry.new_index` or `load_index`. Its keys are
the store's `utterances.id` (int64, never reused), its vectors the unit-norm embeddings of the
utterances' texts, and its score the inner product (the cosine, for unit vectors).

Kinds. An exact inner-product index (`IndexFlatIP`) while it is small; once it holds
`ivf_threshold` vectors (20 000 by default) it is rebuilt as an inverted-file index
(`IndexIVFFlat`, nlist ≈ 4·√n lists, trained on the stored vectors, `nprobe` lists searched), and
rebuilt again, with more lists, each time it grows fourfold past the size it was trained at. Both
sit inside an `IndexIDMap2`, which maps faiss's row numbers to utterance ids and can give a stored
vector back (`reconstruct`; the IVF keeps a direct map for that), so an index can always be
rebuilt from itself. Training takes seconds (see bench/knowledge.py); it runs on a snapshot,
outside the lock, by default on a background thread; the new index then takes the vectors added
meanwhile and replaces the old one. Searches and adds go on against the old one until then.

Filtering. `search(..., allowed_ids=...)` searches among those ids only (one conversation): k
results come back whenever k allowed ids exist, which over-fetching cannot promise. Up to
`exact_filter_max` allowed ids (2048), their vectors are fetched by id and scored exactly, whatever
the kind of index (0.08 ms for 300 ids in 100 000). Beyond that, a faiss `IDSelectorBatch` is applied
while scanning: exact on a flat index; on an IVF index the allowed ids are scattered over every
list, so the search probes `nprobe × n / len(allowed_ids)` lists. (Measured at 100 000 vectors,
300 ids: the selector costs 0.7 ms on a flat index and 3–7 ms on the IVF, which must then probe
every list to stay exact.)

Files. `save` writes the faiss index (``<path>``) and a JSON sidecar (``<path>.json``: format,
kind, dim, embedder name, count, max id, the index file's size and SHA-256), each to a temporary
file that is fsync'ed and then renamed over the old one. The two renames are not one atomic step,
so the sidecar records the index file's size and hash: a crash between them leaves a pair that
`load` refuses (`IndexCorrupt`), never a silently wrong index. `load` raises `IndexStale` when
there is nothing to load or it was made for another dimension or embedder, and `IndexCorrupt` when
the files cannot be read or do not agree. The server then rebuilds from the store (`rebuild`),
as it does when `is_consistent_with` says the index lacks utterances the store has.

GPU. With faiss-gpu and a visible GPU (``device="auto"`` or ``"cuda"``), a copy of the index lives
on the GPU(s) (`index_cpu_to_all_gpus`) and serves unfiltered searches; adds go to both copies.
The CPU index stays the master: filtered searches (GPU indexes take no `IDSelector`), rebuilds
and `save` use it.

Threads. Every method may be called from any thread; a lock serialises them. faiss's OpenMP thread
count is process-wide and left to the caller: on a busy 2-core machine single adds measured
0.1 ms with one OpenMP thread and several ms with two (threads spinning against other work).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
from collections.abc import Collection, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import numpy.typing as npt

from models.model_files import write_bytes_atomic
from stream.interfaces import IndexCorrupt, IndexFileError, IndexStale
from stream.interfaces import SearchResults as Results

__all__ = [
    "DEFAULT_IVF_THRESHOLD",
    "DEFAULT_NPROBE",
    "FORMAT_VERSION",
    "Device",
    "FaissIndex",
    "IndexCorrupt",
    "IndexFileError",
    "IndexKind",
    "IndexMeta",
    "IndexStale",
    "Results",
    "ivf_lists",
    "read_meta",
    "sidecar_path",
]

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "ivf"]
Device = Literal["auto", "cpu", "cuda"]

FORMAT_VERSION = 1
"""Version of the file pair `save` writes; another version is `IndexStale`."""
DEFAULT_IVF_THRESHOLD = 20_000
DEFAULT_NPROBE = 16
LISTS_PER_SQRT_N = 4
"""nlist = 4·√n …"""
MIN_POINTS_PER_LIST = 39
"""… but at most n / 39 lists: faiss's k-means wants at least 39 training points per centroid."""
REBUILD_GROWTH = 4
"""An IVF index is rebuilt (with more lists) when it holds this many times the vectors it was trained on."""


@dataclass(frozen=True, slots=True)
class IndexMeta:
    """The JSON sidecar of a saved index."""

    format: int
    kind: IndexKind
    dim: int
    embedder: str
    count: int
    max_id: int
    """-1 when the index is empty."""
    nlist: int
    """Inverted lists of an IVF index; 0 for a flat one."""
    trained_count: int
    """Vectors the IVF was trained on; 0 for a flat index."""
    size: int
    """Bytes of the index file."""
    sha256: str


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where the JSON sidecar of the index file `path` lives: ``<path>.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


class FaissIndex:
    """A `VectorIndex`: a tenant's vectors keyed by utterance id; exact while small, IVF past
    `ivf_threshold`."""

    def __init__(
        self,
        dim: int,
        *,
        embedder_name: str = "",
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nprobe: int = DEFAULT_NPROBE,
        train_points_per_list: int = 64,
        background_rebuild: bool = True,
        exact_filter_max: int = 2048,
        device: Device = "auto",
    ) -> None:
        """An empty index of `dim`-dimensional vectors made by the embedder `embedder_name`.

        `train_points_per_list` caps the k-means sample (nlist × this many vectors).
        `exact_filter_max` is the largest `allowed_ids` scored exactly by id rather than by selector.
        `background_rebuild=False` rebuilds inside the `add` that crosses a threshold.
        """
        if dim <= 0 or ivf_threshold < 1 or nprobe < 1:
            raise ValueError(f"bad index parameters: dim={dim} ivf_threshold={ivf_threshold} nprobe={nprobe}")
        self.dim = dim
        self.embedder_name = embedder_name
        self.ivf_threshold = ivf_threshold
        self._nprobe = nprobe
        self.train_points_per_list = train_points_per_list
        self.background_rebuild = background_rebuild
        self.exact_filter_max = exact_filter_max
        self.device = _choose_device(device)
        self._lock = threading.RLock()
        self._generation = 0
        """Bumped whenever the contents are replaced; a rebuild of an older generation is dropped."""
        self._rebuilding = False
        self._rebuild_thread: threading.Thread | None = None
        self._cpu: Any = None
        self._gpu: Any = None
        self._kind: IndexKind = "flat"
        self._nlist = 0
        self._trained_count = 0
        self._ids: set[int] = set()
        self._max_id = -1
        self._rebuild_at = ivf_threshold
        self._install(faiss.IndexIDMap2(faiss.IndexFlatIP(dim)), "flat", 0, 0)

    # --- state ---

    @property
    def count(self) -> int:
        """How many vectors the index holds."""
        with self._lock:
            return len(self._ids)

    def __len__(self) -> int:
        return self.count

    @property
    def max_id(self) -> int:
        """The largest utterance id held, -1 when empty."""
        with self._lock:
            return self._max_id

    @property
    def nprobe(self) -> int:
        """Inverted lists an unfiltered search on the IVF index visits (more: slower, closer to exact)."""
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        if value < 1:
            raise ValueError(f"nprobe must be at least 1, not {value}")
        with self._lock:
            self._nprobe = value
            if self._gpu is not None and self._kind == "ivf":
                _set_gpu_nprobe(self._gpu, value)

    @property
    def kind(self) -> IndexKind:
        """``flat`` (exact) or ``ivf``."""
        with self._lock:
            return self._kind

    @property
    def nlist(self) -> int:
        """Inverted lists of the IVF index, 0 while flat."""
        with self._lock:
            return self._nlist

    def __contains__(self, utterance_id: object) -> bool:
        with self._lock:
            return utterance_id in self._ids

    def is_consistent_with(self, count: int, max_id: int) -> bool:
        """Whether the index holds as many vectors as the store has utterances, up to the same id.

        `max_id` is ignored when `count` is 0 (an empty store has no max id).
        """
        with self._lock:
            return len(self._ids) == count and (count == 0 or self._max_id == max_id)

    # --- writes ---

    def add(self, ids: npt.ArrayLike, vectors: npt.ArrayLike) -> int:
        """Add `vectors` (n × dim, or one vector) under `ids` (n int64); return how many were new.

        Ids already held are skipped, so adding again after a retry is harmless. Crossing a
        rebuild threshold starts a rebuild (see the module's notes).
        """
        id_array = np.ascontiguousarray(ids, dtype=np.int64).reshape(-1)
        matrix = self._matrix(vectors)
        if matrix.shape[0] != id_array.shape[0]:
            raise ValueError(f"{id_array.shape[0]} ids for {matrix.shape[0]} vectors")
        with self._lock:
            new: dict[int, int] = {}
            for row, value in enumerate(id_array.tolist()):
                if value not in self._ids:
                    new.setdefault(value, row)
            if not new:
                return 0
            if len(new) < len(id_array):
                rows = list(new.values())
                id_array, matrix = id_array[rows], matrix[rows]
            self._cpu.add_with_ids(matrix, id_array)
            if self._gpu is not None:
                self._gpu.add_with_ids(matrix, id_array)
            self._ids.update(new)
            self._max_id = max(self._max_id, int(id_array.max()))
            due = len(self._ids) >= self._rebuild_at and not self._rebuilding
        if due:
            self._start_rebuild()
        return len(new)

    def rebuild(self, items: Iterable[tuple[int, npt.ArrayLike]]) -> None:
        """Replace the contents with `items` (utterance id, vector), e.g. re-embedded from the store.

        Builds an IVF index right away when there are `ivf_threshold` items or more. Raises
        `ValueError` on a repeated id.
        """
        id_list: list[int] = []
        rows: list[npt.NDArray[np.float32]] = []
        for utterance_id, vector in items:
            id_list.append(int(utterance_id))
            rows.append(self._matrix(vector))
        if len(set(id_list)) != len(id_list):
            raise ValueError("rebuild: repeated utterance ids")
        id_array = np.array(id_list, dtype=np.int64)
        matrix = np.vstack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)
        if len(id_array) >= self.ivf_threshold:
            index, nlist = _build_ivf(self.dim, id_array, matrix, self.train_points_per_list)
            kind: IndexKind = "ivf"
        else:
            index, nlist, kind = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim)), 0, "flat"
            if len(id_array):
                index.add_with_ids(matrix, id_array)
        with self._lock:
            self._generation += 1
            self._install(index, kind, nlist, len(id_array) if kind == "ivf" else 0)

    def remove(self, ids: Iterable[int]) -> int:
        """Remove the vectors of `ids` (those held); return how many were removed.

        The index is re-filled without them (an IVF keeps its training), so a removed vector is
        gone from every later search, `vectors` and `save`. A background rebuild under way is
        dropped (it started from the old contents) and starts again on the next add.
        """
        with self._lock:
            gone = {int(i) for i in ids} & self._ids
            if not gone:
                return 0
            all_ids = faiss.vector_to_array(self._cpu.id_map)
            matrix = self._cpu.index.reconstruct_n(0, self._cpu.ntotal)
            keep = ~np.isin(all_ids, np.fromiter(gone, dtype=np.int64, count=len(gone)))
            index = faiss.clone_index(self._cpu)
            index.reset()
            if keep.any():
                index.add_with_ids(np.ascontiguousarray(matrix[keep]), np.ascontiguousarray(all_ids[keep]))
            self._generation += 1
            self._install(index, self._kind, self._nlist, self._trained_count)
        return len(gone)

    def wait_for_rebuild(self, timeout: float | None = None) -> bool:
        """Wait for a background rebuild to finish; False if one is still running after `timeout`."""
        thread = self._rebuild_thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    # --- reads ---

    def search(
        self, vectors: npt.ArrayLike, k: int, allowed_ids: Collection[int] | None = None
    ) -> Results:
        """The `k` best (id, score) pairs for each query vector (one vector, or n × dim).

        With `allowed_ids`, only those ids are candidates (an empty collection finds nothing).
        A query gets fewer than k pairs only when fewer than k candidates exist (or, on an IVF
        index, were reached in the lists probed).
        """
        queries = self._matrix(vectors)
        empty: Results = [[] for _ in range(queries.shape[0])]
        if k <= 0 or queries.shape[0] == 0:
            return empty
        allowed = None
        if allowed_ids is not None:
            allowed = np.fromiter(allowed_ids, dtype=np.int64, count=len(allowed_ids))
            if allowed.size == 0:
                return empty
        with self._lock:
            total = len(self._ids)
            if total == 0:
                return empty
            if allowed is not None and allowed.size <= self.exact_filter_max:
                return self._search_by_id(queries, k, allowed)
            k = min(k, total, total if allowed is None else allowed.size)
            if allowed is None and self._gpu is not None:
                scores, labels = self._gpu.search(queries, k)  # nprobe was set when it was copied
            elif allowed is None:
                params = _search_params(self.nprobe if self._kind == "ivf" else None, None)
                scores, labels = self._cpu.search(queries, k, params=params)
            else:
                selector = faiss.IDSelectorBatch(allowed)
                nprobe = None
                if self._kind == "ivf":
                    nprobe = min(self._nlist, self.nprobe * math.ceil(total / allowed.size))
                params = _search_params(nprobe, selector)
                scores, labels = self._cpu.search(queries, k, params=params)
        return [
            [(int(i), float(s)) for i, s in zip(row_ids.tolist(), row_scores.tolist(), strict=True) if i >= 0]
            for row_ids, row_scores in zip(labels, scores, strict=True)
        ]

    def _search_by_id(
        self, queries: npt.NDArray[np.float32], k: int, allowed: npt.NDArray[np.int64]
    ) -> Results:
        """Exact search among a few ids: fetch their vectors, score them all (the caller holds the lock)."""
        present = np.array(sorted({i for i in allowed.tolist() if i in self._ids}), dtype=np.int64)
        if present.size == 0:
            return [[] for _ in range(queries.shape[0])]
        scores = queries @ np.asarray(self._cpu.reconstruct_batch(present), dtype=np.float32).T
        k = min(k, present.size)
        results: Results = []
        for row in scores:
            top = np.argpartition(-row, k - 1)[:k] if k < row.size else np.arange(row.size)
            top = top[np.argsort(-row[top], kind="stable")]
            results.append([(int(present[j]), float(row[j])) for j in top])
        return results

    def vectors(self, ids: Iterable[int]) -> npt.NDArray[np.float32]:
        """The stored vectors of `ids`, one row each, in order; `KeyError` for an id not held."""
        id_array = np.fromiter(ids, dtype=np.int64)
        with self._lock:
            missing = [i for i in id_array.tolist() if i not in self._ids]
            if missing:
                raise KeyError(f"utterance ids not in the index: {missing[:10]}")
            if id_array.size == 0:
                return np.zeros((0, self.dim), dtype=np.float32)
            return np.asarray(self._cpu.reconstruct_batch(id_array), dtype=np.float32)

    # --- files ---

    def save(self, path: str | os.PathLike[str]) -> IndexMeta:
        """Write the index to `path` and its sidecar to ``<path>.json``, each atomically; return the sidecar.

        Safe while searches and adds go on: the index is serialised under the lock, written outside it.
        """
        path = Path(path)
        with self._lock:
            data = faiss.serialize_index(self._cpu)
            kind, nlist, trained = self._kind, self._nlist, self._trained_count
            count, max_id = len(self._ids), self._max_id
        blob = np.ascontiguousarray(data).data
        meta = IndexMeta(FORMAT_VERSION, kind, self.dim, self.embedder_name, count, max_id, nlist, trained,
                         blob.nbytes, hashlib.sha256(blob).hexdigest())
        write_bytes_atomic(path, blob)
        write_bytes_atomic(sidecar_path(path), json.dumps(asdict(meta), indent=1).encode())
        return meta

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        expected_dim: int,
        embedder_name: str,
        *,
        ivf_threshold: int = DEFAULT_IVF_THRESHOLD,
        nprobe: int = DEFAULT_NPROBE,
        train_points_per_list: int = 64,
        background_rebuild: bool = True,
        exact_filter_max: int = 2048,
        device: Device = "auto",
    ) -> FaissIndex:
        """Read an index `save` wrote, checking it against its sidecar and the expected embedder.

        Raises `IndexStale` (missing files, another format, dim or embedder) or `IndexCorrupt`
        (unreadable, truncated, or the file and its sidecar disagree).
        """
        path = Path(path)
        meta = read_meta(path)
        if meta.format != FORMAT_VERSION:
            raise IndexStale(f"{path}: format {meta.format}, this Palabre writes {FORMAT_VERSION}")
        if meta.dim != expected_dim or meta.embedder != embedder_name:
            raise IndexStale(
                f"{path}: made for embedder {meta.embedder!r} ({meta.dim} dims), "
                f"now {embedder_name!r} ({expected_dim} dims)"
            )
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise IndexStale(f"{path}: no index file") from exc
        except OSError as exc:
            raise IndexCorrupt(f"{path}: cannot read: {exc}") from exc
        if len(data) != meta.size or hashlib.sha256(data).hexdigest() != meta.sha256:
            raise IndexCorrupt(f"{path}: {len(data)} bytes that do not match the sidecar ({meta.size} bytes)")
        try:
            loaded = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
        except RuntimeError as exc:
            raise IndexCorrupt(f"{path}: faiss cannot read it: {exc}") from exc
        if (not isinstance(loaded, faiss.IndexIDMap2) or loaded.d != expected_dim
                or loaded.ntotal != meta.count):
            raise IndexCorrupt(f"{path}: not the index its sidecar describes")
        inner: Any = faiss.downcast_index(loaded.index)
        kind: IndexKind = "ivf" if isinstance(inner, faiss.IndexIVFFlat) else "flat"
        if kind != meta.kind or (kind == "flat" and not isinstance(inner, faiss.IndexFlatIP)):
            raise IndexCorrupt(f"{path}: holds a {type(inner).__name__}, its sidecar says {meta.kind}")
        index = cls(expected_dim, embedder_name=embedder_name, ivf_threshold=ivf_threshold, nprobe=nprobe,
                    train_points_per_list=train_points_per_list, background_rebuild=background_rebuild,
                    exact_filter_max=exact_filter_max, device=device)
        with index._lock:
            index._install(loaded, kind, int(inner.nlist) if kind == "ivf" else 0, meta.trained_count)
            if len(index._ids) != meta.count or index._max_id != meta.max_id:
                raise IndexCorrupt(f"{path}: its ids do not match its sidecar")
        return index

    # --- internals ---

    def _install(self, index: Any, kind: IndexKind, nlist: int, trained_count: int) -> None:
        """Make `index` the current one (the caller holds the lock, or owns a new object)."""
        ids = faiss.vector_to_array(index.id_map)
        self._cpu = index
        self._kind = kind
        self._nlist = nlist
        self._trained_count = trained_count
        self._ids = set(ids.tolist())
        self._max_id = int(ids.max()) if ids.size else -1
        self._rebuild_at = self.ivf_threshold if kind == "flat" else REBUILD_GROWTH * trained_count
        self._gpu = _to_gpu(index, self.nprobe) if self.device == "cuda" else None

    def _matrix(self, vectors: npt.ArrayLike) -> npt.NDArray[np.float32]:
        matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        if matrix.ndim == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != self.dim:
            raise ValueError(f"expected vectors of {self.dim} dims, got shape {matrix.shape}")
        return matrix

    def _start_rebuild(self) -> None:
        with self._lock:
            if self._rebuilding or len(self._ids) < self._rebuild_at:
                return
            self._rebuilding = True
            generation = self._generation
            ids = faiss.vector_to_array(self._cpu.id_map).copy()
            matrix = self._cpu.index.reconstruct_n(0, self._cpu.ntotal)
            if self.background_rebuild:
                self._rebuild_thread = threading.Thread(
                    target=self._rebuild_from, args=(generation, ids, matrix), name="faiss-rebuild",
                    daemon=True,
                )
                self._rebuild_thread.start()
                return
        self._rebuild_from(generation, ids, matrix)

    def _rebuild_from(
        self, generation: int, ids: npt.NDArray[np.int64], matrix: npt.NDArray[np.float32]
    ) -> None:
        """Train an IVF index on a snapshot, then swap it in with what was added since."""
        try:
            index, nlist = _build_ivf(self.dim, ids, matrix, self.train_points_per_list)
            with self._lock:
                if self._generation != generation:
                    return
                current = self._cpu
                if current.ntotal > len(ids):
                    # Rows are appended in order (a removal bumps the generation, so this rebuild
                    # would have been dropped): the tail is what came since.
                    start = len(ids)
                    tail_ids = faiss.vector_to_array(current.id_map)[start:]
                    index.add_with_ids(current.index.reconstruct_n(start, current.ntotal - start), tail_ids)
                self._generation += 1
                self._install(index, "ivf", nlist, len(ids))
        except Exception:
            log.exception("rebuilding the vector index as IVF failed; it stays %s", self._kind)
            with self._lock:
                self._rebuild_at = 2 * len(self._ids)
        finally:
            with self._lock:
                self._rebuilding = False
                self._rebuild_thread = None


def read_meta(path: str | os.PathLike[str]) -> IndexMeta:
    """Read the sidecar of the index file `path`; `IndexStale` if missing, `IndexCorrupt` if unreadable."""
    meta_path = sidecar_path(path)
    if not Path(path).is_file():
        raise IndexStale(f"{path}: no index file")
    try:
        raw = json.loads(meta_path.read_text())
    except FileNotFoundError as exc:
        raise IndexStale(f"{meta_path}: no sidecar") from exc
    except (OSError, ValueError) as exc:
        raise IndexCorrupt(f"{meta_path}: unreadable sidecar: {exc}") from exc
    try:
        meta = IndexMeta(**raw)
    except TypeError as exc:
        raise IndexCorrupt(f"{meta_path}: unexpected sidecar fields: {exc}") from exc
    if not isinstance(meta.format, int):
        raise IndexCorrupt(f"{meta_path}: bad format field")
    return meta


def ivf_lists(n: int) -> int:
    """How many inverted lists an IVF index over `n` vectors gets: ≈ 4·√n, at most n / 39."""
    return max(1, min(round(LISTS_PER_SQRT_N * math.sqrt(n)), n // MIN_POINTS_PER_LIST))


def _build_ivf(
    dim: int, ids: npt.NDArray[np.int64], matrix: npt.NDArray[np.float32], points_per_list: int
) -> tuple[Any, int]:
    """A trained `IndexIVFFlat` (inner product, with a direct map) holding `matrix` under `ids`."""
    nlist = ivf_lists(len(ids))
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    ivf.cp.max_points_per_centroid = max(points_per_list, MIN_POINTS_PER_LIST)
    ivf.cp.seed = 1234
    ivf.train(matrix)
    ivf.make_direct_map()
    index = faiss.IndexIDMap2(ivf)
    index.add_with_ids(matrix, ids)
    return index, nlist


def _search_params(nprobe: int | None, selector: Any) -> Any:
    """faiss search parameters: IVF ones when `nprobe` is given, with `selector` when given."""
    params: Any = faiss.SearchParametersIVF() if nprobe is not None else faiss.SearchParameters()
    if nprobe is not None:
        params.nprobe = nprobe
    if selector is not None:
        params.sel = selector
    return params


def _choose_device(device: Device) -> Literal["cpu", "cuda"]:
    has_gpu = (hasattr(faiss, "get_num_gpus") and hasattr(faiss, "index_cpu_to_all_gpus")
               and faiss.get_num_gpus() > 0)
    if device == "cuda" and not has_gpu:
        raise RuntimeError("device='cuda' needs faiss-gpu and a visible GPU (faiss.get_num_gpus() is 0)")
    if device == "cpu":
        return "cpu"
    return "cuda" if has_gpu else "cpu"


def _to_gpu(index: Any, nprobe: int) -> Any:
    """A copy of `index` on every visible GPU, with `nprobe` set (faiss-gpu only)."""
    gpu = faiss.index_cpu_to_all_gpus(index)
    if isinstance(faiss.downcast_index(index.index), faiss.IndexIVF):
        _set_gpu_nprobe(gpu, nprobe)
    return gpu


def _set_gpu_nprobe(gpu: Any, nprobe: int) -> None:
    if hasattr(faiss, "GpuParameterSpace"):
        faiss.GpuParameterSpace().set_index_parameter(gpu, "nprobe", nprobe)
