"""One settings model per concept (training, answering, judging), and the errors that name a setting.

A concept's settings are one pydantic model: each field is a setting with its default, its help text
(the field's description) and its validation. The command line derives its options from the model
(`cli/settings_options.py`), an experiment spec uses the model as its section, and the child process
of a study step gets every field. So a new setting is written once and every path has it.

Errors name the setting (`learning_rate must be positive`), never a flag: the command line rewrites
setting names to its flag names in one place (`cli/vocabulary.py`) when it prints.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from explore_instruct.errors import UserError

M = TypeVar("M", bound=BaseModel)


class SettingError(UserError):
    """A bad value of a named setting. `mentions` are the other settings the problem names."""

    def __init__(self, setting: str, problem: str, mentions: Iterable[str] = ()) -> None:
        self.setting = setting
        self.problem = problem
        self.mentions = tuple(mentions)
        super().__init__(f"{setting} {problem}", settings=(setting, *self.mentions))


class SettingProblem(ValueError):
    """Raised inside a validator: the problem, the setting it is about (for a check across several
    settings, whose error has no field of its own) and the other settings it names."""

    def __init__(self, problem: str, setting: str | None = None, mentions: Iterable[str] = ()) -> None:
        super().__init__(problem)
        self.problem = problem
        self.setting = setting
        self.mentions = tuple(mentions)


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def location(err: ErrorDetails) -> tuple[str, ...]:
    """Where a pydantic error is: its path, ending in the setting a check across settings names."""
    loc = tuple(str(p) for p in err["loc"])
    problem = (err.get("ctx") or {}).get("error")
    if isinstance(problem, SettingProblem) and problem.setting:
        loc += (problem.setting,)
    return loc


def describe(err: ErrorDetails) -> tuple[str, tuple[str, ...]]:
    """One pydantic error as a problem phrase (`must be at least 1`) and the settings it mentions."""
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "value_error" and isinstance(ctx.get("error"), SettingProblem):
        problem: SettingProblem = ctx["error"]
        return problem.problem, problem.mentions
    if kind == "greater_than":
        return ("must be positive" if ctx["gt"] == 0 else f"must be greater than {_number(ctx['gt'])}"), ()
    phrases = {
        "greater_than_equal": "must be at least {ge}",
        "less_than": "must be less than {lt}",
        "less_than_equal": "must be at most {le}",
    }
    if kind in phrases:
        return phrases[kind].format(**{k: _number(v) for k, v in ctx.items()}), ()
    if kind == "literal_error":
        choices = str(ctx.get("expected", "")).replace("'", "").replace(" or ", ", ")
        return f"must be one of {choices} (got {err['input']!r})", ()
    if kind == "extra_forbidden":
        return "is not a setting", ()
    if kind == "finite_number":
        return "must be a finite number", ()
    message = err["msg"].removeprefix("Value error, ")
    return ("must be " + message.removeprefix("Input should be ")) if message.startswith("Input") else message, ()


def setting_error(exc: ValidationError, prefix: str = "") -> SettingError:
    """The first problem of a validation error as a SettingError naming its setting (dotted, after `prefix`)."""
    err = exc.errors()[0]
    setting = ".".join([*([prefix] if prefix else []), *location(err)])
    problem, mentions = describe(err)
    return SettingError(setting or "settings", problem, mentions)


def build(model: type[M], /, **values: Any) -> M:
    """`model(**values)`, a bad value raising a SettingError that names its setting (any pydantic model)."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        raise setting_error(exc) from None


class Settings(BaseModel):
    """Base of a settings model: unknown names and non-finite numbers are refused, like a spec section.

    `build(TrainSettings, learning_rate=0)` raises a `SettingError` naming the setting; inside a spec,
    the spec's reader reports it with the section's path (`train.learning_rate`). (No `__init__` of
    its own: pydantic would then call it for a spec's sections too, and lose the path.)
    """

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, validate_assignment=True)

    # Fields of a subclass that are not settings of the concept (inputs, outputs), left out of `setting_names`.
    not_settings: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def setting_names(cls) -> list[str]:
        """The concept's settings, in declaration order."""
        return [name for name in cls.model_fields if name not in cls.not_settings]

    def settings_dict(self) -> dict[str, Any]:
        """Every setting's value (JSON types), as the spec writes it and a child process receives it."""
        return {k: v for k, v in self.model_dump(mode="json").items() if k in self.setting_names()}
