"""The per-tenant faiss index: ids, filtered search, the flat → IVF switch, files."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pytest

from models.index_faiss import (
    FORMAT_VERSION,
    FaissIndex,
    IndexCorrupt,
    IndexStale,
    ivf_lists,
    read_meta,
    sidecar_path,
)

DIM = 32


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


def unit_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered_vectors(n: int, clusters: int = 40, spread: float = 0.1, seed: int = 0) -> np.ndarray:
    """Unit vectors around `clusters` random topics, like sentence embeddings.

    (Isotropic random vectors are IVF's worst case: recall@5 0.76 at nprobe 16 in 32 dims.)
    """
    rng = np.random.default_rng(seed)
    centres = unit_vectors(clusters, seed=seed + 100)
    x = centres[rng.integers(0, clusters, n)] + spread * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(base: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> list[list[int]]:
    scores = queries @ base.T
    return [ids[np.argsort(-row, kind="stable")[:k]].tolist() for row in scores]


def ids_of(results: list[list[tuple[int, float]]]) -> list[list[int]]:
    return [[i for i, _ in row] for row in results]


def recall(found: list[list[int]], truth: list[list[int]]) -> float:
    hits = sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / sum(len(t) for t in truth)


def test_add_and_search_exact_with_store_ids() -> None:
    x = unit_vectors(300)
    ids = np.arange(1000, 1300, dtype=np.int64)
    index = FaissIndex(DIM, embedder_name="test")
    assert index.add(ids, x) == 300
    assert (index.count, index.max_id, index.kind) == (300, 1299, "flat")
    results = index.search(x[:5], 3)
    assert ids_of(results) == brute_force(x, ids, x[:5], 3)
    best_id, best_score = results[0][0]
    assert best_id == 1000 and best_score == pytest.approx(1.0, abs=1e-5)
    # One vector (1-d) is one query.
    assert index.search(x[7], 1)[0][0][0] == 1007


def test_adding_an_id_again_is_skipped() -> None:
    x = unit_vectors(4)
    index = FaissIndex(DIM)
    assert index.add([1, 2], x[:2]) == 2
    assert index.add([2, 3, 3], x[1:4]) == 1
    assert index.count == 3 and 3 in index and 4 not in index
    assert index.search(x[2], 1)[0][0][0] == 3  # the first vector given for 3 is kept
    np.testing.assert_allclose(index.vectors([3, 1]), x[[2, 0]])
    with pytest.raises(KeyError):
        index.vectors([9])


def test_bad_shapes_are_refused() -> None:
    index = FaissIndex(DIM)
    with pytest.raises(ValueError):
        index.add([1], unit_vectors(1, dim=DIM + 1))
    with pytest.raises(ValueError):
        index.add([1, 2], unit_vectors(1))
    with pytest.raises(ValueError):
        index.search(np.zeros(DIM + 1, dtype=np.float32), 1)


def test_empty_index_and_k_beyond_count() -> None:
    index = FaissIndex(DIM)
    q = unit_vectors(2)
    assert index.search(q, 5) == [[], []]
    index.add([7], q[:1])
    assert ids_of(index.search(q, 5)) == [[7], [7]]
    assert index.search(q, 0) == [[], []]


@pytest.mark.parametrize("exact_filter_max", [0, 2048], ids=["selector", "by-id"])
def test_search_within_allowed_ids(exact_filter_max: int) -> None:
    x = unit_vectors(1000)
    ids = np.arange(1, 1001, dtype=np.int64)
    index = FaissIndex(DIM, exact_filter_max=exact_filter_max)
    index.add(ids, x)
    conversation = set(range(500, 520))
    q = x[:10]  # queries far from the conversation: over-fetching k would find none of it
    found = index.search(q, 5, allowed_ids=conversation)
    sub = np.array(sorted(conversation))
    assert ids_of(found) == brute_force(x[sub - 1], sub, q, 5)
    np.testing.assert_allclose([s for _, s in found[0]], np.sort(x[sub - 1] @ q[0])[::-1][:5], atol=1e-5)
    assert index.search(q, 5, allowed_ids=set()) == [[] for _ in range(10)]
    assert ids_of(index.search(q[:1], 5, allowed_ids=[3, 99_999])) == [[3]]
    assert ids_of(index.search(q[:1], 5, allowed_ids=[99_999])) == [[]]


def test_flat_becomes_ivf_past_the_threshold_and_keeps_results() -> None:
    n, threshold = 4000, 3000
    x = clustered_vectors(n, seed=1)
    ids = np.arange(10, 10 + n, dtype=np.int64)
    flat = FaissIndex(DIM, ivf_threshold=10**9)
    flat.add(ids, x)
    index = FaissIndex(DIM, ivf_threshold=threshold, nprobe=16, background_rebuild=False)
    index.add(ids[:threshold - 1], x[:threshold - 1])
    assert index.kind == "flat"
    index.add(ids[threshold - 1:threshold], x[threshold - 1:threshold])
    assert index.kind == "ivf" and index.nlist == ivf_lists(threshold)
    index.add(ids[threshold:], x[threshold:])  # single adds go on into the IVF lists
    assert index.count == n and index.kind == "ivf"
    queries = clustered_vectors(200, seed=2)
    truth = ids_of(flat.search(queries, 5))
    assert recall(ids_of(index.search(queries, 5)), truth) >= 0.9
    # Filtered on IVF: exact among the allowed ids, wherever their lists are, by id or by selector.
    allowed = set(ids[::97].tolist())
    sub = np.array(sorted(allowed))
    truth = brute_force(x[sub - 10], sub, queries[:20], 5)
    assert ids_of(index.search(queries[:20], 5, allowed_ids=allowed)) == truth
    index.exact_filter_max = 0
    assert ids_of(index.search(queries[:20], 5, allowed_ids=allowed)) == truth


def test_background_rebuild_takes_the_adds_made_meanwhile() -> None:
    x = unit_vectors(2600, seed=4)
    ids = np.arange(1, 2601, dtype=np.int64)
    index = FaissIndex(DIM, ivf_threshold=2000)
    index.add(ids[:2000], x[:2000])
    for i in range(2000, 2600):  # while the IVF trains (or after): one by one, as utterances arrive
        index.add(ids[i:i + 1], x[i])
    assert index.wait_for_rebuild(timeout=60)
    assert index.kind == "ivf" and index.count == 2600 and index.max_id == 2600
    for i in (0, 1999, 2000, 2599):
        assert index.search(x[i], 1, allowed_ids=[int(ids[i])])[0][0][0] == ids[i]
    np.testing.assert_allclose(index.vectors([2600]), x[2599:2600])


def test_ivf_is_retrained_as_it_grows() -> None:
    x = unit_vectors(2100, seed=5)
    index = FaissIndex(DIM, ivf_threshold=500, background_rebuild=False)
    index.add(np.arange(1, 501), x[:500])
    first = index.nlist
    index.add(np.arange(501, 2101), x[500:])
    assert index.kind == "ivf" and index.nlist == ivf_lists(2100) > first


def test_rebuild_replaces_contents() -> None:
    x = unit_vectors(50)
    index = FaissIndex(DIM, ivf_threshold=40)
    index.add([1, 2], x[:2])
    index.rebuild((100 + i, x[i]) for i in range(30))
    assert (index.count, index.max_id, index.kind, 1 in index) == (30, 129, "flat", False)
    index.rebuild((100 + i, x[i]) for i in range(50))
    assert index.kind == "ivf" and index.count == 50
    index.rebuild([])
    assert index.count == 0 and index.max_id == -1 and index.kind == "flat"
    with pytest.raises(ValueError):
        index.rebuild([(1, x[0]), (1, x[1])])


def test_is_consistent_with() -> None:
    index = FaissIndex(DIM)
    assert index.is_consistent_with(0, 0)
    index.add([4, 9], unit_vectors(2))
    assert index.is_consistent_with(2, 9)
    assert not index.is_consistent_with(3, 10)
    assert not index.is_consistent_with(2, 10)


@pytest.mark.parametrize("n", [0, 300, 2500])
def test_save_and_load_round_trip(tmp_path: Path, n: int) -> None:
    x = unit_vectors(max(n, 1), seed=6)[:n]
    ids = np.arange(5, 5 + n, dtype=np.int64)
    index = FaissIndex(DIM, embedder_name="minilm", ivf_threshold=2000, background_rebuild=False)
    index.add(ids, x)
    path = tmp_path / "tenant.faiss"
    meta = index.save(path)
    assert meta.count == n and meta.kind == index.kind and meta.dim == DIM and meta.embedder == "minilm"
    assert json.loads(sidecar_path(path).read_text())["max_id"] == (int(ids[-1]) if n else -1)
    loaded = FaissIndex.load(path, DIM, "minilm", ivf_threshold=2000)
    assert (loaded.count, loaded.max_id) == (n, index.max_id)
    assert (loaded.kind, loaded.nlist) == (index.kind, index.nlist)
    assert loaded.is_consistent_with(n, index.max_id)
    queries = unit_vectors(10, seed=7)
    assert loaded.search(queries, 5) == index.search(queries, 5)
    if n:
        loaded.add([10**6], queries[0])
        assert loaded.search(queries[0], 1)[0][0][0] == 10**6
        np.testing.assert_allclose(loaded.vectors(ids[:3].tolist()), x[:3])
    # Saving again over the old files leaves no temporary files behind.
    loaded.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tenant.faiss", "tenant.faiss.json"]


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    index = FaissIndex(DIM, embedder_name="minilm")
    index.add(np.arange(1, 201), unit_vectors(200))
    path = tmp_path / "tenant.faiss"
    index.save(path)
    return path


def test_missing_files_are_stale(saved: Path) -> None:
    sidecar_path(saved).unlink()
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM, "minilm")
    saved.unlink()
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM, "minilm")


def test_deleted_index_file_is_stale(saved: Path) -> None:
    saved.unlink()
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM, "minilm")


def test_truncated_file_is_corrupt(saved: Path) -> None:
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")


def test_changed_bytes_are_corrupt(saved: Path) -> None:
    data = bytearray(saved.read_bytes())
    data[len(data) // 2] ^= 0xFF
    saved.write_bytes(bytes(data))
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")


def test_garbage_that_matches_its_sidecar_is_corrupt(saved: Path) -> None:
    # A sidecar consistent with a file faiss cannot parse (e.g. written by a broken tool).
    import hashlib

    garbage = b"not a faiss index" * 10
    saved.write_bytes(garbage)
    meta = json.loads(sidecar_path(saved).read_text())
    meta.update(size=len(garbage), sha256=hashlib.sha256(garbage).hexdigest())
    sidecar_path(saved).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")


def test_unreadable_sidecar_is_corrupt(saved: Path) -> None:
    sidecar_path(saved).write_text("{not json")
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")
    sidecar_path(saved).write_text(json.dumps({"format": FORMAT_VERSION}))
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")


def test_metadata_mismatch_is_stale(saved: Path) -> None:
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM, "bge-m3")
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM * 2, "minilm")
    meta = json.loads(sidecar_path(saved).read_text())
    meta["format"] = FORMAT_VERSION + 1
    sidecar_path(saved).write_text(json.dumps(meta))
    with pytest.raises(IndexStale):
        FaissIndex.load(saved, DIM, "minilm")
    assert read_meta(saved).count == 200


def test_count_mismatch_with_the_sidecar_is_corrupt(saved: Path) -> None:
    meta = json.loads(sidecar_path(saved).read_text())
    meta["count"] = 199
    sidecar_path(saved).write_text(json.dumps(meta))
    with pytest.raises(IndexCorrupt):
        FaissIndex.load(saved, DIM, "minilm")


def test_concurrent_adds_and_searches() -> None:
    x = unit_vectors(2000, seed=8)
    index = FaissIndex(DIM, ivf_threshold=1000)
    errors: list[BaseException] = []

    def writer(start: int) -> None:
        try:
            for i in range(start, 2000, 4):
                index.add([i + 1], x[i])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(300):
                index.search(x[i], 3, allowed_ids=range(1, 500) if i % 2 else None)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(4)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert index.wait_for_rebuild(timeout=60)
    assert not errors
    assert index.count == 2000 and index.kind == "ivf"
    assert index.search(x[1234], 1, allowed_ids=[1235])[0][0][0] == 1235


@pytest.mark.parametrize("kind", ["flat", "ivf"])
def test_remove_drops_vectors_from_search_vectors_and_files(tmp_path: Path, kind: str) -> None:
    n = 2500
    x = clustered_vectors(n, seed=6)
    ids = np.arange(1, n + 1, dtype=np.int64)
    index = FaissIndex(DIM, embedder_name="test", ivf_threshold=2000 if kind == "ivf" else 10**9,
                       background_rebuild=False)
    index.add(ids, x)
    assert index.kind == kind
    gone = [1, 7, n]  # the largest id too: max_id follows
    assert index.remove([*gone, 99_999]) == 3
    assert index.remove(gone) == 0  # again: nothing left to remove
    assert (index.count, index.max_id, index.kind) == (n - 3, n - 1, kind)
    assert all(i not in index for i in gone)
    for i in gone:
        found = ids_of(index.search(x[i - 1], 5))[0]
        assert i not in found
        assert index.search(x[i - 1], 1, allowed_ids=[i]) == [[]]
    with pytest.raises(KeyError):
        index.vectors([7])
    np.testing.assert_allclose(index.vectors([8]), x[7:8])
    index.save(tmp_path / "t.faiss")
    loaded = FaissIndex.load(tmp_path / "t.faiss", DIM, "test")
    assert loaded.count == n - 3 and 7 not in loaded and loaded.kind == kind
    index.add([7], x[6])  # an add after a removal goes on (ids are never reused by the store)
    assert 7 in index and index.count == n - 2
