"""Stage parameters, declared once.

Each stage's parameters are one dataclass. Every field carries, in its metadata, what the rest of
the program needs to know about it: the command-line help and flag, the allowed values (an enum
on the command line, so a typo is a usage error and ``--help`` lists them), and whether it enters
the cache key. A field that says *how* the work runs (device, threads, checkpoint cadence) has
``key=False``: changing it reuses what was built. The CLI builds its options from the dataclass
(:func:`cli_parameters`), the store keys artifacts with :func:`key_dict`, and ``run``, ``ablate``
and DCC's refresh rounds pass the same objects around, so a setting cannot be dropped on the way.

A parameter is declared once: the fields several stages share (the seed, the device, the loader
threads) by :func:`seed_param`, :func:`device_param` and :func:`loader_threads_param` here, and a
field that sets another class's field (``baseline``'s training options are
:class:`wtalcli.model.config.TrainConfig`'s) by :func:`like`, which copies that field's declaration.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Annotated, Any

from wtalcli.core.errors import InputError

META = "wtal"


@dataclass(frozen=True)
class Spec:
    """What the program knows about one parameter besides its type and default."""

    help: str
    key: bool = True  # enters the cache key
    flag: str | None = None  # the long option (default: --field-name)
    aliases: tuple[str, ...] = ()  # extra option names, e.g. ("-k",)
    choices: tuple[str, ...] | None = None  # allowed values of a str field
    cli: bool = True  # offered on the command line
    negative: str | None = None  # for a bool: the option that sets False (default --no-field-name)
    parse: Callable[[Any], Any] | None = None  # command-line value -> field value
    show: Callable[[Any], str] | None = None  # field default -> command-line default text
    multiple: bool = False  # the option may be repeated; ``parse`` receives the list of values


def param(
    default: Any = MISSING,
    help: str = "",
    *,
    key: bool = True,
    flag: str | None = None,
    aliases: Sequence[str] = (),
    choices: Sequence[str] | None = None,
    cli: bool = True,
    negative: str | None = None,
    parse: Callable[[Any], Any] | None = None,
    show: Callable[[Any], str] | None = None,
    multiple: bool = False,
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A dataclass field with its :class:`Spec` (see the module docstring)."""
    spec = Spec(
        help=help,
        key=key,
        flag=flag,
        aliases=tuple(aliases),
        choices=None if choices is None else tuple(choices),
        cli=cli,
        negative=negative,
        parse=parse,
        show=show,
        multiple=multiple,
    )
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={META: spec})
    return dataclasses.field(default=default, metadata={META: spec})


def spec(f: dataclasses.Field) -> Spec:
    return f.metadata.get(META) or Spec(help="")


def like(cls: type, name: str, default: Any = MISSING, **changes: Any) -> Any:
    """A field declared as ``cls``'s field ``name`` (help, flag, choices, cache-key membership),
    with another default and the :class:`Spec` ``changes`` given (e.g. ``cli=False``)."""
    f = next(f for f in fields(cls) if f.name == name)
    value = f.default if default is MISSING else default
    return dataclasses.field(default=value, metadata={META: dataclasses.replace(spec(f), **changes)})


def preset_default(cls: type, name: str, source: str = "the preset's") -> Any:
    """``cls``'s field ``name`` as an override that defaults to None: ``source``'s value (the scale
    preset's, the baseline's)."""
    f = next(f for f in fields(cls) if f.name == name)
    return like(cls, name, None, help=f"{spec(f).help.rstrip('.')} (default: {source}).")


# ------------------------------------------------------------------------------ shared fields


def seed_param(help: str = "Random seed (fixes the result on CPU).") -> Any:
    """The seed of a stage's work (enters the cache key)."""
    return param(0, help)


def device_param(only: str | None = None) -> Any:
    """Where the work runs (never in the cache key); ``only``: the source that reads it."""
    prefix = f"{only}: " if only else ""
    return param("auto", prefix + "auto (a GPU if present), cpu, cuda or cuda:N.", key=False)


def loader_threads_param() -> Any:
    """Background batch-loading threads of a training run (never in the cache key)."""
    return param(0, "Background batch-loading threads (0: load in the training thread).", key=False)


