"""Configs: YAML files validated into dataclasses, with dotted ``key=value`` overrides.

Only the machinery lives here: every stage declares its own settings as a dataclass with a
docstring under each field (``datasets.config``, ``envs.config``, ``model.config``,
``training.config``); this module turns a YAML mapping into such a dataclass, refusing unknown
keys (with the valid ones listed) and values of the wrong type, and turns it back into plain
dicts to save beside every output. It imports no stage, so reading one stage's config never
loads another's.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from atari_dt.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config file, override or config dataclass has an unknown key, or a value of the wrong
    type or out of range."""


def config_from_dict(cls: type[T], values: Mapping[str, Any], *, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, recursively, checking keys and types.

    Raises:
        ConfigError: unknown key (lists the valid ones and a close match) or wrong type,
            naming the dotted key, e.g. ``data.context_len``.
    """
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = typing.get_type_hints(cls)
    unknown = [key for key in values if key not in fields]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), list(fields), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown config key {_join(where, key)!r}{hint}; valid keys: {', '.join(fields)}"
        )
    kwargs = {key: _coerce(hints[key], value, _join(where, key)) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or 'config'}: {err}") from err


def _coerce(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return config_from_dict(hint, value, where=key)  # type: ignore[arg-type]
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(option, value, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0])
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return origin(_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value))
    return _coerce_scalar(hint, value, key)


_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce_scalar(hint: Any, value: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads 1e-3 as a string: it needs 1.0e-3
    if hint is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(value, hint):
        return value
    raise ConfigError(f"{key}: expected {getattr(hint, '__name__', hint)}, got {value!r}")


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A dataclass config as plain, YAML/JSON-able data (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, tuple | list):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(config))


def apply_overrides(values: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings to a nested dict (values parsed as YAML: ``3``, ``0.5``,
    ``null``, ``[1, 2]``). Returns a new dict; key validity is checked when it is built.

    Raises:
        ConfigError: an override without ``=``.
    """
    import copy

    import yaml

    result = copy.deepcopy(values)
    for override in overrides:
        if "=" not in override:
            raise ConfigError(f"override {override!r} must look like section.key=value")
        dotted, raw = override.split("=", 1)
        node = result
        *parents, leaf = dotted.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {override!r}: {part!r} is not a section")
        node[leaf] = yaml.safe_load(raw)
    return result


def _first_line(err: Exception) -> str:
    """A YAML error's gist in one line (its messages span several, with a caret drawing)."""
    return " ".join(str(err).split())


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Read a YAML config (or start from ``cls``'s defaults when ``path`` is None), apply
    overrides and validate into ``cls``, e.g. ``load_config(ExperimentConfig, "train.yaml",
    ["model.n_layers=2"])`` (``atari_dt.training.config``).

    Raises:
        ConfigError: unreadable YAML, unknown keys or wrong types (names the file and key).
        FileNotFoundError: ``path`` does not exist.
    """
    import yaml

    values: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({_first_line(err)})") from None
        if values is None:  # an empty file is a mistake, not a request for every default
            raise ConfigError(
                f"{path} is empty; give the sections to set (e.g. `collect: {{game: Pong}}`), "
                "or leave out the config file to run on the defaults"
            )
        if not isinstance(values, dict):
            raise ConfigError(
                f"{path}: expected a mapping of sections, got {type(values).__name__}"
            )
    try:
        return config_from_dict(cls, apply_overrides(values, overrides))
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}" if path is not None else str(err)) from None
