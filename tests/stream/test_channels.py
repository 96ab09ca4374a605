"""stream/channels.py: one track per channel — the tracks' names and de-interleaving frames."""

from __future__ import annotations

import numpy as np
import pytest

from stream.channels import ChannelSplitter, channel_tracks
from stream.errors import ErrorCode, ProtocolError


def test_channel_tracks_default_to_the_track_or_ch_numbered_from_one() -> None:
    assert channel_tracks(None, (), 2) == ("ch1", "ch2")
    assert channel_tracks("room", (), 3) == ("room-ch1", "room-ch2", "room-ch3")
    assert channel_tracks("Alice", (), 1) == ("Alice",)
    assert channel_tracks(None, (), 1) == (None,)


def test_channel_tracks_take_the_given_names_one_per_channel() -> None:
    assert channel_tracks("ignored", ("Alice", "Bob"), 2) == ("Alice", "Bob")
    with pytest.raises(ValueError, match="3 channels"):
        channel_tracks(None, ("Alice", "Bob"), 3)


def test_split_pcm16_stereo_gives_each_channel_its_samples() -> None:
    left = np.array([1, 2, 3, -4], dtype="<i2")
    right = np.array([100, -200, 300, 400], dtype="<i2")
    frame = np.stack([left, right], axis=1).tobytes()
    out = ChannelSplitter("pcm_s16le", 2).split(frame)
    assert out == [left.tobytes(), right.tobytes()]


def test_split_one_byte_samples_of_three_channels() -> None:
    frame = bytes([1, 2, 3, 4, 5, 6])
    assert ChannelSplitter("mulaw", 3).split(frame) == [bytes([1, 4]), bytes([2, 5]), bytes([3, 6])]


def test_split_f32_keeps_whole_values() -> None:
    values = np.array([[0.5, -0.25], [1.0, 0.0]], dtype="<f4")
    left, right = ChannelSplitter("f32le", 2).split(memoryview(values.tobytes()))
    assert np.frombuffer(left, "<f4").tolist() == [0.5, 1.0]
    assert np.frombuffer(right, "<f4").tolist() == [-0.25, 0.0]


@pytest.mark.parametrize("size", [1, 2, 3, 6])
def test_a_frame_of_partial_sample_frames_is_refused_with_bad_audio(size: int) -> None:
    with pytest.raises(ProtocolError) as refused:
        ChannelSplitter("pcm_s16le", 2).split(bytes(size))
    assert refused.value.code is ErrorCode.BAD_AUDIO
    assert refused.value.close is None  # the connection goes on
    assert "4 bytes each" in refused.value.message


def test_an_empty_frame_splits_into_empty_channels() -> None:
    assert ChannelSplitter("pcm_s16le", 2).split(b"") == [b"", b""]


@pytest.mark.parametrize("channels", [0, 1, 9])
def test_a_splitter_needs_two_to_eight_channels(channels: int) -> None:
    with pytest.raises(ValueError):
        ChannelSplitter("pcm_s16le", channels)
