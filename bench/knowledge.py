"""Conversation memory: what embedding utterances and searching them costs, and how exact it is.

    python -m bench.knowledge [--only index] [--sentences 3000] [--sizes 10000,100000]
                              [--threads 1] [--queries 200]

Sections (``--only`` picks some; all run by default):

- ``summary``: extractive summary latency for conversations of 20, 200 and 2000 utterances.
- ``index``: MiniLM embedding latency (batch 1 and 32, ours against `FlagModel.encode`); then, on
  real embeddings of `--sentences` meeting-like sentences made from templates, recall@5 of IVF
  against the exact (flat) index; then, for each of `--sizes`, flat against IVF: build time,
  single-utterance add latency, search latency p50/p95 (unfiltered and within one
  conversation), recall@5, and save/load time. Sizes beyond the real sentences are made of the
  real embeddings repeated with Gaussian noise (said in the output).

Figures vary with the machine's load (printed); they go in notes, not in asserts.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from models.index_faiss import FaissIndex

Matrix = npt.NDArray[np.float32]
Results = list[list[tuple[int, float]]]
K = 5
CONVERSATION = 300
"""Utterances in the conversation that filtered searches are restricted to."""
NOISE = 0.02
"""Per-dimension standard deviation of the noise added to repeated real embeddings."""

# --- a corpus of meeting-like sentences ----------------------------------------------------

_PEOPLE = ["Alice", "Bob", "Chen", "Dana", "Emeka", "Farah", "Gustavo", "Hana", "Ines", "Jonas", "Kwame",
           "Lea"]
_TOPICS = [
    "the marketing budget", "the hiring plan", "the product launch", "the Q3 roadmap", "customer churn",
    "the security audit", "the office move", "onboarding for new engineers", "the pricing page",
    "cloud infrastructure costs", "the mobile app release", "the data retention policy", "the sales pipeline",
    "the support backlog", "the partner contract", "the design system", "the quarterly report",
    "the database migration", "the holiday schedule", "the customer survey", "the API rate limits",
    "the conference booth", "the training budget", "the legal review", "the translation work",
]
_WHEN = ["by Friday", "next week", "before the end of the quarter", "in March", "tomorrow morning",
         "after the board meeting", "this sprint", "by the fifteenth", "before the launch", "in two weeks"]
_AMOUNTS = ["ten percent", "fifteen thousand euros", "two more people", "three weeks", "half a day",
            "forty thousand dollars", "a third", "five hundred users", "twelve tickets", "one extra server"]
_STATEMENTS = [
    "{p} says {t} is on track {w}.",
    "We agreed to cut {t} by {a} {w}.",
    "{p} will send the numbers on {t} {w}.",
    "I think {t} needs another {a} before we commit.",
    "The main risk with {t} is that we slip {w}.",
    "{p} and {q} disagree about {t}, so let's park it.",
    "So the decision is to freeze {t} until {p} reports back.",
    "Last time {t} cost us {a}, which nobody expected.",
    "Can we move {t} to the next meeting? {p} is out {w}.",
    "Action item for {p}: draft a proposal on {t} {w}.",
    "Honestly {t} is fine, the problem is elsewhere.",
    "{p} reminded everyone that {t} was promised to the customer {w}.",
    "We should increase {t} by {a}, according to {p}.",
    "The feedback on {t} was mostly positive, {p} said.",
    "Let me share my screen and walk you through {t}.",
    "I'm not sure {t} is worth {a}.",
    "{p} asked whether {t} affects the contract with {q}'s team.",
    "Sorry, I was on mute. I said {t} looks good to me.",
    "The numbers for {t} came in lower than planned.",
    "Remind me who owns {t} now that {p} has left?",
]
_QUESTIONS = [
    "What did we decide about {t}?",
    "Who is responsible for {t}?",
    "When is {t} due?",
    "How much will {t} cost?",
    "Is {t} still on track?",
    "What did {p} say about {t}?",
    "Why was {t} postponed?",
    "What are the risks of {t}?",
]
_SMALL_TALK = [
    "Can everyone hear me?", "Let's wait two more minutes for {p}.", "Good morning everyone.",
    "It's raining again here.", "Thanks, that's all from me.", "{p}, you're breaking up a little.",
    "Let's take a short break.", "Did anyone watch the game last night?",
]


def meeting_sentences(n: int, seed: int = 0) -> list[str]:
    """`n` distinct sentences such as one hears in meetings (statements and small talk)."""
    rng = random.Random(seed)
    seen: set[str] = set()
    out: list[str] = []
    while len(out) < n:
        template = rng.choice(_SMALL_TALK) if rng.random() < 0.08 else rng.choice(_STATEMENTS)
        p, q = rng.sample(_PEOPLE, 2)
        text = template.format(p=p, q=q, t=rng.choice(_TOPICS), w=rng.choice(_WHEN), a=rng.choice(_AMOUNTS))
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def meeting_questions(n: int, seed: int = 1) -> list[str]:
    """`n` questions about the topics of `meeting_sentences` (repeats allowed)."""
    rng = random.Random(seed)
    return [rng.choice(_QUESTIONS).format(p=rng.choice(_PEOPLE), t=rng.choice(_TOPICS)) for _ in range(n)]


# --- measuring ------------------------------------------------------------------------------


def percentiles(ms: Sequence[float]) -> str:
    """``p50 … p95 …`` of latencies in ms."""
    q = statistics.quantiles(ms, n=20, method="inclusive")
    return f"p50 {statistics.median(ms):8.3f} ms  p95 {q[18]:8.3f} ms"


def each_ms(fn: Callable[[int], object], n: int) -> list[float]:
    """Latencies (ms) of ``fn(0)``, ``fn(1)``, … ``fn(n - 1)``."""
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def recall_at(found: Results, truth: Results) -> float:
    """Share of the exact top-k ids that `found` also returned."""
    hits = sum(len({i for i, _ in f} & {i for i, _ in t}) for f, t in zip(found, truth, strict=True))
    return hits / max(1, sum(len(t) for t in truth))


def noisy_copies(real: Matrix, n: int, seed: int = 0) -> Matrix:
    """`n` unit vectors: the rows of `real` in turn plus N(0, NOISE²) per dimension (first copies exact)."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    for start in range(0, n, 8192):
        rows = np.arange(start, min(n, start + 8192))
        noise = rng.standard_normal((len(rows), real.shape[1])).astype(np.float32)
        block = real[rows % len(real)] + NOISE * noise
        block[rows < len(real)] = real[rows[rows < len(real)]]
        out[rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


# --- sections -------------------------------------------------------------------------------


def bench_embedding(args: argparse.Namespace) -> tuple[Matrix, Matrix]:
    """Embedding latency; returns the real corpus and query embeddings for the index section."""
    from models.registry import load_embedder

    t0 = time.perf_counter()
    embedder = load_embedder("minilm", device="cpu", threads=args.threads)
    print(f"\n== embedding (MiniLM, {embedder.device}, {args.threads} torch thread(s)) ==")
    print(f"load (FlagEmbedding import + model)            {time.perf_counter() - t0:8.2f} s")
    sentences = meeting_sentences(args.sentences)
    questions = meeting_questions(args.queries)
    embedder.embed(sentences[:32])  # warm up
    single = each_ms(lambda i: embedder.embed([sentences[i]]), 50)
    print(f"batch 1, ms per sentence                       {percentiles(single)}")
    batches = [ms / 32 for ms in each_ms(lambda i: embedder.embed(sentences[i * 32:(i + 1) * 32]), 10)]
    print(f"batch 32, ms per sentence                      {percentiles(batches)}")
    flag = embedder._flag  # the FlagModel underneath, for comparison
    flag.encode(sentences[:2])
    flag_single = each_ms(lambda i: flag.encode([sentences[i]]), 20)
    print(f"FlagModel.encode batch 1, ms (for comparison)  {percentiles(flag_single)}")
    t0 = time.perf_counter()
    corpus = embedder.embed(sentences)
    spent = time.perf_counter() - t0
    print(f"corpus: {len(sentences)} template sentences embedded in {spent:.1f} s "
          f"({spent / len(sentences) * 1000:.1f} ms each at batch 32); {len(questions)} questions as queries")
    return corpus, embedder.embed(questions)


def bench_index(args: argparse.Namespace) -> None:
    """The embedding figures, then the vector index on real and repeated-with-noise embeddings."""
    import faiss

    faiss.omp_set_num_threads(args.threads)
    corpus, queries = bench_embedding(args)

    print(f"\n== recall@{K} of IVF vs flat on real embeddings "
          f"({len(corpus)} sentences, {len(queries)} queries) ==")
    ids = np.arange(1, len(corpus) + 1, dtype=np.int64)
    flat = FaissIndex(corpus.shape[1], ivf_threshold=10**12)
    flat.add(ids, corpus)
    truth = flat.search(queries, K)
    for nprobe in (4, 8, 16, 32):
        ivf = FaissIndex(corpus.shape[1], ivf_threshold=1, nprobe=nprobe)
        ivf.rebuild(zip(ids.tolist(), corpus, strict=True))
        found = ivf.search(queries, K)
        print(f"IVF nlist {ivf.nlist:5d} nprobe {nprobe:3d}: recall@{K} {recall_at(found, truth):.3f}")

    for size in args.sizes:
        bench_size(size, corpus, queries)


def bench_size(size: int, corpus: Matrix, queries: Matrix) -> None:
    """Flat against IVF over `size` vectors."""
    made = "real embeddings" if size <= len(corpus) else (
        f"the {len(corpus)} real embeddings repeated with N(0, {NOISE}²) noise per dimension, renormalised")
    print(f"\n== {size} vectors: {made} ==")
    base = noisy_copies(corpus, size)
    flat, _ = bench_kind("flat", base, queries)
    ivf, ivf_index = bench_kind("ivf", base, queries)
    print(f"IVF recall@{K} vs flat: {recall_at(ivf[0], flat[0]):.3f} unfiltered, "
          f"{recall_at(ivf[1], flat[1]):.3f} within one conversation (nprobe {ivf_index.nprobe})")
    for nprobe in (4, 8, 16, 32, 64):
        ivf_index.nprobe = nprobe
        one = each_ms(lambda i: ivf_index.search(queries[i], K), len(queries))
        found = ivf_index.search(queries, K)
        print(f"ivf  nprobe {nprobe:3d}: recall@{K} {recall_at(found, flat[0]):.3f}, "
              f"search {percentiles(one)}")


def bench_kind(kind: str, base: Matrix, queries: Matrix) -> tuple[tuple[Results, Results], FaissIndex]:
    """Build one kind of index over `base` and time it.

    Returns its results for `queries` (unfiltered, within one conversation) and the index.
    """
    size, dim = base.shape
    ids = np.arange(1, size + 1, dtype=np.int64)
    extra = noisy_copies(base[:500], 500, seed=99)
    conversation = range(size // 2, size // 2 + CONVERSATION)
    index = FaissIndex(dim, ivf_threshold=size if kind == "ivf" else 10**12, background_rebuild=False)
    t0 = time.perf_counter()
    if kind == "flat":
        index.add(ids, base)
    else:
        index.rebuild(zip(ids.tolist(), base, strict=True))
    built = time.perf_counter() - t0
    what = "add" if kind == "flat" else f"train nlist {index.nlist} + add"
    print(f"{kind:4s} build ({what}): {built:7.2f} s = {size / built:10.0f} vectors/s")
    singles = each_ms(lambda i: index.add([size + 1 + i], extra[i]), len(extra))
    print(f"{kind:4s} single-utterance add                         {percentiles(singles)}")
    n_q = min(len(queries), 200 if kind == "ivf" else 50)
    one = each_ms(lambda i: index.search(queries[i], K), n_q)
    print(f"{kind:4s} search 1 query, k={K}                         {percentiles(one)}")
    filtered = each_ms(lambda i: index.search(queries[i], K, allowed_ids=conversation), n_q)
    print(f"{kind:4s} search within {CONVERSATION} ids (one conversation) {percentiles(filtered)}")
    index.exact_filter_max = 0
    by_selector = each_ms(lambda i: index.search(queries[i], K, allowed_ids=conversation), n_q)
    index.exact_filter_max = FaissIndex(dim).exact_filter_max
    print(f"{kind:4s}   the same through the IDSelector      {percentiles(by_selector)}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tenant.faiss"
        t0 = time.perf_counter()
        meta = index.save(path)
        saved = time.perf_counter() - t0
        t0 = time.perf_counter()
        FaissIndex.load(path, dim, "")
        loaded = time.perf_counter() - t0
    print(f"{kind:4s} save {saved:6.2f} s, load {loaded:6.2f} s, {meta.size / 1e6:.0f} MB")
    return (index.search(queries, K), index.search(queries, K, allowed_ids=conversation)), index


def bench_summary(args: argparse.Namespace) -> None:
    """Extractive summary latency (the live summary with a base LLM) by conversation length.

    Real MiniLM embeddings of meeting-like sentences; the time covers choosing the key utterances
    from their vectors (what the server adds to reading them from the index).
    """
    from models.registry import load_embedder
    from stream.summary import extractive_summary

    embedder = load_embedder(threads=args.threads)
    sentences = meeting_sentences(max(args.sentences, 50))
    vectors = embedder.embed(sentences)
    print("\nextractive summary (5 key utterances) of a conversation of n utterances:")
    for n in (20, 200, 2000):
        rows = vectors[np.arange(n) % len(vectors)]

        def summarise(_i: int, rows: Matrix = rows) -> object:
            return extractive_summary(rows, 5)

        times = each_ms(summarise, 50)
        print(f"  n = {n:5d}: {percentiles(times)}")


SECTIONS: dict[str, Callable[[argparse.Namespace], None]] = {"index": bench_index, "summary": bench_summary}
"""Benchmark sections by name, in the order they run."""


def main(argv: Sequence[str] | None = None) -> None:
    """Run the chosen sections and print their figures and the command that produced them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", action="append", choices=sorted(SECTIONS), help="run only this section")
    parser.add_argument("--sentences", type=int, default=3000, help="real sentences to embed")
    parser.add_argument("--queries", type=int, default=200, help="questions used as queries")
    parser.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[10_000, 100_000],
                        help="index sizes, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch and faiss (OpenMP) threads")
    args = parser.parse_args(argv)
    argv = sys.argv[1:] if argv is None else list(argv)
    print("$ python -m bench.knowledge " + " ".join(argv))
    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    for name in args.only or list(SECTIONS):
        SECTIONS[name](args)


if __name__ == "__main__":
    main()
