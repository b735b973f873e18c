"""The press state machine, edge by edge on a virtual time line (no clock, no pin)."""

from __future__ import annotations

import pytest

from fieldstation.field.press import Press, PressDetector, PressTiming

TIMING = PressTiming(debounce=0.03, double_window=0.4, long_press=2.0, very_long_press=8.0)


def play(detector: PressDetector, edges: list[tuple[float, bool]], until: float) -> list[Press]:
    """Feed ``(time, pressed)`` edges, then poll at every deadline up to ``until``."""
    found: list[Press] = []
    for at, pressed in edges:
        found += detector.edge(pressed, at)
    while (deadline := detector.deadline()) is not None and deadline <= until:
        found += detector.poll(deadline)
    found += detector.poll(until)
    return found


def bouncy(at: float, pressed: bool, bounces: int = 3, gap: float = 0.004) -> list[tuple]:
    """An edge with contact bounce: the level flips ``2 * bounces`` times ``gap`` s apart
    before it settles at ``pressed``."""
    edges = []
    level = pressed
    for i in range(2 * bounces + 1):
        edges.append((at + i * gap, level))
        level = not level
    return edges


def test_short_press_is_reported_once_the_double_window_has_passed() -> None:
    detector = PressDetector(TIMING)
    assert play(detector, [(1.0, True), (1.2, False)], until=1.5) == []
    found = play(detector, [], until=1.2 + 0.4)
    assert found == [Press("short", 1.2, pytest.approx(0.2))]


def test_double_press() -> None:
    detector = PressDetector(TIMING)
    found = play(detector, [(1.0, True), (1.1, False), (1.3, True), (1.4, False)], until=5.0)
    assert [p.kind for p in found] == ["double"]
    assert found[0].at == pytest.approx(1.4)


def test_two_presses_further_apart_than_the_window_are_two_short_presses() -> None:
    detector = PressDetector(TIMING)
    found = play(detector, [(1.0, True), (1.1, False), (1.6, True), (1.7, False)], until=5.0)
    assert [(p.kind, p.at) for p in found] == [("short", 1.1), ("short", 1.7)]


@pytest.mark.parametrize(
    ("held", "kind"),
    [(1.99, "short"), (2.0, "long"), (7.9, "long"), (8.0, "very_long"), (30.0, "very_long")],
)
def test_press_length_decides_long_and_very_long(held: float, kind: str) -> None:
    detector = PressDetector(TIMING)
    found = play(detector, [(10.0, True), (10.0 + held, False)], until=100.0)
    assert [p.kind for p in found] == [kind]
    assert found[0].held == pytest.approx(held)


def test_contact_bounce_is_one_press_of_the_settled_length() -> None:
    detector = PressDetector(TIMING)
    edges = bouncy(1.0, True) + bouncy(3.5, False)
    found = play(detector, edges, until=10.0)
    assert [p.kind for p in found] == ["long"]
    assert found[0].held == pytest.approx(2.5, abs=0.03)


def test_bouncy_double_press_is_a_double_press() -> None:
    detector = PressDetector(TIMING)
    edges = bouncy(1.0, True) + bouncy(1.15, False) + bouncy(1.35, True) + bouncy(1.5, False)
    assert [p.kind for p in play(detector, edges, until=5.0)] == ["double"]


def test_a_glitch_shorter_than_debounce_is_no_press() -> None:
    detector = PressDetector(TIMING)
    assert play(detector, [(1.0, True), (1.02, False)], until=10.0) == []
    assert not detector.pressed


def test_a_glitch_inside_the_window_does_not_make_a_double() -> None:
    detector = PressDetector(TIMING)
    found = play(detector, [(1.0, True), (1.1, False), (1.3, True), (1.31, False)], until=5.0)
    assert [p.kind for p in found] == ["short"]


def test_a_second_press_held_long_is_still_a_double() -> None:
    detector = PressDetector(TIMING)
    found = play(detector, [(1.0, True), (1.1, False), (1.3, True), (5.0, False)], until=9.0)
    assert [p.kind for p in found] == ["double"]


def test_a_second_press_starting_at_the_window_edge_settles_before_the_short_is_given() -> None:
    """A press that began inside the window but is still settling at its end must not let
    the first press go out as a short one."""
    detector = PressDetector(TIMING)
    found = detector.edge(True, 1.0) + detector.edge(False, 1.1)
    found += detector.edge(True, 1.49)  # window ends at 1.5, settles at 1.52
    found += detector.poll(1.5)
    assert found == []
    found += detector.poll(1.52) + detector.edge(False, 1.6) + detector.poll(1.7)
    assert [p.kind for p in found] == ["double"]


def test_without_double_window_a_short_press_is_immediate() -> None:
    detector = PressDetector(PressTiming(debounce=0.03, double_window=0.0, long_press=2.0))
    found = play(detector, [(1.0, True), (1.1, False)], until=1.14)
    assert [p.kind for p in found] == ["short"]


def test_without_very_long_every_long_press_is_long() -> None:
    detector = PressDetector(PressTiming(very_long_press=None))
    assert [p.kind for p in play(detector, [(0.0, True), (60.0, False)], until=61)] == ["long"]


def test_deadline_says_when_to_look_next() -> None:
    detector = PressDetector(TIMING)
    assert detector.deadline() is None
    detector.edge(True, 1.0)
    assert detector.deadline() == pytest.approx(1.03)
    detector.poll(1.03)
    assert detector.pressed and detector.deadline() is None
    detector.edge(False, 1.2)
    detector.poll(1.23)
    assert detector.deadline() == pytest.approx(1.6)
