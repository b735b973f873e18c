"""``set_config``: a new station file for a running station, without bricking it
(decision record 0142; docs/commands.md, "Remote configuration").

:func:`apply_remote_config` takes the file a signed ``set_config`` command carries and:

1. checks its sha256 (refused: ``sha256 mismatch``);
2. validates it exactly as ``fieldstation validate`` does: :func:`~fieldstation.config.load_config`
   on the file as received, then the host checks (:func:`~fieldstation.config.station.host_issues`);
   refused with every error in ``details["errors"]``, one line each as ``validate`` prints them;
3. refuses what a running station cannot take (a new station id or home, ``[runtime]``,
   ``[logging]``: :mod:`fieldstation.runtime.reconfigure`);
4. keeps the file in ``<home>/configs/`` (the newest ``keep_configs``) and marks it *on trial*
   (:mod:`fieldstation.runtime.kept_configs`), then puts it in force
   (:meth:`Station.reconfigure <fieldstation.runtime.station.Station.reconfigure>`: only the jobs
   whose settings changed restart);
5. watches, on the station's clock, for up to ``rollback_after`` seconds: healthy is every
   restarted or added job ``running`` since the change and reporting no problem (a recorder
   waiting for a missing device has one), and every output whose settings changed either
   delivered a message since its new delivery loop started or connected. Healthy: answers
   ``done`` with ``config_hash_in_force`` and the file stays in force across restarts. Not
   healthy in time: puts the previous file back in force, answers ``refused`` with ``rolled
   back: ...`` (what was not healthy), and records a ``config_rolled_back`` event.

Steps 1-4 run in the caller's thread (a refusal is answered before the function returns);
step 5 runs in a thread of its own (``config-apply``), so the caller, which may be the very
output the change restarts, is never blocked. One change at a time: a ``set_config`` while
another is on trial is refused. If the station stops during the trial, the next start goes back
to the previous file (a file never proven healthy is never started on).

The ``answer`` callback is the command channel's: ``answer(state, reason, details,
config_hash=None)`` with state ``done`` or ``refused`` (``accepted`` is the channel's own).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import Field

from fieldstation.clock import Clock
from fieldstation.config.base import StrictModel
from fieldstation.config.station import (
    ConfigError,
    StationConfig,
    config_hash,
    host_issues,
    load_config,
)
from fieldstation.config.units import Seconds
from fieldstation.messages.commands import SetConfigArgs
from fieldstation.runtime.kept_configs import KeptConfigs
from fieldstation.runtime.reconfigure import ConfigChange, NotAppliableError, plan_change

__all__ = [
    "Answer",
    "RemoteConfigSettings",
    "apply_remote_config",
    "changed_outputs",
    "settings_of",
    "validation_errors",
]

log = logging.getLogger(__name__)


class Answer(Protocol):
    """The command channel's answer: ``answer(state, reason, details, config_hash=None)``."""

    def __call__(
        self,
        state: str,
        reason: str | None,
        details: dict[str, Any],
        config_hash: str | None = None,
    ) -> None: ...


class RemoteConfigSettings(StrictModel):
    """How a station takes a remote station file. Read from the station's ``[commands]``
    section when it has these keys (``keep_configs``, ``rollback_after``), else defaults."""

    keep_configs: int = Field(
        default=5, ge=1, le=1000, description="Station files received remotely kept on disk."
    )
    rollback_after: Seconds = Field(
        default=120.0,
        gt=0,
        description="Grace period: a new file not healthy this long after it was applied is "
        "rolled back.",
    )
    check_every: Seconds = Field(
        default=0.5, gt=0, description="How often health is looked at during the grace period."
    )


def settings_of(config: StationConfig) -> RemoteConfigSettings:
    """The settings of ``config``'s ``[commands]`` section, where it has them."""
    section = getattr(config, "commands", None)
    values = {
        key: getattr(section, key)
        for key in ("keep_configs", "rollback_after")
        if section is not None and getattr(section, key, None) is not None
    }
    return RemoteConfigSettings.model_validate(values)


