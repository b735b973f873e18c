"""Job plugins: the ``fieldstation.jobs`` entry point group and the ``[[jobs]]`` section.

A package adds a job kind by naming a :class:`JobPlugin` under the entry point group
``fieldstation.jobs``: its config model (a subclass of :class:`JobConfig`, validated from the
``[[jobs]]`` entry whose ``kind`` is the entry point's name) and its factory,
``factory(config, *, station, db, clock, home)`` returning an object with ``run(stop)`` (returns
once the ``threading.Event`` ``stop`` is set; waits with ``clock.wait(stop, seconds)``) and,
optionally, ``close()``. The station runs each enabled entry as a supervised thread job named
``job:<name>``: restarted with backoff when ``run`` raises, judged hung when it has not touched
``stop`` (a ``stop.is_set()`` or ``clock.wait``) for ``plugin.liveness`` seconds. The built-in
``alerts`` and ``export`` jobs register the same way (``pyproject.toml``). See ``docs/jobs.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SerializeAsAny, ValidationError

from fieldstation.config.base import Name, StrictModel

__all__ = [
    "GROUP",
    "JobConfig",
    "JobEntry",
    "JobPlugin",
    "UnknownJobKindError",
    "job_kinds",
    "load_job_plugin",
    "validate_job",
]

GROUP = "fieldstation.jobs"
"""The entry point group of job plugins."""


class JobConfig(StrictModel):
    """Fields every ``[[jobs]]`` entry has; a job plugin's config model subclasses this."""

    name: Name = Field(description="Unique job name; the supervised job is 'job:<name>'.")
    kind: str = Field(description="Job plugin (entry point in group fieldstation.jobs).")
    enabled: bool = Field(default=True, description="A disabled job is not started.")


@dataclass(frozen=True)
class JobPlugin:
    """A job kind: ``config_model`` (subclass of :class:`JobConfig`), ``factory(config, *,
    station, db, clock, home)`` -> an object with ``run(stop)``, and ``liveness``: seconds the
    job may go without touching ``stop`` before the supervisor counts it hung."""

    config_model: type[JobConfig]
    factory: Callable[..., Any]
    description: str = ""
    liveness: float = 900.0


class UnknownJobKindError(LookupError):
    """No installed job plugin has that kind."""


@cache
def job_kinds() -> tuple[str, ...]:
    """Kinds of the installed job plugins, sorted."""
    return tuple(sorted({ep.name for ep in entry_points(group=GROUP)}))


@cache
def load_job_plugin(kind: str) -> JobPlugin:
    """The job plugin ``kind``. Raises :class:`UnknownJobKindError` naming the installed ones,
    and ``TypeError`` when the entry point does not name a :class:`JobPlugin` whose config
    model subclasses :class:`JobConfig`."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not matches:
        known = ", ".join(job_kinds()) or "none"
        raise UnknownJobKindError(f"no job plugin of kind {kind!r} (installed: {known})")
    plugin = matches[0].load()
    if not isinstance(plugin, JobPlugin) or not issubclass(plugin.config_model, JobConfig):
        raise TypeError(
            f"entry point {matches[0].value} is not a fieldstation JobPlugin with a config "
            "model subclassing JobConfig"
        )
    return plugin


def validate_job(value: Any) -> JobConfig:
    """Validate one ``[[jobs]]`` entry with the config model of the plugin its ``kind`` names.

    Raises ``ValueError`` (the station file's error lists it under ``jobs[i]``) naming the
    installed kinds, or each problem of the entry as ``key: reason``."""
    if isinstance(value, JobConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("a [[jobs]] entry must be a table with 'name' and 'kind'")
    kind = value.get("kind")
    if not isinstance(kind, str):
        known = ", ".join(job_kinds()) or "none installed"
        raise ValueError(f"'kind' is required and names a job plugin (installed: {known})")
    try:
        plugin = load_job_plugin(kind)
    except UnknownJobKindError as error:
        raise ValueError(str(error)) from None
    try:
        return plugin.config_model.model_validate(value)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or kind}: {item['msg']}"
            for item in error.errors(include_url=False)
        )
        raise ValueError(f"job {value.get('name', '?')!r} ({kind}): {problems}") from None


JobEntry = Annotated[SerializeAsAny[JobConfig], BeforeValidator(validate_job)]
"""One ``[[jobs]]`` entry: validated by its plugin's model, dumped with all of its fields."""
