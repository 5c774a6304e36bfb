"""Stopping a training run whose loss or gradient norm is no longer a finite number.

The check reads what the trainer logs at every logging step: the loss (averaged over the logging
window and over every process) and the gradient norm (of the all-reduced gradients). Both are the
same on every process, so a multi-process run stops at the same step everywhere. transformers'
`logging_nan_inf_filter` must be off (`sft.py` turns it off): it would log the window's average of
the finite losses instead, which is 0.0 when there are none, and a diverged run would look perfect.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from explore_instruct.errors import RunStopped

if TYPE_CHECKING:  # transformers is imported only when a model trains
    from transformers import TrainerControl, TrainerState, TrainingArguments

WATCHED = ("loss", "grad_norm")


class TrainingDiverged(RunStopped):
    """The loss or gradient norm of a step was NaN or infinite: no model is saved. Exit code 1."""

    def __init__(self, step: int, logs: Mapping[str, Any], learning_rate: float) -> None:
        shown = ", ".join(f"{name.replace('_', ' ')} {float(logs[name]):.4g}" for name in WATCHED if name in logs)
        super().__init__(
            f"training diverged at step {step}: {shown} (lower the learning rate, now {learning_rate:g}); "
            "no model was saved"
        )
        self.step = step


def diverged(logs: Mapping[str, Any]) -> bool:
    """Whether a log event holds a non-finite loss or gradient norm."""
    return any(logs.get(name) is not None and not math.isfinite(float(logs[name])) for name in WATCHED)


def divergence_guard(learning_rate: float) -> Any:
    """A TrainerCallback that raises `TrainingDiverged` at the first log event that `diverged`."""
    from transformers import TrainerCallback

    class DivergenceGuard(TrainerCallback):
        def on_log(
            self,
            args: TrainingArguments,
            state: TrainerState,
            control: TrainerControl,
            logs: Mapping[str, Any] | None = None,
            **kwargs: Any,
        ) -> None:
            if logs and diverged(logs):
                raise TrainingDiverged(state.global_step, logs, learning_rate)

    return DivergenceGuard()
