"""The `palabre-client` command: `palabre-client stream FILE` prints a file's transcript as it streams.

Options fall back to the environment, read once here: `PALABRE_URL` for `--url` and
`PALABRE_TOKEN` for `--token`. Exit status: 0 on success, 1 when the server reports an error or
the connection fails (the message goes to stderr), 2 on a usage error, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

from palabre_client.client import DEFAULT_URL, Event, PalabreError, stream_file
from palabre_client.memory import EXPORT_FORMATS, ask, export, search

PROG = "palabre-client"
_CLEAR_LINE = "\r\x1b[K"


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser, one subcommand per action, defaults taken from `env`."""
    parser = argparse.ArgumentParser(prog=PROG, description="Client for the Palabre speech server.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        default=env.get("PALABRE_URL", DEFAULT_URL),
        help="server stream endpoint (default: $PALABRE_URL or %(default)s)",
    )
    common.add_argument(
        "--token",
        default=env.get("PALABRE_TOKEN"),
        help="bearer token sent as `Authorization: Bearer …` (default: $PALABRE_TOKEN)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    stream = commands.add_parser(
        "stream",
        parents=[common],
        help="stream an audio file and print its transcript",
        description="Stream an audio file (wav, flac, mp3, opus, ogg, …) as live audio and print "
        "finals as `[start-end] speaker: text`; on a terminal, partials overwrite the current line.",
    )
    stream.add_argument("file", metavar="FILE", help="audio file to stream")
    stream.add_argument(
        "--language", default="en", help="language code, or `auto` to detect it (default: %(default)s)"
    )
    stream.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="times real time; 0 or inf sends as fast as possible (default: %(default)s)",
    )
    stream.add_argument("--conversation-id", help="add this session to an existing conversation")
    stream.add_argument(
        "--vocabulary",
        default="",
        help="comma-separated names and terms the speakers use, e.g. \"Zyphrex,Kessandra Vollmer\"",
    )
    stream.add_argument("--track", help="name of this audio's speaker or call leg (e.g. a participant)")
    stream.add_argument(
        "--mix",
        action="store_true",
        help="mix a multichannel file down to one track (default: one track per channel, ch1, ch2, …)",
    )
    stream.add_argument(
        "--diarize",
        action="store_true",
        help="tell the speakers of the audio apart: each final gets a speaker label (S1, S2, …)",
    )
    stream.add_argument("--json", action="store_true", help="print every server event as one JSON line")
    stream.set_defaults(run=_run_stream)

    ask_cmd = commands.add_parser(
        "ask",
        parents=[common],
        help="ask a question about a conversation; streams the answer and prints its citations",
    )
    ask_cmd.add_argument("question", metavar="QUESTION")
    ask_cmd.add_argument("--conversation", help="the conversation id (omit with --scope tenant)")
    ask_cmd.add_argument("--scope", choices=["conversation", "tenant"], default="conversation")
    ask_cmd.add_argument("--json", action="store_true", help="print the answer.done event as JSON")
    ask_cmd.set_defaults(run=_run_ask)

    search_cmd = commands.add_parser(
        "search", parents=[common], help="find the utterances closest in meaning to a query"
    )
    search_cmd.add_argument("query", metavar="QUERY")
    search_cmd.add_argument("--conversation", help="search one conversation only")
    search_cmd.add_argument("-k", type=int, default=5, help="how many results (default: %(default)s)")
    search_cmd.add_argument("--json", action="store_true", help="print the results as JSON")
    search_cmd.set_defaults(run=_run_search)

    export_cmd = commands.add_parser(
        "export",
        parents=[common],
        help="print a conversation's transcript as a subtitle, text or minutes file",
    )
    export_cmd.add_argument("conversation", metavar="CONVERSATION_ID")
    export_cmd.add_argument(
        "--format", choices=EXPORT_FORMATS, default="vtt", help="file format (default: %(default)s)"
    )
    export_cmd.add_argument("-o", "--output", help="write to this file instead of stdout")
    export_cmd.set_defaults(run=_run_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `palabre-client` console script; returns the exit status."""
    parser = build_parser(os.environ)
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] | None = getattr(args, "run", None)
    if run is None:
        parser.print_help(sys.stderr)
        return 2
    return run(args)


class EventPrinter:
    """Writes events as they arrive: JSON lines, or a transcript with partials on a live line."""

    def __init__(self, out: TextIO, err: TextIO, *, json_lines: bool, tty: bool) -> None:
        self.out = out
        self.err = err
        self.json_lines = json_lines
        self.tty = tty
        self._line_open = False
        """Whether a partial is on screen, to be cleared before anything else is written."""

    def __call__(self, event: Event) -> None:
        kind = event.get("type")
        if self.json_lines:
            self.out.write(json.dumps(event, ensure_ascii=False) + "\n")
            self.out.flush()
        if kind == "error":
            self.report(f"{event.get('code')}: {event.get('message')}")
        if self.json_lines:
            return
        if kind == "partial" and self.tty:
            self.out.write(_CLEAR_LINE + _fit(str(event.get("text", ""))))
            self.out.flush()
            self._line_open = True
        elif kind == "final" and str(event.get("text", "")).strip():
            self.finish()
            who = event.get("speaker_name") or event.get("speaker")  # its name, once it was named
            speaker = f"{who}: " if who else ""
            self.out.write(f"[{event['start']:.2f}-{event['end']:.2f}] {speaker}{event['text']}\n")
            self.out.flush()

    def report(self, message: str) -> None:
        """Write an error message on stderr, below any partial."""
        self.finish()
        self.err.write(f"{PROG}: {message}\n")
        self.err.flush()

    def finish(self) -> None:
        """Clear a partial left on the current line."""
        if self._line_open:
            self.out.write(_CLEAR_LINE)
            self.out.flush()
            self._line_open = False


def _fit(text: str) -> str:
    """The end of `text`, cut to fit on one terminal line so `\\r` can overwrite it."""
    width = shutil.get_terminal_size().columns - 1
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def _run_stream(args: argparse.Namespace) -> int:
    printer = EventPrinter(sys.stdout, sys.stderr, json_lines=args.json, tty=sys.stdout.isatty())
    language = None if args.language == "auto" else args.language
    try:
        events = asyncio.run(
            stream_file(
                args.url,
                args.file,
                language=language,
                speed=args.speed,
                token=args.token,
                conversation_id=args.conversation_id,
                vocabulary=[term.strip() for term in args.vocabulary.split(",") if term.strip()],
                on_event=printer,
                track=args.track,
                diarize=args.diarize,
                split_channels=not args.mix,
            )
        )
    except PalabreError as exc:
        if exc.event is not None:
            printer(exc.event)  # the server's error answer to `start`
        else:
            printer.report(str(exc))
        return 1
    except (OSError, ValueError) as exc:
        printer.report(str(exc))  # an unreadable file, a bad option value
        return 1
    except KeyboardInterrupt:
        printer.finish()
        return 130
    printer.finish()
    return 1 if any(event.get("type") == "error" for event in events) else 0


def _run_ask(args: argparse.Namespace) -> int:
    def delta(text: str) -> None:
        if not args.json:
            sys.stdout.write(text)
            sys.stdout.flush()

    try:
        done = asyncio.run(
            ask(
                args.question,
                url=args.url,
                conversation_id=args.conversation,
                scope=args.scope,
                token=args.token,
                on_delta=delta,
            )
        )
    except PalabreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(done, ensure_ascii=False))
        return 0
    print()
    print(f"Answer: {done['text']}")
    for passage in done.get("passages", []):
        print(f"  [{passage['utterance_id']}] ({passage['start']:.1f}s) {passage['text']}")
    return 0


def _run_search(args: argparse.Namespace) -> int:
    try:
        results = asyncio.run(
            search(args.query, url=args.url, conversation_id=args.conversation, k=args.k, token=args.token)
        )
    except PalabreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(results, ensure_ascii=False))
        return 0
    for hit in results:
        print(f"{hit['score']:.3f}  [{hit['utterance_id']}] {hit['text']}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    try:
        text = asyncio.run(export(args.conversation, format=args.format, url=args.url, token=args.token))
    except PalabreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output:
        with open(args.output, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
