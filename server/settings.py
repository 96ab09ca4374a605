"""Building the one `ServerConfig` from a TOML file, the environment and the command line.

Rules, all in this file:

* The file mirrors `ServerConfig` (server/config.py): its top-level keys are the plain fields
  (`port = 8765`, `model = "base"`) and each nested config is a table with the field names as
  keys: `[scheduler]`, `[session]`, `[session.segmenter]`, `[limits]`, `[gpu_budget]`.
  deploy/palabre.example.toml lists every key.
* Every key can also be set from the environment, `PALABRE_<KEY>` for a top-level key
  (`PALABRE_PORT`) and `PALABRE_<TABLE>_<KEY>` inside a table (`PALABRE_SCHEDULER_MAX_BATCH`,
  `PALABRE_SESSION_SEGMENTER_PAD_MS`), and from the command line: the `palabre serve` flags, and
  `--set table.key=value` for any key.
* Precedence, key by key: command line > environment > file > default.
* Values are typed. A wrong type, an out-of-range value, or an unknown key (in the file or on the
  command line) is an error naming the key, where the value came from and why; every problem is
  reported at once. `PALABRE_*` variables that are not keys (the SDK's `PALABRE_URL` and
  `PALABRE_TOKEN`, ./dev's `PALABRE_WHEEL_CACHE`) are not configuration and are ignored.
* Text values (environment, `--set`) are parsed by the key's type: booleans as true/false, 1/0,
  yes/no or on/off; lists as comma-separated items; `none` or nothing for an optional key.
* Relative paths are relative to the working directory, as they are on the command line.
* Nothing here reads the process environment on its own: the caller passes it in.

The GPU budget (`[gpu_budget]`, GiB per service) is checked against the GPU the server will use
by `check_budget`; `palabre serve` refuses to start when it does not fit.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from models.registry import whisper_languages
from server.config import ServerConfig, parse_language_models, parse_retention_days, port_range
from server.gpu import GpuInfo
from server.store_postgresql import is_postgresql, without_password
from stream.vocabulary import check_vocabulary

ENV_PREFIX = "PALABRE_"
GIB = 1 << 30
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

HIDDEN: dict[str, str] = {
    "scheduler.sequential": 'set scheduler_mode = "sequential" instead',
}
"""Fields of the config objects that are not keys of their own, with what to use instead."""

SECRET_WORDS = ("token", "secret", "password")
"""A key whose name contains one of these is shown masked by `format_config`."""

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


class ConfigError(ValueError):
    """The configuration is invalid; `problems` holds one line per bad key."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("invalid configuration:\n" + "\n".join(f"  {p}" for p in self.problems))


class _Bad(Exception):
    """A value that does not fit its key (the message says why)."""


# --- the keys -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Key:
    """One setting: a leaf field of `ServerConfig` or of one of its nested configs."""

    path: tuple[str, ...]
    """Field names from `ServerConfig` down, e.g. ("session", "segmenter", "pad_ms")."""
    type: Any
    """The field's type annotation, resolved."""
    default: Any

    @property
    def name(self) -> str:
        """Dotted name, as in the file's tables and in `--set`: `scheduler.max_batch`."""
        return ".".join(self.path)

    @property
    def env(self) -> str:
        """The environment variable: `PALABRE_SCHEDULER_MAX_BATCH`."""
        return ENV_PREFIX + "_".join(self.path).upper()

    @property
    def secret(self) -> bool:
        return any(word in self.path[-1] for word in SECRET_WORDS)


