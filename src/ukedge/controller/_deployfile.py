"""A :class:`DeploymentSpec` from what a user writes: a TOML deployment file, flags, or both.

The file has the spec's field names (``[placement]`` and ``[strategy]`` as tables) and accepts
the forms people type on the command line where the spec wants a structure: ``restart =
"on-failure:3"``, ``ports = ["18080:8080"]``, ``memory_mib = "64M"``, ``autonomy_s = "10m"``,
``env`` and ``placement.selector`` as tables or as ``["K=V", …]``. Flags (``ukedge deploy NAME
--image …``) go through the same conversions and override the file field by field, so ``deploy
-f app.toml --image web:2`` is how CI rolls out a new tag.

A mistake is reported once, naming where it was made: the file and the field
(:class:`DeploymentFileError`), or the flag (:class:`UsageError`). Nothing is sent before the
whole spec is valid.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ukedge.controller._models import DeploymentSpec
from ukedge.errors import DeploymentFileError, UsageError
from ukedge.host import parse_port_mapping, parse_restart_policy
from ukedge.units import parse_duration, parse_size
from ukedge.validation import first_problem

__all__ = ["deployment_spec", "load_deployment_file"]

#: Spec fields (dotted under the two tables) -> the ``ukedge deploy`` flag that sets them.
FLAGS: dict[str, str] = {
    "name": "NAME",
    "image": "--image",
    "replicas": "--replicas",
    "mode": "--mode",
    "memory_mib": "--memory",
    "vcpus": "--cpus",
    "env": "--env",
    "ports": "--publish",
    "restart": "--restart",
    "on_demand": "--on-demand",
    "autonomy_s": "--autonomy",
    "require_signature": "--require-signature",
    "placement.selector": "--selector",
    "placement.architectures": "--arch",
    "placement.spread_by": "--spread-by",
    "strategy.max_surge": "--max-surge",
    "strategy.max_unavailable": "--max-unavailable",
}

_MIB = 1 << 20


class _FieldProblem(ValueError):
    def __init__(self, field: str, problem: str) -> None:
        self.field = field
        self.problem = problem
        super().__init__(problem)


def _pairs(field: str, value: Any) -> Any:
    """A table stays a table; ``["K=V", …]`` (or ``"K=V,K2=V2"``) becomes one."""
    if isinstance(value, str):
        value = [part for part in value.split(",") if part.strip()]
    if not isinstance(value, list):
        return value  # a table, or a wrong type the model names
    pairs: dict[str, str] = {}
    for index, item in enumerate(value):
        key, sep, text = str(item).strip().partition("=")
        if not isinstance(item, str) or not sep or not key:
            raise _FieldProblem(f"{field}[{index}]", f"{item!r} is not KEY=VALUE")
        pairs[key] = text
    return pairs


def _converted(field: str, value: Any) -> Any:
    """``value`` of the spec field ``field`` (dotted) in the form the model reads."""
    try:
        if field == "memory_mib" and isinstance(value, str):
            return parse_size(value, default_unit="M") // _MIB
        if field == "autonomy_s" and isinstance(value, str):
            return parse_duration(value)
        if field == "restart" and isinstance(value, str):
            return parse_restart_policy(value).model_dump(exclude_defaults=True)
        if field == "ports" and isinstance(value, list):
            return [parse_port_mapping(p).model_dump() if isinstance(p, str) else p for p in value]
        if field in ("env", "placement.selector"):
            return _pairs(field, value)
    except (UsageError, ValueError) as exc:
        if isinstance(exc, _FieldProblem):
            raise
        raise _FieldProblem(field, str(exc)) from None
    return value


def _normalised(raw: Mapping[str, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key in ("placement", "strategy") and isinstance(value, Mapping):
            values[key] = {k: _converted(f"{key}.{k}", v) for k, v in value.items()}
        else:
            values[key] = _converted(key, value)
    return values


def _merged(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``; tables (``env``, ``[placement]`` and its ``selector``…) merge key
    by key, anything else is replaced."""
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merged(merged[key], value)
        else:
            merged[key] = value
    return merged


