"""Entry point of the ``ukedge`` command.

Errors from the packages below are ukedge errors, printed as one line with the exit code their
class names. Nothing heavy loads here: ``ukedge --version`` (asked by scripts and health checks)
answers before typer and rich are imported, and so does ``ukedge ps`` on this machine
(:mod:`ukedge.cli._ps`); every other command loads only its own module.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ukedge.cli._app import app

__all__ = ["app", "main"]


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from ukedge import __version__

        # The same line as the option's callback in _app, without loading the parser.
        sys.stdout.write(f"ukedge {__version__}\n")
        return
    if sys.argv[1:2] == ["ps"]:
        from ukedge.cli._ps import answer_locally

        # This machine's records, when they need no reconciling, without typer or pydantic.
        if answer_locally(sys.argv[2:]):
            return
    # pydantic looks for plugins among every installed distribution's entry points the first
    # time it builds a model (tens of ms, on every command); the CLI uses none. A value set
    # by the user (an empty one re-enables them) is kept.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    from ukedge.cli._app import app
    from ukedge.errors import UkedgeError

    try:
        app()
    except UkedgeError as exc:
        from ukedge.cli._console import err

        err.print(f"error: {exc}", markup=False, highlight=False, style="red")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        from ukedge.cli._console import err

        err.print("interrupted")
        sys.exit(130)


def __getattr__(name: str) -> Any:
    # ``app`` (the typer application, for tests and embedding) loads on first use.
    if name == "app":
        from ukedge.cli._app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":
    main()
