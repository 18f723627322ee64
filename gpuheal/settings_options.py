"""Click options made from the settings dataclasses' fields, so each default is written once: in the field.

`setting_option(AgentSettings, "socket_dir", "--socket-dir", envvar=...)` takes the option's default
(and, unless one is given, its type) from the field; `--help` shows it, so a changed default changes
the command line with it. A `FlagUnit` says how the setting is written as a flag: durations are
`timedelta` in every setting and their flags take seconds; the value is converted here, at the edge,
so a command receives the setting's own type.
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from pydantic import BaseModel

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True, slots=True)
class FlagUnit:
    """How a setting is written on the command line: `shown` turns the setting's value into the flag's,
    `taken` turns the flag's (already checked by the option's type) into the setting's."""

    shown: Callable[[Any], Any]
    taken: Callable[[Any], Any]


AS_IS = FlagUnit(shown=lambda value: value, taken=lambda value: value)
SECONDS = FlagUnit(shown=timedelta.total_seconds, taken=lambda seconds: timedelta(seconds=seconds))
# An optional path whose flag turns it off with an empty value (`--kernel-log ""`).
PATH_OR_OFF = FlagUnit(shown=str, taken=lambda text: Path(text) if text else None)
# An optional address whose flag turns it off with an empty value (`--metrics-address ""`) or `off`,
# which its environment variable needs: click takes an empty variable for an unset one.
TEXT_OR_OFF = FlagUnit(
    shown=lambda value: value or "", taken=lambda text: None if not text or text.lower() == "off" else text
)


class SettingOption(click.Option):
    """A click option backed by the field `field` of the settings class `owner`, converted by `unit`."""

    def __init__(self, *args: Any, owner: type[Any], field: str, unit: FlagUnit, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.field = field
        self.unit = unit

    def process_value(self, ctx: click.Context, value: Any) -> Any:
        checked = super().process_value(ctx, value)
        if checked is None:
            return None
        try:
            return self.unit.taken(checked)
        except (ValueError, OverflowError) as error:  # nan or inf seconds, which a range lets through
            raise click.BadParameter(f"{value!r} cannot be used: {error}", ctx=ctx, param=self) from None


def setting_default(owner: type[Any], name: str) -> Any:
    """The default of the settings class `owner`'s field `name` (from its factory where it has one);
    `owner` is a dataclass or a pydantic model (the fleet's limits)."""
    if isinstance(owner, type) and issubclass(owner, BaseModel):
        if name not in owner.model_fields:
            raise TypeError(f"{owner.__name__} has no field {name!r}")
        return owner.model_fields[name].get_default(call_default_factory=True)
    for field in dataclasses.fields(owner):
        if field.name == name:
            if field.default_factory is not dataclasses.MISSING:
                return field.default_factory()
            if field.default is dataclasses.MISSING:
                raise TypeError(f"{owner.__name__}.{name} has no default to offer a flag")
            return field.default
    raise TypeError(f"{owner.__name__} has no field {name!r}")


def setting_option(
    owner: type[Any], name: str, *decls: str, unit: FlagUnit | None = None, **attrs: Any
) -> Callable[[F], F]:
    """A click option for the field `name` of the settings class `owner`, its default taken from the field.

    The command receives the value as its parameter `name`, in the field's own type.

    Without a `unit`, a `timedelta` field's flag takes seconds and an enum field's takes one of its
    values; without a `type`, a duration's must be at least 0 and a `Path` field's flag is a path.
    Every other keyword goes to `click.option` as it is.
    """
    kind = typing.get_type_hints(owner)[name]
    if unit is None:
        unit = _unit_of(kind)
    if "type" not in attrs:
        attrs["type"] = _type_of(kind)
    default = setting_default(owner, name)
    return click.option(
        *decls,
        name,
        cls=SettingOption,
        owner=owner,
        field=name,
        unit=unit,
        default=None if default is None else unit.shown(default),
        show_default=default is not None,
        **attrs,
    )


def _unit_of(kind: Any) -> FlagUnit:
    if kind is timedelta:
        return SECONDS
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return FlagUnit(shown=lambda member: member.value, taken=kind)
    return AS_IS


def _type_of(kind: Any) -> click.ParamType[Any, Any] | None:
    if kind is timedelta:
        return click.FloatRange(min=0)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return click.Choice([member.value for member in kind])
    if kind is Path:
        return click.Path(path_type=Path)
    return None  # click's own guess from the default
