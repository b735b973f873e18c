"""The audio sensor's own logic: device lookup, bounded queue, overflow accounting, timeouts.

Real capture through PortAudio is tested in tests/recording/test_pulse_capture.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from fieldstation.clock import VirtualClock
from fieldstation.sensors import DeviceError, Sensor, build_sensor
from fieldstation.sensors.audio import AudioConfig
from fieldstation.sensors.device import AudioSensor, find_input_device

DEVICES = [
    {"name": "HDA Intel PCH: ALC3246 Analog (hw:0,0)", "max_input_channels": 2},
    {"name": "HDMI 0", "max_input_channels": 0},
    {"name": "UltraMic 384K: USB Audio (hw:1,0)", "max_input_channels": 1},
]
FAKE_SD = SimpleNamespace(query_devices=lambda: DEVICES)


def test_device_by_index_exact_name_or_substring() -> None:
    assert find_input_device(FAKE_SD, None) is None
    assert find_input_device(FAKE_SD, 2) == 2
    assert find_input_device(FAKE_SD, "ultramic") == 2
    with pytest.raises(DeviceError, match=r"no audio input device 'HDMI'.*0: HDA.*2: UltraMic"):
        find_input_device(FAKE_SD, "HDMI")
    with pytest.raises(DeviceError, match="no audio input device 1"):
        find_input_device(FAKE_SD, 1)


def make(queue_blocks: int = 2, blocksize: int = 0) -> AudioSensor:
    config = AudioConfig(
        name="m",
        kind="audio",
        sample_rate=8000,
        queue_blocks=queue_blocks,
        timeout=0.01,
        blocksize=blocksize,
    )
    sensor = build_sensor(config, VirtualClock())
    assert isinstance(sensor, AudioSensor) and isinstance(sensor, Sensor)
    sensor._stream = SimpleNamespace(active=True, abort=lambda: None, close=lambda: None)
    return sensor


def feed(sensor: AudioSensor, value: int, frames: int = 100, overflow: bool = False) -> None:
    times = SimpleNamespace(currentTime=10.0, inputBufferAdcTime=9.99)
    status = SimpleNamespace(input_overflow=overflow)
    sensor._callback(np.full((frames, 1), value, dtype=np.int16), frames, times, status)


def test_a_full_queue_drops_counts_and_leaves_a_gap_in_the_frame_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sensor = make(queue_blocks=2)
    feed(sensor, 1)
    feed(sensor, 2)
    feed(sensor, 3)  # queue full: dropped and counted
    feed(sensor, 4, overflow=True)  # still full: dropped, and PortAudio flagged an overflow
    first, second = sensor.read(), sensor.read()
    assert first is not None and second is not None
    assert (first.start_frame, second.start_frame) == (0, 100)
    health = sensor.health()
    assert (health.overflows, health.lost_frames) == (3, 200)
    feed(sensor, 5)
    third = sensor.read()
    assert third is not None and third.start_frame == 400  # the jump shows the 200 lost frames
    with pytest.raises(DeviceError, match="no samples for 0.01 s"):
        sensor.read()
    assert sensor.health().state == "error"
    assert "3 overflow(s), 200 frame(s) lost" in caplog.text


def test_overflow_flag_is_counted_and_blocks_keep_their_index() -> None:
    sensor = make(queue_blocks=8)
    feed(sensor, 1)
    feed(sensor, 2, overflow=True)
    blocks = [sensor.read(), sensor.read()]
    assert [b.start_frame for b in blocks if b is not None] == [0, 100]
    assert blocks[1] is not None and int(blocks[1].data[0, 0]) == 2
    assert sensor.health().overflows == 1
    # the capture time comes from the ADC time of the buffer: 10 ms before the callback
    assert (sensor.clock.now() - blocks[0].captured_at).total_seconds() == pytest.approx(0.01)


def test_an_overflow_flag_marks_the_buffer_as_a_discontinuity() -> None:
    # blocksize 0 (paFramesPerBufferUnspecified): PortAudio lost data *before* the flagged
    # buffer, which is intact and starts anew
    sensor = make(queue_blocks=8)
    feed(sensor, 1)
    feed(sensor, 2, overflow=True)
    feed(sensor, 3)
    blocks = [sensor.read() for _ in range(3)]
    assert [(b.start_frame, b.discontinuity) for b in blocks if b is not None] == [
        (0, False),
        (100, True),
        (200, False),
    ]
    assert sensor.health().details["input_overflows"] == 1


def test_with_a_fixed_blocksize_the_flagged_buffer_is_dropped() -> None:
    # a fixed block size: the loss may lie inside the flagged buffer, so it cannot be placed
    sensor = make(queue_blocks=8, blocksize=100)
    feed(sensor, 1)
    feed(sensor, 2, overflow=True)
    feed(sensor, 3)
    first, second = sensor.read(), sensor.read()
    assert first is not None and second is not None
    assert (second.start_frame, second.discontinuity, int(second.data[0, 0])) == (200, True, 3)
    health = sensor.health()
    assert (health.overflows, health.lost_frames) == (1, 100)


def _callbacks(sensor: AudioSensor, count: int, current: float, adc: float) -> list[float]:
    """``count`` 100-frame buffers (12.5 ms at 8 kHz) delivered 12.5 ms apart on the sensor's
    virtual clock with the given PortAudio times; returns each delivery's wall time."""
    clock = sensor.clock
    assert isinstance(clock, VirtualClock)
    delivered = []
    for _ in range(count):
        clock.advance(0.0125)
        delivered.append(clock.now().timestamp())
        times = SimpleNamespace(currentTime=current, inputBufferAdcTime=adc)
        status = SimpleNamespace(input_overflow=False)
        sensor._callback(np.zeros((100, 1), dtype=np.int16), 100, times, status)
    return delivered


