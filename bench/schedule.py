"""Benchmark: plan a year of slots for 4 windows with a 1 min / 4 min duty cycle.

Prints JSON per alignment: seconds to plan the year with a fresh planner (``cold``: includes
every astral computation) and again with its cache (``warm``), each as the best of 3 runs in
wall time and in CPU time of this process (the CPU figure is what counts on a shared machine),
the slot count and hours recorded, and the cost of one ``next_slot`` call walking slot to slot.
Target (issue 3): a year plans in well under one second.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

from fieldstation.config.schedule import ScheduleConfig
from fieldstation.config.station import StationSection
from fieldstation.schedule import SchedulePlanner

STATION = StationSection(
    id="bench", latitude=51.752, longitude=-1.2577, elevation=60, timezone="Europe/London"
)
SCHEDULE = ScheduleConfig.model_validate(
    {
        "windows": [
            {"start": "sunrise-1h", "end": "sunrise+2h"},
            {"start": "11:00", "end": "13:00"},
            {"start": "sunset-1h", "end": "sunset+1h"},
            {"start": "22:00", "end": "02:00"},
        ],
        "duty_cycle": {"record": "1m", "sleep": "4m"},
    }
)


def main() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    end = start + timedelta(days=365)
    results: dict[str, object] = {"windows": len(SCHEDULE.windows), "duty": "1m record, 4m sleep"}
    for align in ("window", "clock"):
        duty = SCHEDULE.duty_cycle
        assert duty is not None
        schedule = SCHEDULE.model_copy(
            update={"duty_cycle": duty.model_copy(update={"align": align})}
        )
        cold_wall, cold_cpu, warm_wall, warm_cpu = [], [], [], []
        for _ in range(3):
            planner = SchedulePlanner(schedule, STATION)
            wall, cpu = time.perf_counter(), time.process_time()
            slots = planner.slots_between(start, end)
            cold_wall.append(time.perf_counter() - wall)
            cold_cpu.append(time.process_time() - cpu)
            wall, cpu = time.perf_counter(), time.process_time()
            again = planner.slots_between(start, end)
            warm_wall.append(time.perf_counter() - wall)
            warm_cpu.append(time.process_time() - cpu)
            assert again == slots
        now, calls = start, 0
        cpu = time.process_time()
        while calls < 2000:
            slot = planner.next_slot(now)
            assert slot is not None
            now, calls = slot.end, calls + 1
        per_call = (time.process_time() - cpu) / calls
        results[align] = {
            "year_seconds_cold_wall": round(min(cold_wall), 4),
            "year_seconds_cold_cpu": round(min(cold_cpu), 4),
            "year_seconds_warm_wall": round(min(warm_wall), 4),
            "year_seconds_warm_cpu": round(min(warm_cpu), 4),
            "slots": len(slots),
            "recorded_hours": round(sum(s.duration for s in slots) / 3600, 1),
            "next_slot_ms_cpu": round(per_call * 1000, 3),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
