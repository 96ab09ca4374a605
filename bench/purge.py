"""How long a purge holds the store: each erased conversation is one transaction, and a live
session's final waits at most one of them. Prints per-conversation erase times and the total.

    python bench/purge.py --conversations 200 --utterances 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from server.store import Store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--conversations", type=int, default=200)
    parser.add_argument("--utterances", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "palabre.db") as store:
        for c in range(args.conversations):
            store.open_conversation("acme", f"c{c}", "en")
            for seq in range(args.utterances):
                store.add_utterance(
                    "acme", f"c{c}", seq, f"utterance {seq} of conversation {c} " * 4, seq, seq + 1, "en"
                )
        store.add_summary("acme", "c0", "summary", "extractive", 1)
        times = []
        started = time.perf_counter()
        for tenant, cid in store.conversations_idle_since(time.time() + 1, limit=args.conversations):
            t0 = time.perf_counter()
            store.erase_conversation(tenant, cid)
            times.append(time.perf_counter() - t0)
        total = time.perf_counter() - started
        add_t0 = time.perf_counter()
        store.open_conversation("acme", "live", "en")
        store.add_utterance("acme", "live", 0, "a live final", 0, 1, "en")
        add_s = time.perf_counter() - add_t0
    times.sort()
    print(f"$ python bench/purge.py --conversations {args.conversations} --utterances {args.utterances}")
    print(f"erased {len(times)} conversations of {args.utterances} utterances in {total:.2f} s")
    print(
        f"per conversation (the longest a live final waits): p50 {statistics.median(times) * 1000:.1f} ms, "
        f"p95 {times[int(0.95 * (len(times) - 1))] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
    )
    print(f"a live final after the purge: {add_s * 1000:.1f} ms")


if __name__ == "__main__":
    main()