def _is_config_class(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


def _collect_keys(cls: type[Any], prefix: tuple[str, ...] = ()) -> dict[str, Key]:
    hints = get_type_hints(cls)
    defaults = cls()
    keys: dict[str, Key] = {}
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        hint = hints[f.name]
        if _is_config_class(hint):
            keys.update(_collect_keys(hint, path))
            continue
        name = ".".join(path)
        if name in HIDDEN:
            continue
        describe(hint)  # raises TypeError for a type this module cannot read
        keys[name] = Key(path, hint, getattr(defaults, f.name))
    return keys


# --- types ----------------------------------------------------------------------------------


def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """(T, True) for `T | None`, (hint, False) otherwise."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = get_args(hint)
        inner = [a for a in args if a is not type(None)]
        if len(args) == 2 and len(inner) == 1:
            return inner[0], True
        raise TypeError(f"unsupported configuration type {hint!r}")
    return hint, False


def _is_str_tuple(hint: Any) -> bool:
    return get_origin(hint) is tuple and get_args(hint) == (str, ...)


def describe(hint: Any) -> str:
    """What a key of this type takes, in words ("an integer", 'one of "a", "b"')."""
    inner, optional = _unwrap_optional(hint)
    if inner is bool:
        text = "true or false"
    elif inner is int:
        text = "an integer"
    elif inner is float:
        text = "a number"
    elif inner is str:
        text = "a string"
    elif inner is Path:
        text = "a path (string)"
    elif get_origin(inner) is Literal:
        text = "one of " + ", ".join(json.dumps(a) for a in get_args(inner))
    elif _is_str_tuple(inner):
        text = "a list of strings"
    else:
        raise TypeError(f"unsupported configuration type {hint!r}")
    return text + (" (or none)" if optional else "")


def _shown(value: Any) -> str:
    kind = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list", dict: "table"}
    name = kind.get(type(value), type(value).__name__)
    return f"{value!r} ({name})" if not isinstance(value, str | list | dict) else f"{value!r}"


def _typed_value(hint: Any, value: Any) -> Any:
    """A typed value (TOML, or a flag already parsed) checked against the key's type."""
    inner, optional = _unwrap_optional(hint)
    if value is None and optional:
        return None
    if inner is bool and isinstance(value, bool):
        return value
    if inner is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if inner is float and isinstance(value, int | float) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise _Bad(f"expected a finite number, got {value!r}")
        return float(value)
    if inner is str and isinstance(value, str):
        return value
    if inner is Path and isinstance(value, str | Path) and str(value):
        return Path(value)
    if get_origin(inner) is Literal and isinstance(value, str) and value in get_args(inner):
        return value
    if _is_str_tuple(inner) and isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _Bad(f"expected {describe(hint)}, got {_shown(value)}")


def _text_value(hint: Any, text: str) -> Any:
    """A text value (environment, `--set`) parsed by the key's type."""
    inner, optional = _unwrap_optional(hint)
    stripped = text.strip()
    if optional and stripped.lower() in ("", "none"):
        return None
    if inner is bool:
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
    elif inner is int:
        try:
            return int(stripped)
        except ValueError:
            pass
    elif inner is float:
        try:
            number = float(stripped)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    elif inner is str:
        return text
    elif inner is Path:
        if stripped:
            return Path(stripped)
    elif get_origin(inner) is Literal:
        if stripped in get_args(inner):
            return stripped
    elif _is_str_tuple(inner):
        return tuple(item.strip() for item in text.split(",") if item.strip())
    raise _Bad(f"expected {describe(hint)}, got {text!r}")


KEYS: dict[str, Key] = _collect_keys(ServerConfig)
"""Every key, by dotted name, in `ServerConfig` field order."""
TABLES: frozenset[str] = frozenset(".".join(k.path[:i]) for k in KEYS.values() for i in range(1, len(k.path)))
"""Dotted names of the tables (`scheduler`, `session`, `session.segmenter`, ...)."""
ENV_KEYS: dict[str, Key] = {k.env: k for k in KEYS.values()}
if len(ENV_KEYS) != len(KEYS):  # e.g. a top-level `limits_x` next to `[limits] x`
    raise RuntimeError("two configuration keys share an environment variable name")


# --- checks beyond types --------------------------------------------------------------------

Check = tuple[Callable[[Any], bool], str]


def _at_least(low: float) -> Check:
    return (lambda v: v is None or v >= low, f"must be at least {low}")


def _is_port_range(text: str) -> bool:
    try:
        port_range(text)
    except ValueError:
        return False
    return True


def _are_language_models(entries: tuple[str, ...]) -> bool:
    try:
        parse_language_models(entries)
    except ValueError:
        return False
    return True


def _are_retention_days(entries: tuple[str, ...]) -> bool:
    try:
        parse_retention_days(entries)
    except ValueError:
        return False
    return True


def _is_vocabulary(terms: tuple[str, ...]) -> bool:
    try:
        check_vocabulary(list(terms))
    except ValueError:
        return False
    return True


def _positive() -> Check:
    return (lambda v: v is None or v > 0, "must be more than 0")


CHECKS: dict[str, Check] = {
    "port": (lambda v: 0 <= v <= 65535, "must be a TCP port (0-65535)"),
    "audiosocket_port": (lambda v: v is None or 1 <= v <= 65535, "must be a TCP port (1-65535)"),
    "sip_port": (lambda v: v is None or 1 <= v <= 65535, "must be a UDP port (1-65535)"),
    "sip_rtp_ports": (lambda v: _is_port_range(v), "must be LOW-HIGH UDP ports, e.g. 20000-20999"),
    "log_level": (lambda v: v.upper() in LOG_LEVELS, "must be one of " + ", ".join(LOG_LEVELS)),
    "tenant": (lambda v: bool(v.strip()), "must not be empty"),
    "asr_models": (
        _are_language_models,
        'must be LANGUAGE=MODEL entries (a 2-3 letter code or * for the others, each once), e.g. '
        '["en=tiny.en", "*=base"]',
    ),
    "asr_auto_languages": (
        lambda v: all(code in whisper_languages() for code in v),
        'must be language codes Whisper knows, e.g. ["en", "fr"] (empty: any)',
    ),
    "retention_days": (
        _are_retention_days,
        'must be TENANT=DAYS entries (whole days, 0: for ever; each tenant once), e.g. ["acme=30"]',
    ),
    "vocabulary": (
        _is_vocabulary, "must be at most 100 printable terms of at most 100 characters, 1 KB in all"
    ),
    "store": (
        lambda v: v is None or is_postgresql(v),
        "must be a PostgreSQL URI, postgresql://USER:PASSWORD@HOST:PORT/DB (unset: SQLite in data_dir)",
    ),
    "scheduler.max_batch": _at_least(1),
    "scheduler.length_ratio": _at_least(1),
    "scheduler.partial_max_age_s": _positive(),
    "scheduler.explore_every": _at_least(1),
    "session.partial_interval_s": _positive(),
    "limits.max_sessions": _at_least(1),
    "limits.max_text_bytes": _at_least(1),
    "limits.max_frame_bytes": _at_least(1),
    "limits.outbox_events": _at_least(1),
    "limits.store_hold_s": _positive(),
    "limits.store_hold_finals": _at_least(1),
}
"""Range checks of particular keys; besides these, no number may be negative."""


def _problem_with(key: Key, value: Any) -> str | None:
    check = CHECKS.get(key.name)
    if check is not None and not check[0](value):
        return check[1]
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return "must not be negative"
    return None


# --- loading --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Resolved:
    """A configuration and where each of its values came from."""

    config: ServerConfig
    sources: dict[str, str]
    """Key name → "default", the file's path, "environment PALABRE_…" or "command line"."""
    file: Path | None = None
    ignored_env: tuple[str, ...] = ()
    """`PALABRE_*` variables that are not configuration keys."""


def load_config(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> ServerConfig:
    """The server configuration: `overrides` > `env` > the TOML file at `path` > defaults.

    `overrides` maps dotted key names (`port`, `scheduler.max_batch`) to typed values (a parsed
    flag) or text (`--set`). Raises `ConfigError` listing every bad key.
    """
    return resolve(path, env, overrides).config


def resolve(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Resolved:
    """Like `load_config`, also saying where each value came from."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    file = Path(path) if path is not None else None

    def take(key: Key, source: str, value: Any, parse: Callable[[Any, Any], Any]) -> None:
        try:
            values[key.name] = parse(key.type, value)
        except _Bad as bad:
            problems.append(f"{source}: {key.name}: {bad}")
            return
        sources[key.name] = source

    if file is not None:
        for name, value in _read_file(file, problems).items():
            take(KEYS[name], str(file), value, _typed_value)

    ignored = []
    for variable, text in sorted((env or {}).items()):
        if not variable.startswith(ENV_PREFIX):
            continue
        key = ENV_KEYS.get(variable)
        if key is None:
            ignored.append(variable)
            continue
        take(key, f"environment {variable}", text, _text_value)

    for name, value in (overrides or {}).items():
        key = KEYS.get(name)
        if key is None:
            problems.append(f"command line: {_unknown(name)}")
            continue
        take(key, "command line", value, _text_value if isinstance(value, str) else _typed_value)

    for name, value in values.items():
        why = _problem_with(KEYS[name], value)
        if why is not None:
            shown = without_password(value) if name == "store" else value
            problems.append(f"{sources[name]}: {name} = {_format_value(shown)}: {why}")
    config = None
    if not problems:
        try:
            config = _build(ServerConfig, (), values)
        except _TableError as error:
            table = error.table or "top level"
            given = ", ".join(
                f"{n} from {s}" for n, s in sorted(sources.items()) if n.startswith(error.table)
            )
            problems.append(f"[{table}]: {error.reason}" + (f" (set: {given})" if given else ""))
    if problems or config is None:
        raise ConfigError(problems)
    return Resolved(config, {n: sources.get(n, "default") for n in KEYS}, file, tuple(ignored))


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    """The file's keys by dotted name, with their TOML values (unknown keys reported)."""
    try:
        with path.open("rb") as f:
            document = tomllib.load(f)
    except OSError as error:
        problems.append(f"{path}: cannot read the file: {error.strerror or error}")
        return {}
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{path}: not valid TOML: {error}")
        return {}
    found: dict[str, Any] = {}

    def walk(table: Mapping[str, Any], prefix: str) -> None:
        for name, value in table.items():
            dotted = prefix + name
            if dotted in TABLES:
                if isinstance(value, dict):
                    walk(value, dotted + ".")
                else:
                    problems.append(f"{path}: {dotted}: expected a table [{dotted}], got {_shown(value)}")
            elif dotted in KEYS:
                if isinstance(value, dict):
                    problems.append(f"{path}: {dotted}: expected {describe(KEYS[dotted].type)}, got a table")
                else:
                    found[dotted] = value
            elif isinstance(value, dict):
                problems.append(f"{path}: unknown table [{dotted}]" + _suggestion(dotted))
            else:
                problems.append(f"{path}: {_unknown(dotted)}")

    walk(document, "")
    return found


def _unknown(name: str) -> str:
    """'unknown key x (did you mean y?)'."""
    if name in HIDDEN:
        return f"unknown key {name}: {HIDDEN[name]}"
    return f"unknown key {name}" + _suggestion(name)


def _suggestion(name: str) -> str:
    """' (did you mean y?)' for the closest key or table, or ''."""
    close = difflib.get_close_matches(name, [*KEYS, *TABLES], n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


class _TableError(Exception):
    def __init__(self, table: str, reason: str) -> None:
        super().__init__(table, reason)
        self.table = table
        self.reason = reason


def _build(cls: type[Any], prefix: tuple[str, ...], values: Mapping[str, Any]) -> Any:
    """An instance of config class `cls` from the values given under `prefix` (defaults elsewhere)."""
    hints = get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        path = (*prefix, f.name)
        name = ".".join(path)
        if _is_config_class(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], path, values)
        elif name in values:
            kwargs[f.name] = values[name]
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as error:  # the config class's own checks (__post_init__)
        raise _TableError(".".join(prefix), str(error)) from None


# --- showing --------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    """A TOML literal for a configuration value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_format_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)


def value_of(config: ServerConfig, key: Key) -> Any:
    """The value of `key` in `config`."""
    value: Any = config
    for part in key.path:
        value = getattr(value, part)
    return value


def format_config(resolved: Resolved) -> str:
    """The effective configuration as TOML, each value not at its default commented with its source.

    Secrets are masked and unset optional keys commented out, so the text loads back with
    `load_config` to the same configuration apart from those.
    """
    lines: list[str] = []
    table = ""
    first_seen: dict[str, int] = {}
    for i, key in enumerate(KEYS.values()):
        first_seen.setdefault(key.path[0] if len(key.path) > 1 else "", i)

    def order(key: Key) -> tuple[int, int]:
        """Top-level keys, then tables in field order, a table before its sub-tables."""
        return (first_seen[key.path[0] if len(key.path) > 1 else ""], len(key.path))

    for key in sorted(KEYS.values(), key=order):
        here = ".".join(key.path[:-1])
        if here != table:
            table = here
            lines.extend(["", f"[{table}]"])
        value = value_of(resolved.config, key)
        source = resolved.sources.get(key.name, "default")
        comment = "" if source == "default" else f"  # {source}"
        leaf = key.path[-1]
        if value is None:
            lines.append(f"# {leaf} = (none){comment}")
        elif key.secret:
            lines.append(f"# {leaf} = (set, hidden){comment}")
        elif key.name == "store":
            lines.append(f"{leaf} = {_format_value(without_password(value))}{comment}")
        else:
            lines.append(f"{leaf} = {_format_value(value)}{comment}")
    return "\n".join(lines).lstrip("\n") + "\n"


# --- the GPU budget -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """Whether the GPU budget fits the GPU the server will use, and a sentence saying so."""

    fits: bool
    message: str
    gpu: GpuInfo | None = None


def cuda_device(gpus: Sequence[GpuInfo], env: Mapping[str, str] | None = None) -> GpuInfo | None:
    """The GPU CUDA will call device 0: the first of `CUDA_VISIBLE_DEVICES` (an index or a UUID),
    else NVML's first GPU. NVML numbers GPUs in PCI bus order; CUDA does too with
    `CUDA_DEVICE_ORDER=PCI_BUS_ID` (its default orders them fastest first)."""
    if not gpus:
        return None
    visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return gpus[0]
    first = visible.split(",")[0].strip()
    if first.isdigit():
        return next((g for g in gpus if g.index == int(first)), None)
    if first.startswith(("GPU-", "MIG-")):
        return next((g for g in gpus if g.uuid and g.uuid.startswith(first)), None)
    return None


def check_budget(
    config: ServerConfig, gpus: Sequence[GpuInfo], env: Mapping[str, str] | None = None
) -> BudgetCheck:
    """Does `[gpu_budget]` fit the GPU the server will run on?

    It fits when no budget is declared, when the device is the CPU and when no GPU is detected
    (nothing to check); otherwise the budget's total must not exceed the GPU's total memory.
    Memory already used by other processes is reported, not refused.
    """
    budget = config.gpu_budget
    total = budget.total
    if total <= 0:
        return BudgetCheck(True, "no GPU budget declared ([gpu_budget] is empty)")
    parts = ", ".join(
        f"{f.name} {getattr(budget, f.name):g}" for f in dataclasses.fields(budget) if getattr(budget, f.name)
    )
    planned = f"GPU budget {total:.1f} GiB ({parts})"
    if config.device == "cpu":
        return BudgetCheck(True, f"{planned}: not checked, the device is the CPU")
    if not gpus:
        return BudgetCheck(True, f"{planned}: not checked, no GPU detected")
    gpu = cuda_device(gpus, env)
    if gpu is None:
        visible = (env or {}).get("CUDA_VISIBLE_DEVICES")
        return BudgetCheck(True, f"{planned}: not checked, CUDA_VISIBLE_DEVICES={visible!r} hides every GPU")
    capacity = gpu.memory_total_bytes / GIB
    where = f"GPU {gpu.index} ({gpu.name}, {capacity:.1f} GiB)"
    if total > capacity:
        return BudgetCheck(
            False,
            f"{planned} does not fit {where}: {total - capacity:.1f} GiB over. "
            "Lower the [gpu_budget] entries (smaller or quantised models) or use a larger GPU.",
            gpu,
        )
    message = f"{planned} fits {where}: {capacity - total:.1f} GiB unplanned"
    used = gpu.memory_used_bytes / GIB
    if used > capacity - total:
        message += f"; note {used:.1f} GiB are in use now, by this or other processes"
    return BudgetCheck(True, message, gpu)
