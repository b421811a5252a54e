"""Command groups that load when they run, so ``ukedge ps`` does not pay for ``ukedge build``.

Typer turns every registered function into a click command up front, and the modules behind
them import their packages (the builder, the kernel profiles, rich's progress bars). The root
group here knows each command only by name, module and one-line help: running a command imports
its module and builds just that command; listing the commands (``ukedge --help``) imports
nothing. A test checks that each one-line help is the first paragraph of the real one.

The classes here also shape the help (no value placeholder beside a flag) and answer commands
users bring from Docker that a unikernel has no use for (``exec``) with what to do instead.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import DefaultPlaceholder

from ukedge.errors import UsageError

__all__ = ["LazyGroup", "Spec"]

#: A command of the root group: the ``ukedge.cli`` module whose ``register(app)`` adds it, and
#: its one-line help for listings.
Spec = tuple[str, str]


class _FlagsTakeNoValue(_click.Command):
    """Help that shows no ``<bool>`` placeholder beside a flag, as if it took a value."""

    def get_params(self, ctx: _click.Context) -> list[_click.Parameter]:
        params = super().get_params(ctx)
        for param in params:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        return params


class _Command(_FlagsTakeNoValue, TyperCommand):
    pass


class _Group(_FlagsTakeNoValue, TyperGroup):
    pass


def _use_own_classes(app: typer.Typer) -> None:
    """Build ``app``'s commands and groups, at any depth, with the classes above."""
    for command in app.registered_commands:
        if command.cls in (None, TyperCommand):
            command.cls = _Command
    for group in app.registered_groups:
        if isinstance(group.cls, DefaultPlaceholder) or group.cls in (None, TyperGroup):
            group.cls = _Group
        if group.typer_instance is not None:
            _use_own_classes(group.typer_instance)


class _Commands(MutableMapping[str, _click.Command]):
    """The root group's commands: every name known from the table, each built on first use."""

    def __init__(self, table: dict[str, Spec], scratch: Callable[[], typer.Typer]) -> None:
        self._table = table
        self._scratch = scratch
        self._built: dict[str, _click.Command] = {}
        self._apps: dict[str, typer.Typer] = {}

    def _registered(self, module: str) -> typer.Typer:
        # A module registers all its commands at once, once per process; the scratch app
        # carries the root's help settings.
        if module not in self._apps:
            app = self._scratch()
            importlib.import_module(f"ukedge.cli.{module}").register(app)
            _use_own_classes(app)
            self._apps[module] = app
        return self._apps[module]

    def _build(self, name: str) -> _click.Command:
        # Only the command asked for becomes a click command: typer reads every parameter's
        # annotation to do that, which costs more than registering the whole module.
        app = self._registered(self._table[name][0])
        for command in app.registered_commands:
            assert command.callback is not None
            if (command.name or typer.main.get_command_name(command.callback.__name__)) == name:
                return typer.main.get_command_from_info(
                    command,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode,
                )
        for group in app.registered_groups:
            if group.name == name:
                return typer.main.get_group_from_info(
                    group,
                    pretty_exceptions_short=app.pretty_exceptions_short,
                    rich_markup_mode=app.rich_markup_mode,
                    suggest_commands=app.suggest_commands,
                )
        raise LookupError(f"ukedge.cli.{self._table[name][0]} does not register {name!r}")

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._built and name in self._table:
            self._built[name] = self._build(name)
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


class LazyGroup(_Group):
    """The root group over a table of name -> (module, one-line help)."""

    #: A subclass sets both (typer constructs the group itself, from the class alone): the
    #: commands, and the factory of the scratch apps their modules register into.
    table: ClassVar[dict[str, Spec]] = {}
    scratch: ClassVar[Callable[[], typer.Typer]] = typer.Typer
    #: Names users try from other tools that have no counterpart here -> what to do instead.
    unavailable: ClassVar[dict[str, str]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.table, type(self).scratch)
        self._listing = False

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)  # the names only (typer's own reads every command)

    def get_command(self, ctx: _click.Context, cmd_name: str) -> _click.Command | None:
        if self._listing and cmd_name in self.table:
            # Listing needs the name and first line only: a stand-in, nothing imported.
            return TyperCommand(name=cmd_name, help=self.table[cmd_name][1])
        return super().get_command(ctx, cmd_name)

    def resolve_command(
        self, ctx: _click.Context, args: list[str]
    ) -> tuple[str | None, _click.Command | None, list[str]]:
        if args and args[0] in self.unavailable:
            raise UsageError(f"`ukedge {args[0]}`: {self.unavailable[args[0]]}")
        return super().resolve_command(ctx, args)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False
