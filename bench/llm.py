"""Latency of a grounded answer: time to first token and decode speed of an `LlmEngine`.

The answer prompt of `stream.answers` (few-shot for base models, chat for instruct ones) with
five passages of meeting talk, a different question each run. Prints, over N runs:

- first token p50/max, "cold": the llama.cpp context emptied before each run, so the whole
  prompt is evaluated (the first question after another kind of request);
- first token p50/max, "warm": the context keeps the previous answer prompt, so llama.cpp reuses
  the shared prefix (instructions, examples) and evaluates only the passages and question;
- decode tokens/s, from a 64-token continuation of the same prompt without stop sequences.

It also prints the load average: llama.cpp's threads wait for each other at every step, so on a
busy machine two threads can be several times slower than one (measured: 2.1–2.5 tok/s with two
threads against 10–11 with one, at a load average of 8 on 2 cores).

    python -m bench.llm [--model gemma3-270m] [--runs 5] [--threads 2] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from models.llm_llamacpp import LlamaCppEngine
from models.registry import load_llm
from stream.answers import Passage, build_answer_request, finalize_answer
from stream.interfaces import LlmRequest

PASSAGES = [
    Passage("m:12", 12, "The marketing budget for next year is four hundred thousand euros, most of it "
            "for the spring campaign in Spain and Portugal.", 312.0, "Ana"),
    Passage("m:4", 4, "We agreed that the new booking website goes live on the twentieth of April, and "
            "the tablet version a month later if the payment provider is ready.", 95.5, "Tom"),
    Passage("m:19", 19, "Sofia will send the revised contract to the lawyers by Thursday and report back on "
            "Monday's call.", 540.2, "Ana"),
    Passage("m:8", 8, "Support tickets went down by twelve percent since we changed the onboarding emails.",
            201.0, "Luis"),
    Passage("m:23", 23, "The office move is postponed to September because the new building is not finished.",
            660.8, "Tom"),
]
QUESTIONS = [
    "What is the marketing budget?",
    "When does the booking website go live?",
    "Who sends the contract to the lawyers?",
    "How much did support tickets go down?",
    "Why is the office move postponed?",
    "Where is the spring campaign?",
]


def answer_run(engine: LlamaCppEngine, question: str, passages: list[Passage], *,
               cold: bool) -> tuple[float, str]:
    """One answer: (seconds to the first piece, the text)."""
    if cold:
        engine.llama.reset()
    request = build_answer_request(question, passages, chat=engine.chat)
    text = "".join(engine.generate(request))
    first = engine.last_stats.first_piece_seconds
    return (first if first is not None else float("nan")), text


def decode_rate(engine: LlamaCppEngine, passages: list[Passage], tokens: int = 64) -> float:
    """Decode tokens/s: a continuation without stops, timed from its first piece to its end."""
    base = build_answer_request(QUESTIONS[0], passages, chat=engine.chat)
    request = LlmRequest(prompt=base.prompt, messages=base.messages, max_tokens=tokens, temperature=0.0)
    engine.llama.reset()
    pieces = list(engine.generate(request))
    stats = engine.last_stats
    decoded = engine.count_tokens("".join(pieces))
    first = stats.first_piece_seconds or 0.0
    return (decoded - 1) / max(stats.total_seconds - first, 1e-9)


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)
    print("command: python -m bench.llm " + " ".join(argv if argv is not None else sys.argv[1:]))
    print(f"load average at start: {_load()} on {os.cpu_count()} CPUs")

    t0 = time.perf_counter()
    engine = load_llm(args.model, device=args.device, n_threads=args.threads, n_ctx=args.n_ctx)
    load_s = time.perf_counter() - t0
    if not isinstance(engine, LlamaCppEngine):
        raise SystemExit("bench.llm measures llama.cpp engines only")
    prompt = build_answer_request(QUESTIONS[0], PASSAGES, chat=engine.chat)
    prompt_text = prompt.prompt or "\n".join(content for _, content in prompt.messages)
    print(f"model {engine.name} on {engine.device}, chat={engine.chat}, {args.threads} threads, "
          f"load {load_s:.2f} s")
    print(f"answer prompt: {engine.count_tokens(prompt_text) + 1} tokens, {len(PASSAGES)} passages")

    for cold in (True, False):
        firsts: list[float] = []
        for run in range(args.runs):
            question = QUESTIONS[run % len(QUESTIONS)]
            passages = PASSAGES[run % len(PASSAGES):] + PASSAGES[: run % len(PASSAGES)]  # vary the prompt
            first, text = answer_run(engine, question, passages, cold=cold)
            firsts.append(first)
            total = engine.last_stats.total_seconds
            final = finalize_answer(text, passages, question)
            print(f"  {'cold' if cold else 'warm'} run {run}: first token {first:.2f} s, "
                  f"total {total:.2f} s, {question!r} -> {text.strip()!r} -> {final.text!r}")
        label = "cold (full prompt)" if cold else "warm (shared prefix cached)"
        print(f"first token, {label}: p50 {statistics.median(firsts):.2f} s, max {max(firsts):.2f} s")

    rates = [decode_rate(engine, PASSAGES) for _ in range(3)]
    print(f"decode: {statistics.median(rates):.1f} tokens/s (median of 3 x 64 tokens)")
    print(f"load average at end: {_load()}")


if __name__ == "__main__":
    main()
