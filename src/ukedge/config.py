"""Settings of the servers (hub, host agent), merged from four sources in one way.

Lowest to highest precedence: the model's defaults, a TOML file (keys at top level or under a
``[section]`` table), ``<PREFIX><FIELD>`` environment variables, explicit values (command-line
flags; ``None`` means "not given"). Every server gets the same precedence and the same error
messages, so an operator learns it once.
"""

from __future__ import annotations

import json
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, GetCoreSchemaHandler, ValidationError
from pydantic_core import CoreSchema, core_schema

from ukedge.errors import UsageError
from ukedge.validation import validation_message

__all__ = ["ListenAddr", "check_listen_addr", "load_settings", "split_listen_addr"]

_M = TypeVar("_M", bound=BaseModel)


def check_listen_addr(value: str, *, example: str) -> str:
    """A server's ``HOST:PORT`` setting, refused as a pydantic validator refuses (ValueError),
    so the message lands among the other bad settings."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not HOST:PORT (for example {example})")
    return value


def split_listen_addr(addr: str) -> tuple[str, int]:
    """``(host, port)`` of a checked ``HOST:PORT``; an IPv6 host loses its brackets."""
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class ListenAddr(str):
    """A server's ``addr`` setting (``HOST:PORT``) with its parts, one type for the hub, the
    agent and the controller. A ``str``, so the settings read, dump and print as before; each
    server checks the text with :func:`check_listen_addr` and its own example."""

    __slots__ = ()

    @property
    def host(self) -> str:
        """The host to bind; an IPv6 one without its brackets."""
        return split_listen_addr(self)[0]

    @property
    def port(self) -> int:
        return split_listen_addr(self)[1]

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(cls, handler(str))


def _kind(annotation: Any) -> str:
    """``list``, ``dict`` or ``scalar``: how an environment variable's text maps to the field."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set):
        return "list"
    if origin is dict:
        return "dict"
    for arg in typing.get_args(annotation):  # Optional[list[str]] and friends
        kind = _kind(arg)
        if kind != "scalar":
            return kind
    return "scalar"


def _from_env(model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    known = {prefix + name.upper() for name in model.model_fields}
    unknown = sorted(v for v in environ if v.startswith(prefix) and v not in known)
    if unknown:
        # A misspelt variable would otherwise be ignored without a word.
        raise UsageError(
            f"unknown setting {', '.join(unknown)}; the {prefix}* variables are: "
            f"{', '.join(sorted(known))}"
        )
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        variable = prefix + name.upper()
        raw = environ.get(variable)
        if raw is None:
            continue
        kind = _kind(field.annotation)
        if kind == "list":
            values[name] = [part.strip() for part in raw.split(",") if part.strip()]
        elif kind == "dict":
            try:
                values[name] = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise UsageError(f"{variable} is not JSON: {exc}") from exc
        else:
            values[name] = raw
    return values


def load_settings(
    model: type[_M],
    *,
    env_prefix: str,
    section: str,
    config_file: Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> _M:
    """Merge the sources into ``model``; raises :class:`UsageError` naming each bad setting."""
    values: dict[str, Any] = {}
    if config_file is not None:
        try:
            data = tomllib.loads(Path(config_file).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read {section} config {config_file}: {exc}") from exc
        values.update(data.get(section, data))
    values.update(_from_env(model, env_prefix, os.environ if environ is None else environ))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return model(**values)
    except ValidationError as exc:
        problems = validation_message(exc, whole="settings")
        raise UsageError(f"invalid {section} settings: {problems}") from exc