def validation_errors(text: str, folder: Path) -> tuple[StationConfig | None, list[str]]:
    """Validate station file ``text`` as ``fieldstation validate`` does (the file itself, then
    this machine's host checks): ``(config, [])`` or ``(None, errors)``, one line per error as
    ``validate`` prints it (``key: reason (got value)``). The text is written to a private
    temporary file in ``folder`` (created) for the check and removed after."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = folder / f".incoming-{os.getpid()}-{threading.get_ident()}.toml"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode())
        try:
            config = load_config(path)
        except ConfigError as error:
            return None, [str(issue) for issue in error.issues]
        issues = host_issues(config)
        if issues:
            return None, [str(issue) for issue in issues]
        return config, []
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def changed_outputs(old: StationConfig, new: StationConfig) -> list[str]:
    """Names of ``new``'s enabled outputs that are new or whose settings differ from ``old``."""
    before = {o.name: o.model_dump(mode="json") for o in old.outputs}
    return [
        o.name for o in new.outputs if o.enabled and before.get(o.name) != o.model_dump(mode="json")
    ]


_locks = threading.Lock()


def _trial_lock(station: Any) -> threading.Lock:
    """The station's lock held while a file is on trial (one change at a time)."""
    with _locks:
        lock: threading.Lock | None = getattr(station, "_config_trial_lock", None)
        if lock is None:
            lock = threading.Lock()
            station._config_trial_lock = lock
        return lock


def apply_remote_config(
    station: Any,
    args: SetConfigArgs,
    answer: Answer,
    *,
    settings: RemoteConfigSettings | None = None,
    clock: Clock | None = None,
) -> None:
    """Apply a ``set_config`` to the running ``station`` (a
    :class:`~fieldstation.runtime.station.Station`; steps in the module docstring).

    ``settings``: default :func:`settings_of` the station's config in force; ``clock``: the
    clock of the grace period, default the station's. Returns once the file is refused or the
    trial has started; the outcome is answered through ``answer``. Never raises for a bad file
    (every problem is an answer); an unexpected error is answered ``refused`` too, with the
    station left on its previous file.
    """
    clock = clock or station.clock
    settings = settings or settings_of(station.config)
    digest = hashlib.sha256(args.config.encode()).hexdigest()
    if digest != args.sha256:
        answer(
            "refused",
            f"sha256 mismatch: the file's is {digest}, the command says {args.sha256}",
            {},
        )
        return
    kept = KeptConfigs(station.home, settings.keep_configs)
    new, errors = validation_errors(args.config, kept.folder)
    if new is None:
        answer(
            "refused",
            f"invalid station file: {len(errors)} error(s): {errors[0]}",
            {"errors": errors},
        )
        return
    busy = _trial_lock(station)
    if not busy.acquire(blocking=False):
        answer("refused", "another station file is on trial; send it again after", {})
        return
    try:
        trial = _start(station, new, args.config, kept, answer, settings, clock)
    except BaseException:
        busy.release()
        raise
    if trial is None:
        busy.release()
        return
    thread = threading.Thread(target=_watch, args=(trial,), name="config-apply", daemon=True)
    station_threads(station).append(thread)
    thread.start()


def station_threads(station: Any) -> list[threading.Thread]:
    """The config-apply threads started for ``station`` (joined by tests; each ends when its
    trial ends or the station stops)."""
    threads: list[threading.Thread] | None = getattr(station, "_config_apply_threads", None)
    if threads is None:
        threads = []
        station._config_apply_threads = threads
    return threads


@dataclass
class _Trial:
    station: Any
    old: StationConfig
    new: StationConfig
    change: ConfigChange
    kept: KeptConfigs
    answer: Answer
    settings: RemoteConfigSettings
    clock: Clock
    applied_mono: float
    station_mono: float
    applied_at: datetime
    outputs: list[str]
    held: set[str]
    old_delivery: Any
    hashes: tuple[str, str] = field(default=("", ""))
    new_delivery_at: datetime | None = None
    """When the delivery loop of the new file was first seen (station clock)."""


