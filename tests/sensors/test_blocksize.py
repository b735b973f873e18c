"""The real-device block size ``"auto"``: a PortAudio callback every 50-100 ms, chosen from the
rate and the chunk length (issue 22: ``blocksize = 0`` let PortAudio deliver tiny buffers, and
the per-callback work cost three times acoupi's CPU at 384 kHz). The default since decision
0150, at most 60 KiB a block."""

from __future__ import annotations

import pytest

from fieldstation.sensors.audio import MAX_CALLBACK_BYTES, AudioConfig, callback_frames
from fieldstation.sensors.device import AudioSensor


@pytest.mark.parametrize(
    ("rate", "chunk"),
    [(384_000, 60.0), (48_000, 10.0), (44_100, 60.0), (256_000, 0.5), (8_000, 1.0), (22_050, 7.3)],
)
def test_a_callback_comes_every_50_to_100_ms(rate: int, chunk: float) -> None:
    block = callback_frames(rate, chunk)
    assert 0.05 <= block / rate <= 0.1
    assert block * 2 <= MAX_CALLBACK_BYTES
    frames = round(rate * chunk)
    longest = min(round(rate * 0.1), MAX_CALLBACK_BYTES // 2)
    divisors = [b for b in range(round(rate * 0.05), longest + 1) if frames % b == 0]
    if divisors:  # every chunk holds a whole number of callbacks, the longest that do
        assert block == max(divisors)
    else:
        assert block == longest


def test_384_khz_blocks_stay_under_the_byte_limit() -> None:
    """100 ms of 384 kHz int16 (76,800 bytes) was stamped 14.9 ms late through PulseAudio (a
    block larger than the host period): 80 ms mono, 40 ms stereo."""
    assert callback_frames(384_000, 60.0) == 30_720
    assert callback_frames(384_000, 60.0, frame_bytes=4) == 15_360
    assert callback_frames(48_000, 60.0, frame_bytes=4) == 4_800


def test_auto_uses_the_chosen_size_and_a_number_is_used_as_given() -> None:
    base = {"name": "mic", "kind": "audio", "sample_rate": 384_000, "chunk": "60s"}
    auto = AudioConfig.model_validate({**base, "blocksize": "auto"})
    assert AudioSensor(auto).blocksize == 30_720
    stereo = AudioConfig.model_validate({**base, "blocksize": "auto", "channels": 2})
    assert AudioSensor(stereo).blocksize == 15_360
    assert AudioSensor(AudioConfig.model_validate(base)).blocksize == 30_720  # the default
    assert AudioSensor(AudioConfig.model_validate({**base, "blocksize": 0})).blocksize == 0
    assert AudioSensor(AudioConfig.model_validate({**base, "blocksize": 512})).blocksize == 512
    with pytest.raises(ValueError, match="blocksize"):
        AudioConfig.model_validate({**base, "blocksize": -1})
