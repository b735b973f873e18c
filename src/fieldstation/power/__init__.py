"""Power and time: suspenders that pause jobs on low battery or heat, and clock sanity.

- :mod:`.core`: the suspender's pure state machine (hysteresis, minimum times);
- :mod:`.job`: the station's ``power`` thread job that samples, decides and carries it out;
- :mod:`.state`: the file in ``run/`` through which recorder processes learn they are paused;
- :mod:`.clock`: whether the wall clock can be trusted, and clock steps;
- :mod:`.gate`: what a recorder asks before and during a session (both of the above);
- :mod:`.replay`: a battery that plays a curve (the INA219's fake).

See docs/power.md.
"""
