"""pydantic's validation errors as one kind of text, wherever they come from.

A bad Ukfile, a bad server setting, a bad run request from the CLI and a bad request body at the
agent's API are all pydantic errors; a user should read the same thing for the same mistake:
the field as it is written (``ports[0].host_port``, not pydantic's ``ports.0.host_port``), then
what is wrong in words (``required but missing``, ``unknown key``, the validator's own message
without pydantic's ``Value error, `` prefix, and for a wrong type what was given instead).

Takes the error dicts (``ValidationError.errors()``, FastAPI's ``RequestValidationError.errors()``)
rather than the exception, so this leaf module does not import pydantic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = [
    "HasErrors",
    "field_path",
    "first_problem",
    "problem",
    "validation_message",
    "validation_problems",
]

#: Longest text of a wrong value quoted back; a request may carry megabytes.
_QUOTE = 60


@runtime_checkable
class HasErrors(Protocol):
    """A pydantic ``ValidationError`` or FastAPI ``RequestValidationError``."""

    def errors(self) -> Sequence[Any]: ...


def field_path(loc: Sequence[int | str]) -> str:
    """``("ports", 0, "host_port")`` as ``ports[0].host_port``.

    FastAPI's leading ``"body"`` goes (the user wrote the body, not a field called body), and a
    trailing underscore that keeps a field name off a Python keyword (``copy_``) goes too.
    """
    parts: list[str] = []
    for index, item in enumerate(loc):
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        elif index == 0 and item == "body":
            continue
        else:
            parts.append(str(item).removesuffix("_") or str(item))
    return ".".join(parts)


def problem(error: Mapping[str, Any]) -> str:
    """What is wrong, in words, from one error dict."""
    kind = str(error.get("type", ""))
    if kind == "extra_forbidden":
        return "unknown key (check the spelling)"
    if kind == "missing":
        return "required but missing"
    message = str(error.get("msg", ""))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_type") and "input" in error:
        given = repr(error["input"])
        if len(given) > _QUOTE:
            given = given[: _QUOTE - 3] + "..."
        message += f" (got {type(error['input']).__name__} {given})"
    return message


def validation_problems(errors: HasErrors | Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(field, problem)`` for each error; the field is ``""`` for the whole object."""
    found = errors.errors() if isinstance(errors, HasErrors) else errors
    return [(field_path(tuple(e.get("loc", ()))), problem(e)) for e in found]


def first_problem(errors: HasErrors | Iterable[Mapping[str, Any]]) -> tuple[str, str]:
    """The first ``(field, problem)``, the problem saying how many more there are: a report on a
    file (a Ukfile, a deployment file) names one field, and the user fixes them in turn."""
    found = list(errors.errors() if isinstance(errors, HasErrors) else errors)
    field, text = validation_problems(found[:1])[0]
    if len(found) > 1:
        more = len(found) - 1
        text += f" (and {more} more problem{'s' if more > 1 else ''})"
    return field, text


def validation_message(
    errors: HasErrors | Iterable[Mapping[str, Any]], *, whole: str = "request"
) -> str:
    """All problems on one line: ``ports[0].host_port: …; image: required but missing``.

    ``whole`` names the object itself when an error is about it rather than one field.
    """
    return "; ".join(f"{field or whole}: {text}" for field, text in validation_problems(errors))