def _start(
    station: Any,
    new: StationConfig,
    text: str,
    kept: KeptConfigs,
    answer: Answer,
    settings: RemoteConfigSettings,
    clock: Clock,
) -> _Trial | None:
    old = station.config
    old_hash, new_hash = station.config_hash, config_hash(new)
    if new_hash == old_hash:
        answer("done", "already in force", {"restarted": []}, new_hash)
        return None
    change = plan_change(old, new, threads=station.threads)
    if change.refused:
        answer(
            "refused",
            f"not appliable remotely: {change.refused[0]}",
            {"errors": list(change.refused)},
        )
        return None
    supervisor = station.supervisor
    if supervisor is None or station.db is None:
        answer("refused", "the station is starting; send it again once it runs", {})
        return None
    held = {
        j["name"]
        for j in supervisor.snapshot()
        if j["state"] == "stopped" and j["reason"] == "stopped"
    }
    base_hash = _base_hash(kept, old_hash)
    try:
        path = kept.store(text, clock.now())
        kept.begin_trial(path, new_hash=new_hash, base_hash=base_hash)
        kept.prune()
    except OSError as error:
        answer("refused", f"cannot keep the file in {kept.folder}: {error}", {})
        return None
    old_delivery = station.delivery
    applied_mono, applied_at = clock.monotonic(), station.clock.now()
    station_mono = station.clock.monotonic()
    try:
        station.reconfigure(new)
    except NotAppliableError as error:  # changed under us: nothing was applied
        kept.roll_back(old_hash)
        answer(
            "refused",
            f"not appliable remotely: {error.reasons[0]}",
            {"errors": list(error.reasons)},
        )
        return None
    except Exception as error:
        log.exception("applying the new station file failed")
        kept.roll_back(old_hash)
        _put_back(station, old)
        answer("refused", f"rolled back: applying failed: {type(error).__name__}: {error}", {})
        return None
    station.record_event(
        "config_applying",
        "commands",
        f"station file {new_hash[:12]} applied on trial (was {old_hash[:12]}); rolled back "
        f"unless healthy within {settings.rollback_after:g} s",
        "info",
        {
            "config_hash": new_hash,
            "previous_hash": old_hash,
            "restarted": sorted(change.restart),
            "started": sorted(change.add),
            "stopped": sorted(change.remove),
        },
    )
    return _Trial(
        station=station,
        old=old,
        new=new,
        change=change,
        kept=kept,
        answer=answer,
        settings=settings,
        clock=clock,
        applied_mono=applied_mono,
        station_mono=station_mono,
        applied_at=applied_at,
        outputs=changed_outputs(old, new),
        held=held,
        old_delivery=old_delivery,
        hashes=(old_hash, new_hash),
    )


def _base_hash(kept: KeptConfigs, in_force: str) -> str:
    """The config hash of the station file given to ``run`` (what the kept state is based
    on): the recorded one while a kept file is in force, else the one in force now."""
    state = kept.state()
    return state.base_hash if state.current is not None and state.base_hash else in_force


def _put_back(station: Any, old: StationConfig) -> None:
    try:
        station.reconfigure(old)
    except Exception:
        log.exception("could not put the previous station file back in force")


def _problems(trial: _Trial) -> list[str]:
    """What is not healthy yet (empty: healthy)."""
    station = trial.station
    supervisor = station.supervisor
    if supervisor is None:
        return ["the station stopped"]
    # the jobs' uptimes are on the station's clock (the grace period may run on another)
    elapsed = station.clock.monotonic() - trial.station_mono
    problems = []
    jobs = {j["name"]: j for j in supervisor.snapshot()}
    for name in sorted((trial.change.restart | trial.change.add) - trial.held):
        job = jobs.get(name)
        if job is None:
            continue
        started_since = job["uptime_s"] is not None and job["uptime_s"] <= elapsed + 0.001
        if job["state"] != "running" or not started_since or job.get("problem"):
            # a job that runs but cannot do its work (a device missing) is not healthy either
            reason = job.get("problem") or job.get("reason") or "not started again yet"
            problems.append(f"job {name} {job['state']}: {reason}")
    outputs = [] if "outbox" in trial.held else trial.outputs  # an operator stopped it
    for name in outputs:
        if not _output_ok(trial, name):
            problems.append(f"output {name}: {_output_error(trial, name)}")
    return problems


