"""Precision and recall of redaction (`stream.redaction`) per kind on the labelled set.

The set is tests/fixtures/redaction_set.json (English and French sentences as Whisper writes
them, with the spans to redact; negatives such as order numbers failing Luhn). Names go through
the real named-entity recogniser (spaCy via `models.registry.load_ner`) unless ``--no-ner``.
A found span counts as right when a labelled span of the same kind overlaps it; a labelled span
counts as found when a found span of its kind overlaps it. Also prints the time per sentence.

    python -m bench.redaction [--no-ner] [--show]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

from bench.common import command_line, rounded
from models.registry import load_ner
from stream.redaction import REDACTION_KINDS, Redactor, Span

SET = Path(__file__).parents[1] / "tests" / "fixtures" / "redaction_set.json"


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--no-ner", action="store_true", help="rules only (names are then all missed)")
    parser.add_argument("--show", action="store_true", help="print each sentence's mistakes")
    args = parser.parse_args()
    cases = json.loads(SET.read_text(encoding="utf-8"))["cases"]
    redactor = Redactor(REDACTION_KINDS, None if args.no_ner else load_ner())
    for case in cases[:2]:  # load the pipelines before timing
        redactor.spans(case["text"], case["language"])
    right, found, labelled, hit = Counter[str](), Counter[str](), Counter[str](), Counter[str]()
    started = time.perf_counter()
    for case in cases:
        text = case["text"]
        spans: list[Span] = redactor.spans(text, case["language"])
        want = [(kind, text.index(s), text.index(s) + len(s)) for kind, s in case["spans"]]
        for span in spans:
            found[span.kind] += 1
            ok = any(k == span.kind and _overlaps((span.start, span.end), (a, b)) for k, a, b in want)
            right[span.kind] += ok
            if not ok and args.show:
                print(f"  extra {span.kind}: {text[span.start : span.end]!r} in {text!r}")
        for kind, a, b in want:
            labelled[kind] += 1
            ok = any(s.kind == kind and _overlaps((s.start, s.end), (a, b)) for s in spans)
            hit[kind] += ok
            if not ok and args.show:
                print(f"  missed {kind}: {text[a:b]!r} in {text!r}")
    elapsed = time.perf_counter() - started
    negatives = sum(not c["spans"] for c in cases)
    print(f"{len(cases)} sentences ({negatives} without any span), ner: {not args.no_ner}")
    print(f"{'kind':8} {'labelled':>8} {'found':>6} {'precision':>9} {'recall':>7}")
    for kind in REDACTION_KINDS:
        precision = rounded(right[kind] / found[kind]) if found[kind] else None
        recall = rounded(hit[kind] / labelled[kind]) if labelled[kind] else None
        print(f"{kind:8} {labelled[kind]:>8} {found[kind]:>6} {precision!s:>9} {recall!s:>7}")
    print(f"time per sentence: {1000 * elapsed / len(cases):.2f} ms")
    print(command_line())


if __name__ == "__main__":
    main()
