"""Typer options derived from a settings model (`settings.py`), so a command never lists them by hand.

`with_settings(Model)` turns a command `fn(..., settings: Model, ...)` into one whose `settings`
parameter is replaced, in place, by one option per setting: the option's name comes from
`cli/vocabulary.py` (the setting's name with dashes unless the table gives another), its help text
from the field's description and its default from the field's default. The values are validated by
building the model, so the command line refuses what a spec refuses, with a message naming the
setting (which `main` prints with the flag's name).
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

import typer
from pydantic import BaseModel

from explore_instruct.cli.vocabulary import flag_of
from explore_instruct.settings import Settings, build


def _cli_type(annotation: Any) -> Any:
    """The type Typer parses: a Literal's choices are read as text (the model says which are allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) is Annotated:  # a validated type: Typer parses the type under it
        return _cli_type(args[0])
    if typing.get_origin(annotation) is Literal:
        return str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.Optional[_cli_type(next(a for a in args if a is not type(None)))]  # noqa: UP045
    return annotation


def _declarations(name: str, annotation: Any) -> tuple[str, ...]:
    flag = flag_of(name)
    if flag == "--" + name.replace("_", "-"):
        return ()  # Typer spells it from the parameter's name (a boolean gets its --no- form too)
    is_bool = bool in (annotation, *typing.get_args(annotation))
    return (f"{flag}/--no-{flag[2:]}",) if is_bool else (flag,)


def _names(model: type[BaseModel], names: Sequence[str] | None) -> list[str]:
    if names is not None:
        return list(names)
    assert issubclass(model, Settings), f"name the settings of {model.__name__} to derive options from"
    return model.setting_names()


def setting_parameters(model: type[BaseModel], names: Sequence[str] | None = None) -> list[inspect.Parameter]:
    """One keyword parameter, annotated with its `typer.Option`, per setting of `model` (all, or `names`)."""
    params = []
    for name in _names(model, names):
        field = model.model_fields[name]
        option = typer.Option(*_declarations(name, field.annotation), help=field.description)
        annotation = Annotated[_cli_type(field.annotation), option]  # type: ignore[valid-type]
        params.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=annotation)
        )
    return params


def _replacing(
    param: str, options: list[inspect.Parameter], make: Callable[[dict[str, Any]], Any]
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace `fn`'s parameter `param` by `options`; the command gets `make(their values)` as `param`."""
    names = [option.name for option in options]

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn, eval_str=True)
        params: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            if p.name == param:
                params += options
            else:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in names}
            return fn(**kwargs, **{param: make(values)})

        del command.__wrapped__  # Typer must read the signature below, not `fn`'s
        command.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        return command

    return wrap


def with_settings(
    model: type[BaseModel], *, names: Sequence[str] | None = None, param: str = "settings"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace `fn`'s parameter `param` by the options of `model`'s settings (all, or `names`); the
    command gets them as one `model`, validated."""
    chosen = _names(model, names)
    return _replacing(param, setting_parameters(model, chosen), lambda values: build(model, **values))


def override_parameters(model: type[BaseModel], names: Sequence[str]) -> list[inspect.Parameter]:
    """Options that override settings of a config section: each defaults to None (keep the config's)."""
    params = []
    for name in names:
        field = model.model_fields[name]
        option = typer.Option(*_declarations(name, field.annotation), help=field.description, show_default=False)
        annotation = Annotated[typing.Optional[_cli_type(field.annotation)], option]  # type: ignore[valid-type]  # noqa: UP045
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation))
    return params


def with_overrides(
    model: type[BaseModel], section: str, names: Sequence[str], *, param: str = "overrides"
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Replace `fn`'s parameter `param` by one option per setting `names` of `model` (the config's
    `section`); the command gets the options given as overrides (`{"section.name": value}`), which the
    config validates like any other value."""
    return _replacing(
        param,
        override_parameters(model, names),
        lambda values: {f"{section}.{name}": value for name, value in values.items() if value is not None},
    )