def _flag_for(field: str, flags: Mapping[str, Any]) -> str | None:
    """The flag behind the field a pydantic error names (``ports[0].host_port``,
    ``placement.selector.zone``), when a flag set that field."""
    given = {
        f"{key}.{inner}" if inner is not None else key
        for key, value in flags.items()
        for inner in (value if key in ("placement", "strategy") else (None,))
    }
    parts = [part.split("[")[0] for part in field.split(".")]
    for key in (".".join(parts[:2]), parts[0]):
        if key in given:
            return FLAGS[key]
    if field == "strategy" and any(key.startswith("strategy.") for key in given):
        return "--max-surge/--max-unavailable"  # the two together cannot be 0
    return None


def _build(
    file_values: Mapping[str, Any],
    flag_values: Mapping[str, Any],
    file_error: Callable[[str | None, str], Exception],
) -> DeploymentSpec:
    try:
        flags = _normalised(flag_values)
    except _FieldProblem as exc:
        flag = FLAGS.get(exc.field.split("[")[0], exc.field)
        raise UsageError(f"{flag}: {exc.problem}") from None
    try:
        from_file = _normalised(file_values)
    except _FieldProblem as exc:
        raise file_error(exc.field, exc.problem) from None
    try:
        return DeploymentSpec.model_validate(_merged(from_file, flags))
    except ValidationError as exc:
        field, problem = first_problem(exc)
        by_flag = _flag_for(field, flags)
        if by_flag is not None:
            raise UsageError(f"{by_flag}: {problem}") from None
        raise file_error(field or None, problem) from None


def _drop_unset(values: Mapping[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            value = _drop_unset(value)
        if value is not None and value != {} and value != []:
            kept[key] = value
    return kept


def _read(path: Path) -> dict[str, Any]:
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeploymentFileError(shown, None, "does not exist") from None
    except UnicodeDecodeError as exc:
        raise DeploymentFileError(
            shown, None, f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        ) from None
    except OSError as exc:
        raise DeploymentFileError(shown, None, f"cannot be read: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeploymentFileError(shown, None, f"invalid TOML: {exc}") from None


def load_deployment_file(path: Path) -> DeploymentSpec:
    """The spec a deployment file declares; :class:`DeploymentFileError` names the field."""
    return deployment_spec(path)


def deployment_spec(
    file: Path | None = None,
    *,
    name: str | None = None,
    image: str | None = None,
    replicas: int | None = None,
    mode: str | None = None,
    memory: str | None = None,
    cpus: int | None = None,
    env: Sequence[str] = (),
    ports: Sequence[str] = (),
    restart: str | None = None,
    selector: Sequence[str] = (),
    architectures: Sequence[str] = (),
    spread_by: str | None = None,
    max_surge: int | None = None,
    max_unavailable: int | None = None,
    autonomy: str | None = None,
    on_demand: bool | None = None,
    require_signature: bool | None = None,
) -> DeploymentSpec:
    """The spec of ``file`` (if any) with each given option over it; ``None`` or empty means
    "not given". Without a file, ``name`` and ``image`` are required."""
    if file is None and (name is None or image is None):
        missing = "NAME" if name is None else "--image REF"
        raise UsageError(f"give {missing}, or a deployment file with -f FILE")
    flags = _drop_unset(
        {
            "name": name,
            "image": image,
            "replicas": replicas,
            "mode": mode,
            "memory_mib": memory,
            "vcpus": cpus,
            "env": list(env),
            "ports": list(ports),
            "restart": restart,
            "on_demand": on_demand,
            "autonomy_s": autonomy,
            "require_signature": require_signature,
            "placement": {
                "selector": list(selector),
                "architectures": list(architectures),
                "spread_by": spread_by,
            },
            "strategy": {"max_surge": max_surge, "max_unavailable": max_unavailable},
        }
    )
    shown = str(file) if file is not None else "flags"

    def file_error(field: str | None, problem: str) -> Exception:
        if file is None:
            return UsageError(f"{field or 'deployment'}: {problem}")
        return DeploymentFileError(shown, field, problem)

    return _build(_read(file) if file is not None else {}, flags, file_error)