def _value(v: Any) -> Any:
    if is_dataclass(v) and not isinstance(v, type):
        return record_dict(v)
    if isinstance(v, enum.Enum):
        return v.value
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        return {k: _value(x) for k, x in v.items()}
    return v


def record_dict(obj: Any) -> dict:
    """Every field (nested parameter dataclasses as dicts): what a manifest records."""
    return {f.name: _value(getattr(obj, f.name)) for f in fields(obj)}


def key_dict(obj: Any) -> dict:
    """The fields that determine the result (``key=True``), nested dataclasses recursively."""
    out = {}
    for f in fields(obj):
        if not spec(f).key:
            continue
        v = getattr(obj, f.name)
        out[f.name] = key_dict(v) if is_dataclass(v) and not isinstance(v, type) else _value(v)
    return out


def check_choices(obj: Any) -> None:
    """Raise :class:`InputError` when a field holds a value outside its choices (callers that do
    not come through the command line, whose enums already refuse them)."""
    for f in fields(obj):
        s = spec(f)
        v = getattr(obj, f.name)
        if s.choices is not None and v is not None and _value(v) not in s.choices:
            raise InputError(
                f"{flag_of(f)} {_value(v)!r} is not a valid choice", f"use one of {', '.join(s.choices)}"
            )


def flag_of(f: dataclasses.Field) -> str:
    return spec(f).flag or "--" + f.name.replace("_", "-")


def from_dict(cls: type, data: dict, source: str = "parameters") -> Any:
    """Rebuild a parameter dataclass from :func:`record_dict` output (a manifest's ``params``);
    unknown names are an error, missing ones take their defaults."""
    known = {f.name: f for f in fields(cls)}
    unknown = set(data) - set(known)
    if unknown:
        raise InputError(f"{source}: unknown parameters {sorted(unknown)}", "rebuild the artifact")
    kwargs = {}
    for name, v in data.items():
        f = known[name]
        hint = _hints(cls)[name]
        if is_dataclass(hint) and isinstance(v, dict):
            v = from_dict(hint, v, source)
        elif _origin_is_tuple(hint) and isinstance(v, list):
            v = tuple(v)
        kwargs[f.name] = v
    return cls(**kwargs)


# ------------------------------------------------------------------------------ command line


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _origin_is_tuple(hint: Any) -> bool:
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        return any(_origin_is_tuple(a) for a in typing.get_args(hint))
    return typing.get_origin(hint) is tuple


def _choice_enum(owner: str, name: str, choices: tuple[str, ...]) -> type[enum.Enum]:
    return enum.Enum(f"{owner}_{name}", {c: c for c in choices}, type=str)


def number_list(kind: type) -> Callable[[str], tuple]:
    """A parser of ``"0,1,2"`` into a tuple of ``kind`` (a usage error on a bad entry)."""

    def parse(value: Any) -> tuple:
        if isinstance(value, tuple | list):
            return tuple(kind(v) for v in value)
        import typer

        try:
            items = tuple(kind(v) for v in str(value).split(",") if v.strip())
        except ValueError:
            raise typer.BadParameter(f"{value!r} is not a comma-separated list of numbers") from None
        if not items:
            raise typer.BadParameter("give at least one value")
        return items

    return parse


def word_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, tuple | list):
        return tuple(str(v) for v in value)
    return tuple(v.strip() for v in str(value).split(",") if v.strip())


def _joined(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)


@dataclass(frozen=True)
class CliField:
    """One command-line parameter made from a dataclass field."""

    name: str  # the Python parameter name (prefixed when a command combines several classes)
    field: dataclasses.Field
    parameter: inspect.Parameter