@pytest.mark.parametrize(("current", "adc"), [(0.0, 0.0), (0.0, 3.0), (5.0, 5.5)])
def test_a_device_without_input_times_is_stamped_by_delivery_at_once(
    current: float, adc: float
) -> None:
    """Some host APIs give 0 for both PortAudio times (or an ADC time after the current
    time): there is no lag to settle on, so the first buffer is not held and each is placed
    one buffer before it was delivered (not six seconds early)."""
    sensor = make(queue_blocks=100)
    sensor._stream.latency = 0.1  # a PortAudio stream: it would settle if it reported times
    delivered = _callbacks(sensor, 3, current, adc)
    blocks = [sensor.read() for _ in range(3)]
    for block, at in zip(blocks, delivered, strict=True):
        assert block is not None
        assert abs(block.captured_at.timestamp() - (at - 0.0125)) < 1e-3


@pytest.mark.parametrize("delay", [0.0, 0.003, 0.2])
def test_portaudio_times_on_the_wall_clock_are_taken_as_they_are(delay: float) -> None:
    """ALSA (and PulseAudio through it) gives PortAudio times on the wall clock the sensor's
    clock reads: each callback runs ``delay`` s after PortAudio read its clock (the machine
    is busy), yet the first frame is stamped at its reported ADC time, not ``delay`` late."""
    sensor = make(queue_blocks=200)
    sensor._stream.latency = 0.1
    clock = sensor.clock
    assert isinstance(clock, VirtualClock)
    adcs = []
    for _ in range(100):  # 100 buffers of 12.5 ms: the lag settles after 1 s of them
        clock.advance(0.0125)
        current = clock.now().timestamp() - delay
        adcs.append(current - 0.005)
        times = SimpleNamespace(currentTime=current, inputBufferAdcTime=adcs[-1])
        status = SimpleNamespace(input_overflow=False)
        sensor._callback(np.zeros((100, 1), dtype=np.int16), 100, times, status)
    block = sensor.read()
    assert block is not None and block.start_frame == 0
    assert abs(block.captured_at.timestamp() - adcs[0]) < 2e-6


def test_a_callback_held_up_a_second_keeps_the_wall_clock_times() -> None:
    """Once a stream's PortAudio times are on the wall clock, a callback run 1.5 s late (a
    stalled machine) is still stamped at its reported ADC time, not placed by an offset that
    holds its delay."""
    sensor = make(queue_blocks=200)
    sensor._stream.latency = 0.1
    clock = sensor.clock
    assert isinstance(clock, VirtualClock)
    adcs = []
    for k in range(101):  # the last callback runs 1.5 s after PortAudio read its clock
        clock.advance(0.0125)
        current = clock.now().timestamp()
        adcs.append(current - 0.005)
        clock.advance(1.5 if k == 100 else 0.0)
        times = SimpleNamespace(currentTime=current, inputBufferAdcTime=adcs[-1])
        status = SimpleNamespace(input_overflow=False)
        sensor._callback(np.zeros((100, 1), dtype=np.int16), 100, times, status)
    blocks = [sensor.read() for _ in range(101)]
    last = blocks[-1]
    assert last is not None and last.start_frame == 100 * 100
    assert abs(last.captured_at.timestamp() - adcs[-1]) < 2e-6
