"""The `palabre` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from server import gpu
from server.auth import startup_refusal
from server.config import ServerConfig
from server.data_commands import add_data_commands, run_data_command
from server.settings import (
    GIB,
    KEYS,
    BudgetCheck,
    ConfigError,
    Resolved,
    check_budget,
    format_config,
    resolve,
)
from server.store_postgresql import without_password
from server.tokens import add_token_commands, run_token_command


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="palabre", description="Palabre real-time speech server")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings: flags > PALABRE_* environment > --config file > defaults.",
    )
    serve.add_argument("--config", type=Path, metavar="FILE", help="a TOML configuration file")
    add_config_flags(serve)
    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    check = config_sub.add_parser(
        "check",
        help="validate a configuration file; print the effective configuration and the GPU budget",
        description="Validate FILE with the PALABRE_* environment and flags as `palabre serve` would; "
        "print the effective configuration as TOML (stdout) and check the GPU budget. "
        "Exit status 2 when it is invalid or the budget does not fit the GPU.",
    )
    check.add_argument("config", type=Path, metavar="FILE", help="a TOML configuration file")
    add_config_flags(check)
    add_token_commands(sub)
    db = sub.add_parser("db", help="database tools")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    migrate = db_sub.add_parser(
        "migrate",
        help="bring the store's schema up to this version (`serve` also does at start)",
        description="Apply the schema migrations the store lacks (SQLite in --data-dir, or --store "
        "postgresql://…; the PALABRE_* environment and --config apply as for serve). Exit status 2 "
        "when the store cannot be used or its schema is newer than this Palabre's.",
    )
    migrate.add_argument("--config", type=Path, metavar="FILE", help="a TOML configuration file")
    migrate.add_argument("--data-dir", type=Path, help=_default("data_dir"))
    migrate.add_argument(
        "--store", help="postgresql://USER:PASSWORD@HOST:PORT/DB (default: SQLite in --data-dir)"
    )
    add_data_commands(sub)
    return parser


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that set configuration keys: a flag's `dest` is its key (server/settings.py).

    Every default is None (not given), so that the environment and the file apply underneath.
    """

    _add_model_flags(parser)
    _add_connection_flags(parser)


def _default(name: str) -> str:
    return f"(default: {KEYS[name].default})"


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """Where the server listens and what it runs: models, devices, scheduler, memory."""
    default = _default
    parser.add_argument("--host", help=default("host"))
    parser.add_argument("--port", type=int, help=default("port"))
    parser.add_argument("--data-dir", type=Path, help=default("data_dir"))
    parser.add_argument(
        "--store",
        metavar="URI",
        help="postgresql://USER:PASSWORD@HOST:PORT/DB, shared by several front-ends "
        "(default: SQLite in the data dir)",
    )
    parser.add_argument(
        "--model",
        help="one model for every language: tiny.en, base, a CTranslate2 Whisper directory "
        "(default: a model per language group, asr_models: en=tiny.en, *=base)",
    )
    parser.add_argument("--device", help="auto, cpu or cuda " + default("device"))
    parser.add_argument("--compute-type", help="auto, int8, float16, ... " + default("compute_type"))
    parser.add_argument("--asr-workers", type=int, help="concurrent engine calls (0: auto)")
    parser.add_argument("--cpu-threads", type=int, help="threads per engine call (0: auto)")
    parser.add_argument(
        "--scheduler",
        dest="scheduler_mode",
        choices=["batched", "sequential"],
        help="batched: the cross-session micro-batcher; sequential: one request at a time (baseline)",
    )
    parser.add_argument("--embedder", help="minilm (bundled), bge-m3, or a model directory")
    parser.add_argument("--llm", help="gemma3-270m (bundled), a .gguf, an EXL2 dir, or none")
    parser.add_argument(
        "--no-memory",
        dest="memory",
        action="store_const",
        const=False,
        help="transcription only: no embeddings, index, answers or summaries",
    )
    parser.add_argument(
        "--no-entities",
        dest="entities",
        action="store_const",
        const=False,
        help="do not tag named entities (people, places, dates, amounts) in utterances",
    )
    parser.add_argument(
        "--asr-fallback",
        choices=["auto", "cpu", "off"],
        help="a CPU engine that takes over when the GPU engine fails (auto: when the ASR runs on a GPU)",
    )
    parser.add_argument(
        "--inject-asr-fault-after",
        type=int,
        metavar="N",
        help="tests only: the primary ASR engine fails like a lost GPU after N batches",
    )
    parser.add_argument("--log-level", help=default("log_level"))
    parser.add_argument(
        "--set",
        dest="settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any configuration key, e.g. --set scheduler.max_batch=16 (repeatable)",
    )