def cli_fields(
    cls: type, exclude: Sequence[str] = (), prefix: str = "", only: Sequence[str] | None = None
) -> list[CliField]:
    """The ``typer`` parameters of the CLI fields of ``cls`` (``only``: just these names;
    ``exclude``: not these); ``prefix`` keeps Python names apart when a command combines classes
    (the option names stay the fields' own)."""
    import typer

    hints = _hints(cls)
    out = []
    for f in fields(cls):
        s = spec(f)
        if not s.cli or f.name in exclude or (only is not None and f.name not in only):
            continue
        hint = hints[f.name]
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        names = [flag_of(f), *s.aliases]
        extra: dict[str, Any] = {}
        if s.multiple:
            extra["show_default"] = (s.show or _joined)(default)
            hint, default = list[str] | None, None
        elif s.choices is not None:
            optional = default is None
            hint = _choice_enum(cls.__name__, f.name, s.choices)
            if optional:
                hint = hint | None
            else:
                default = hint(default)
        elif hint is bool or hint == bool | None:  # None: not given (the class resolves it)
            names = [f"{names[0]}/{s.negative or '--no-' + names[0][2:]}", *s.aliases]
        elif _origin_is_tuple(hint):
            optional = default is None
            hint = str | None if optional else str
            default = None if optional else (s.show or _joined)(default)
        elif s.show is not None:
            extra["show_default"] = s.show(default)
        opt = typer.Option(*names, help=s.help, **extra)
        out.append(
            CliField(
                prefix + f.name,
                f,
                inspect.Parameter(
                    prefix + f.name,
                    inspect.Parameter.KEYWORD_ONLY,
                    default=default,
                    annotation=Annotated[hint, opt],
                ),
            )
        )
    return out


def build(cls: type, values: dict[str, Any], cli: Sequence[CliField] = (), **fixed: Any) -> Any:
    """An instance of ``cls`` from command-line ``values`` (keyed by :class:`CliField` name) plus
    ``fixed`` fields; enum values become their strings, lists are parsed."""
    hints = _hints(cls)
    kwargs = dict(fixed)
    for cf in cli:
        if cf.name not in values:
            continue
        v = values[cf.name]
        s = spec(cf.field)
        if isinstance(v, enum.Enum):
            v = v.value
        if s.multiple and not v:  # not given: the field's default
            continue
        if s.parse is not None and v is not None:
            v = s.parse(v)
        elif _origin_is_tuple(hints[cf.field.name]) and v is not None:
            v = word_list(v)
        kwargs[cf.field.name] = v
    obj = cls(**kwargs)
    check_choices(obj)
    return obj


@dataclass(frozen=True)
class Group:
    """The fields of ``cls`` a command offers (``only`` / ``exclude``), their Python names
    prefixed with ``prefix``."""

    cls: type
    prefix: str = ""
    only: tuple[str, ...] | None = None
    exclude: tuple[str, ...] = ()


class Values:
    """What a command received for each :class:`Group`: ``values.build(i, **fixed)`` makes the
    i-th group's dataclass (fields not offered take ``fixed`` or their defaults);
    ``values.raw(i)`` are the received values by field name."""

    def __init__(self, groups: list[tuple[Group, list[CliField]]], kwargs: dict[str, Any]):
        self._groups, self._kwargs = groups, kwargs

    def raw(self, i: int) -> dict[str, Any]:
        group, cli = self._groups[i]
        return {cf.field.name: self._kwargs[cf.name] for cf in cli if cf.name in self._kwargs}

    def build(self, i: int, **fixed: Any) -> Any:
        group, cli = self._groups[i]
        return build(group.cls, self._kwargs, cli, **fixed)


def command(groups: Sequence[Group], own: Callable[..., Any]) -> Callable[..., Any]:
    """A function for ``typer`` whose signature is ``own``'s parameters (but ``values``) followed
    by the CLI fields of each group; it calls ``own(**own_args, values=Values)``."""
    own_sig = inspect.signature(own, eval_str=True)
    own_params = [
        p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in own_sig.parameters.items() if n != "values"
    ]
    made = [(g, cli_fields(g.cls, g.exclude, g.prefix, g.only)) for g in groups]
    taken = {p.name for p in own_params}
    all_params = list(own_params)
    for _, cli in made:
        for cf in cli:
            if cf.name in taken:
                raise ValueError(f"parameter {cf.name!r} is defined twice on one command")
            taken.add(cf.name)
            all_params.append(cf.parameter)
    names = [p.name for p in own_params]

    def wrapper(**kwargs: Any) -> Any:
        own_args = {n: kwargs.pop(n) for n in names if n in kwargs}
        return own(**own_args, values=Values(made, kwargs))

    wrapper.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in all_params}
    wrapper.__name__ = own.__name__
    wrapper.__doc__ = own.__doc__
    return wrapper
