"""Command groups that load when they run, so ``ukedge ps`` does not pay for ``ukedge build``.

Typer turns every registered function into a click command up front, and the modules behind
them import their packages (the builder, the kernel profiles, rich's progress bars). The root
group here knows each command only by name, module and one-line help: running a command imports
its module and builds just that module's commands; listing the commands (``ukedge --help``)
imports nothing. A test checks that each one-line help is the first paragraph of the real one.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click
from typer.core import TyperCommand, TyperGroup

__all__ = ["LazyGroup", "Spec"]

#: A command of the root group: the ``ukedge.cli`` module whose ``register(app)`` adds it, and
#: its one-line help for listings.
Spec = tuple[str, str]


class _Commands(MutableMapping[str, _click.Command]):
    """The root group's commands: every name known from the table, each built on first use."""

    def __init__(self, table: dict[str, Spec], scratch: Callable[[], typer.Typer]) -> None:
        self._table = table
        self._scratch = scratch
        self._built: dict[str, _click.Command] = {}
        self._loaded: set[str] = set()

    def _load(self, module: str) -> None:
        # A module registers all its commands at once (``register`` may add to shared groups,
        # so it runs once per process); the scratch app carries the root's help settings.
        if module in self._loaded:
            return
        app = self._scratch()
        importlib.import_module(f"ukedge.cli.{module}").register(app)
        self._built.update(typer.main.get_group(app).commands)
        self._loaded.add(module)

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._built and name in self._table:
            self._load(self._table[name][0])
        return self._built[name]

    def __setitem__(self, name: str, command: _click.Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        raise TypeError("commands of the ukedge root group cannot be removed")

    def __iter__(self) -> Iterator[str]:
        yield from self._table
        yield from (name for name in self._built if name not in self._table)

    def __len__(self) -> int:
        return len(set(self._table) | set(self._built))


class LazyGroup(TyperGroup):
    """The root group over a table of name -> (module, one-line help)."""

    #: A subclass sets both (typer constructs the group itself, from the class alone): the
    #: commands, and the factory of the scratch apps their modules register into.
    table: ClassVar[dict[str, Spec]] = {}
    scratch: ClassVar[Callable[[], typer.Typer]] = typer.Typer

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.table, type(self).scratch)
        self._listing = False

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if self._listing and cmd_name in self.table:
            # Listing needs the name and first line only: a stand-in, nothing imported.
            return TyperCommand(name=cmd_name, help=self.table[cmd_name][1])
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