def _output_ok(trial: _Trial, name: str) -> bool:
    """The output connected, or delivered a message, since the delivery loop of the new file
    started (what the loop of the old file sent before it stopped does not count)."""
    from sqlalchemy import func, select

    from fieldstation.store.models import Delivery

    station = trial.station
    delivery = station.delivery
    if delivery is None or delivery is trial.old_delivery:
        return False
    if trial.new_delivery_at is None:
        trial.new_delivery_at = station.clock.now()
    worker = getattr(delivery, "workers", {}).get(name)
    messenger = worker.messenger if worker is not None else None
    if getattr(messenger, "connected", False) is True:
        return True
    with station.db.session() as session:
        sent = session.scalar(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.destination == name, Delivery.sent_at >= trial.new_delivery_at)
        )
    return bool(sent)


def _output_error(trial: _Trial, name: str) -> str:
    from sqlalchemy import select

    from fieldstation.store.models import Delivery

    with trial.station.db.session() as session:
        error = session.scalar(
            select(Delivery.last_error)
            .where(Delivery.destination == name, Delivery.last_error.is_not(None))
            .order_by(Delivery.id.desc())
            .limit(1)
        )
    return f"nothing delivered and not connected ({error})" if error else "nothing delivered yet"


def _watch(trial: _Trial) -> None:
    """Wait for healthy or the end of the grace period (module docstring, step 5)."""
    try:
        _watch_trial(trial)
    except Exception as error:
        if _stopping(trial.station):  # e.g. the database closed: the next start goes back
            log.warning("station stopped during the trial: the next start goes back")
        else:
            log.exception("the trial of the new station file failed")
            _roll_back(trial, [f"{type(error).__name__}: {error}"])
    finally:
        _trial_lock(trial.station).release()


def _stopping(station: Any) -> bool:
    stop = station._stop
    return stop is None or stop.is_set()


def _watch_trial(trial: _Trial) -> None:
    station, clock = trial.station, trial.clock
    stop = station._stop or threading.Event()
    deadline = trial.applied_mono + trial.settings.rollback_after
    while True:
        if stop.is_set():
            log.warning("station stopping during the trial: the next start goes back")
            return
        problems = _problems(trial)
        if not problems:
            _confirm(trial)
            return
        if clock.monotonic() >= deadline:
            _roll_back(trial, problems)
            return
        if clock.wait(stop, min(trial.settings.check_every, deadline - clock.monotonic())):
            log.warning("station stopping during the trial: the next start goes back")
            return


def _confirm(trial: _Trial) -> None:
    old_hash, new_hash = trial.hashes
    trial.kept.confirm()
    took = round(trial.clock.monotonic() - trial.applied_mono, 3)
    trial.station.record_event(
        "config_applied",
        "commands",
        f"station file {new_hash[:12]} in force and healthy after {took:g} s",
        "info",
        {"config_hash": new_hash, "previous_hash": old_hash, "took_s": took},
    )
    trial.answer(
        "done",
        None,
        {
            "restarted": sorted(trial.change.restart),
            "started": sorted(trial.change.add),
            "stopped": sorted(trial.change.remove),
            "took_s": took,
        },
        new_hash,
    )


def _roll_back(trial: _Trial, problems: list[str]) -> None:
    old_hash, new_hash = trial.hashes
    station = trial.station
    _put_back(station, trial.old)
    trial.kept.roll_back(old_hash)
    reason = f"rolled back: not healthy within {trial.settings.rollback_after:g} s: " + "; ".join(
        problems
    )
    log.error("station file %s %s", new_hash[:12], reason)
    station.record_event(
        "config_rolled_back",
        "commands",
        f"station file {new_hash[:12]} {reason}",
        "error",
        {"config_hash": new_hash, "config_hash_in_force": old_hash, "problems": problems},
    )
    trial.answer("refused", reason, {"problems": problems}, station.config_hash)
