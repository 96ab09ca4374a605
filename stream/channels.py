"""A multichannel source as one track per channel: the tracks' names and the de-interleaving.

Pure: a session whose `start` announces `channels` > 1 is not mixed down; each channel becomes
a track of its own (its own VAD, utterances and finals), as if each had its own session:

    names = channel_tracks(start.track, start.channel_tracks, start.channels)  # ("ch1", "ch2")
    splitter = ChannelSplitter("pcm_s16le", 2)
    left, right = splitter.split(frame)    # each a mono frame in the same encoding

A frame must hold whole sample frames (one sample of every channel): its length is a multiple
of `channels` × bytes per sample, so a channel's audio can never shift into the next one's.
"""

from __future__ import annotations

import numpy as np

from stream.audio import BYTES_PER_SAMPLE, MAX_CHANNELS
from stream.errors import ErrorCode, ProtocolError
from stream.events import Encoding

__all__ = ["DEFAULT_CHANNEL_PREFIX", "ChannelSplitter", "channel_tracks"]

DEFAULT_CHANNEL_PREFIX = "ch"
"""The channel tracks of a `start` without `track` nor `channel_tracks`: "ch1", "ch2", …"""


def channel_tracks(track: str | None, names: tuple[str, ...], channels: int) -> tuple[str | None, ...]:
    """The track of each channel: `names` when given (one per channel), else `<track>-ch1`,
    `<track>-ch2`, … (`ch1`, `ch2`, … without a track: the names `palabre-client stream` gives the
    channels of a file it streams one per session). One channel is the session's own `track`."""
    if names:
        if len(names) != channels:
            raise ValueError(f"channel_tracks names {len(names)} tracks for {channels} channels")
        return names
    if channels == 1:
        return (track,)
    prefix = DEFAULT_CHANNEL_PREFIX if track is None else f"{track}-{DEFAULT_CHANNEL_PREFIX}"
    return tuple(f"{prefix}{i}" for i in range(1, channels + 1))


class ChannelSplitter:
    """De-interleaves frames of `channels` channels into one mono frame per channel (same encoding)."""

    def __init__(self, encoding: Encoding, channels: int) -> None:
        if not 2 <= channels <= MAX_CHANNELS:
            raise ValueError(f"a splitter needs 2..{MAX_CHANNELS} channels, not {channels}")
        self.channels = channels
        self.sample_bytes = BYTES_PER_SAMPLE[encoding]
        self.frame_bytes = self.sample_bytes * channels
        """Bytes of one sample frame (a sample of every channel): every frame holds whole ones."""

    def split(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """One frame's bytes per channel, in channel order; `ProtocolError(BAD_AUDIO)` (the frame
        is refused whole) when its length is not a multiple of `frame_bytes`."""
        size = len(data)
        if size % self.frame_bytes:
            raise ProtocolError(
                ErrorCode.BAD_AUDIO,
                f"an audio frame of {size} bytes does not hold whole sample frames of {self.channels} "
                f"channels ({self.frame_bytes} bytes each); the frame was dropped",
            )
        samples = np.frombuffer(data, dtype=np.uint8).reshape(-1, self.channels, self.sample_bytes)
        return [samples[:, channel, :].tobytes() for channel in range(self.channels)]
