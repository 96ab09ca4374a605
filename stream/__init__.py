"""The streaming core of Palabre: pure, sans-I/O state machines driven by plain method calls.

Nothing in this package opens a socket, a file or a model. Audio conversion, voice activity
segmentation, the partial/final policy and the cross-session micro-batcher all live here and
are tested with plain calls and a fake clock.
"""

__all__ = [
    "answers",
    "audio",
    "errors",
    "events",
    "interfaces",
    "scheduler",
    "segmenter",
    "session",
    "stability",
    "summary",
]
