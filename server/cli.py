"""The `palabre` command."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from server.config import ServerConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="palabre", description="Palabre real-time speech server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765)
    serve.add_argument("--data-dir", type=Path, default=Path("data"))
    serve.add_argument("--model", default="tiny.en", help="tiny.en, base, a CTranslate2 Whisper directory")
    serve.add_argument("--device", default="auto", help="auto, cpu or cuda")
    serve.add_argument("--compute-type", default="auto", help="auto, int8, float16, ...")
    serve.add_argument("--asr-workers", type=int, default=0, help="concurrent engine calls (0: auto)")
    serve.add_argument("--cpu-threads", type=int, default=0, help="threads per engine call (0: auto)")
    serve.add_argument(
        "--scheduler",
        choices=["batched", "sequential"],
        default="batched",
        help="batched: the cross-session micro-batcher; sequential: one request at a time (baseline)",
    )
    serve.add_argument("--embedder", default="minilm", help="minilm (bundled), bge-m3, or a model directory")
    serve.add_argument(
        "--llm", default="gemma3-270m", help="gemma3-270m (bundled), a .gguf, an EXL2 dir, or none"
    )
    serve.add_argument(
        "--no-memory",
        action="store_true",
        help="transcription only: no embeddings, index, answers or summaries",
    )
    serve.add_argument(
        "--audiosocket-port",
        type=int,
        default=None,
        help="also accept Asterisk AudioSocket calls on this TCP port",
    )
    serve.add_argument(
        "--asr-fallback",
        choices=["auto", "cpu", "off"],
        default="auto",
        help="CPU engine taking over when the GPU engine fails (auto: when the ASR runs on a GPU)",
    )
    serve.add_argument(
        "--inject-asr-fault-after",
        type=int,
        default=None,
        metavar="N",
        help="chaos testing: the primary ASR engine fails like a lost GPU after N batches",
    )
    serve.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        config = ServerConfig(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            model=args.model,
            device=args.device,
            compute_type=args.compute_type,
            asr_workers=args.asr_workers,
            cpu_threads=args.cpu_threads,
            scheduler_mode=args.scheduler,
            memory=not args.no_memory,
            asr_fallback=args.asr_fallback,
            inject_asr_fault_after=args.inject_asr_fault_after,
            embedder=args.embedder,
            llm=args.llm,
            log_level=args.log_level,
            audiosocket_port=args.audiosocket_port,
        )
        logging.basicConfig(
            level=config.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            stream=sys.stderr,
        )
        import uvloop

        from server.app import run

        uvloop.run(run(config))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
