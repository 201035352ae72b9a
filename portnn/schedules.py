"""Learning-rate schedules.

A schedule maps the Solver's counters to a multiplier of the base learning
rate: ``lr(iteration, epoch) = base_lr * schedule.factor(iteration, epoch)``,
where ``iteration`` counts optimisation steps already taken and ``epoch`` the
epochs already finished. Schedules are pure functions of those counters plus
their own hyper-parameters, so their whole state is ``to_dict()`` and a
resumed run continues exactly where it stopped.

    >>> s = LinearWarmup(100, then=CosineDecay(total_iterations=1000, final_factor=0.01))
    >>> s.factor(0, 0), s.factor(100, 0), s.factor(1100, 10)
    (0.01, 1.0, 0.01)
"""

from __future__ import annotations

import math

from ._checks import check_float_in, check_positive_int


class Schedule:
    kind = "constant"

    def factor(self, iteration: int, epoch: int) -> float:
        return 1.0

    def to_dict(self) -> dict:
        return {"kind": self.kind}

    def __repr__(self):
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.to_dict() if k != "kind")
        return f"{type(self).__name__}({args})"


class Constant(Schedule):
    """factor 1 throughout."""


class StepDecay(Schedule):
    """Multiply the rate by ``gamma`` every ``step_epochs`` finished epochs."""

    kind = "step"

    def __init__(self, step_epochs: int, gamma: float = 0.1):
        self.step_epochs = check_positive_int(step_epochs, "step_epochs")
        self.gamma = check_float_in(gamma, "gamma", 0.0, 1.0, lo_open=True)

    def factor(self, iteration, epoch):
        return self.gamma ** (epoch // self.step_epochs)

    def to_dict(self):
        return {"kind": self.kind, "step_epochs": self.step_epochs, "gamma": self.gamma}


class CosineDecay(Schedule):
    """Half a cosine from 1 down to ``final_factor`` over ``total_iterations`` steps
    (then flat)."""

    kind = "cosine"

    def __init__(self, total_iterations: int, final_factor: float = 0.0):
        self.total_iterations = check_positive_int(total_iterations, "total_iterations")
        self.final_factor = check_float_in(final_factor, "final_factor", 0.0, 1.0)

    def factor(self, iteration, epoch):
        t = min(iteration, self.total_iterations) / self.total_iterations
        return self.final_factor + (1.0 - self.final_factor) * 0.5 * (1.0 + math.cos(math.pi * t))

    def to_dict(self):
        return {"kind": self.kind, "total_iterations": self.total_iterations,
                "final_factor": self.final_factor}


class LinearWarmup(Schedule):
    """Ramp linearly from 1/warmup_iterations to 1 over the first ``warmup_iterations``
    steps, then follow ``then`` (counted from the end of the warm-up)."""

    kind = "warmup"

    def __init__(self, warmup_iterations: int, then: Schedule | None = None):
        self.warmup_iterations = check_positive_int(warmup_iterations, "warmup_iterations")
        if then is not None and not isinstance(then, Schedule):
            raise TypeError(f"then: expected a Schedule, got {then!r}")
        self.then = then or Constant()

    def factor(self, iteration, epoch):
        if iteration < self.warmup_iterations:
            return (iteration + 1) / self.warmup_iterations
        return self.then.factor(iteration - self.warmup_iterations, epoch)

    def to_dict(self):
        return {"kind": self.kind, "warmup_iterations": self.warmup_iterations,
                "then": self.then.to_dict()}


_KINDS = {cls.kind: cls for cls in (Constant, StepDecay, CosineDecay, LinearWarmup)}


def from_dict(d: dict) -> Schedule:
    """Rebuild a schedule from its ``to_dict()`` form (checkpoint loading)."""
    d = dict(d)
    kind = d.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"schedule: unknown kind {kind!r}; known: {sorted(_KINDS)}")
    if kind == "warmup" and "then" in d:
        d["then"] = from_dict(d["then"])
    return _KINDS[kind](**d)