def _add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """Who may connect, on which ports and transports, and the Ray cluster."""
    default = _default
    parser.add_argument(
        "--audiosocket-port", type=int, help="also accept Asterisk AudioSocket calls on this TCP port"
    )
    parser.add_argument(
        "--auth",
        action="store_const",
        const=True,
        help="require API tokens (`palabre token create`); needed to bind a non-loopback host",
    )
    parser.add_argument(
        "--allowed-origin",
        dest="allowed_origins",
        action="append",
        metavar="ORIGIN",
        help="a browser origin allowed to open WebSockets, e.g. https://app.example.com (repeatable)",
    )
    parser.add_argument(
        "--audiosocket-token", help="with --auth: the token (scope stream) AudioSocket calls run under"
    )
    parser.add_argument("--sip-port", type=int, help="also accept SIP calls on this UDP port")
    parser.add_argument(
        "--sip-rtp-ports",
        metavar="LOW-HIGH",
        help="UDP ports for SIP calls' audio " + default("sip_rtp_ports"),
    )
    parser.add_argument("--sip-token", help="with --auth: the token (scope stream) SIP calls run under")
    parser.add_argument(
        "--telephony-diarize",
        action="store_const",
        const=True,
        help="tell the speakers of AudioSocket, SIP and Twilio calls apart by default "
        "(a SIP X-Diarize header or a Twilio diarize parameter decides per call)",
    )
    parser.add_argument(
        "--ray",
        dest="ray_address",
        nargs="?",
        const="auto",
        metavar="ADDRESS",
        help="run the model services as Ray actors shared by several front-ends: a cluster address "
        "(HEAD:6379), auto (default: the running cluster) or local (start Ray here)",
    )
    parser.add_argument("--ray-asr-gpus", type=float, help="with --ray: GPU fraction of the ASR actor")
    parser.add_argument(
        "--ray-embed-gpus", type=float, help="with --ray: GPU fraction of the embedding actor"
    )


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The configuration keys the command line sets: flags given, then each `--set`."""
    overrides: dict[str, Any] = {
        dest: value for dest, value in vars(args).items() if dest in KEYS and value is not None
    }
    for item in getattr(args, "settings", []):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError([f"command line: --set {item!r}: expected KEY=VALUE"])
        overrides[name.strip()] = value
    return overrides


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the `palabre` command; `env` defaults to the process environment (read here only)."""
    args = build_parser().parse_args(argv)
    environ: Mapping[str, str] = os.environ if env is None else env
    if args.command == "serve":
        return _serve(args, environ)
    if args.command == "token":
        return run_token_command(args)
    if args.command in ("erase", "purge", "audit", "tenant"):
        return run_data_command(args)
    if args.command == "config" and args.config_command == "check":
        return _check(args, environ)
    if args.command == "db" and args.db_command == "migrate":
        return _migrate(args, environ)
    return 2


def _resolve(args: argparse.Namespace, env: Mapping[str, str]) -> Resolved | None:
    try:
        return resolve(args.config, env, config_overrides(args))
    except ConfigError as error:
        print(f"palabre: {error}", file=sys.stderr)
        return None


def _budget(config: ServerConfig, env: Mapping[str, str]) -> tuple[list[gpu.GpuInfo], BudgetCheck]:
    """The detected GPUs (only looked for when there is a budget to check) and the budget check."""
    wanted = config.gpu_budget.total > 0 and config.device != "cpu"
    gpus = gpu.detect_gpus() if wanted else []
    return gpus, check_budget(config, gpus, env)


def _serve(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    resolved = _resolve(args, env)
    if resolved is None:
        return 2
    config = resolved.config
    refusal = startup_refusal(config)
    if refusal is not None:
        print(f"palabre: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    _, budget = _budget(config, env)
    if not budget.fits:
        print(f"palabre: refusing to start: {budget.message}", file=sys.stderr)
        return 2
    logging.getLogger("palabre").info("%s", budget.message)
    import uvloop

    from server.app import run

    uvloop.run(run(config))
    return 0


def _migrate(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    resolved = _resolve(args, env)
    if resolved is None:
        return 2
    config = resolved.config
    import asyncio

    from server.store import StoreError
    from server.store_interface import open_store

    async def migrate() -> None:
        store = await open_store(config.store, config.database_path)  # opening migrates
        await store.close()

    try:
        asyncio.run(migrate())
    except StoreError as error:
        print(f"palabre: {error}", file=sys.stderr)
        return 2
    where = without_password(config.store) if config.store else str(config.database_path)
    print(f"{where}: schema up to date")
    return 0


def _check(args: argparse.Namespace, env: Mapping[str, str]) -> int:
    resolved = _resolve(args, env)
    if resolved is None:
        return 2
    config = resolved.config
    gpus, budget = _budget(config, env)
    if not gpus and config.gpu_budget.total > 0 and config.device == "cpu":
        gpus = gpu.detect_gpus()
    report = [f"# palabre config check {args.config}: valid"]
    if resolved.ignored_env:
        report.append("# ignored (not configuration keys): " + ", ".join(resolved.ignored_env))
    if config.gpu_budget.total > 0 and not gpus:
        report.append("# GPU: no GPU detected")
    for g in gpus:
        report.append(
            f"# GPU {g.index}: {g.name}, {g.memory_total_bytes / GIB:.1f} GiB, "
            f"{g.memory_used_bytes / GIB:.1f} GiB in use"
        )
    report.append(f"# budget: {budget.message}")
    print("\n".join(report) + "\n\n" + format_config(resolved), end="")
    if not budget.fits:
        print(f"palabre: the GPU budget does not fit: {budget.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
