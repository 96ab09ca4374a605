"""The short CI variant of bench/fuzz_live.py: 1,500 malformed messages and frames over the five
transports of a real server, a good session alongside (its checks are the bench's: documented
errors and close codes, the server up, RSS bounded, the good session's transcript unchanged)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT
from tests.requirements import shared_audio_dir

pytestmark = pytest.mark.slow

MESSAGES = 1500
"""The full run (bench/fuzz_live.py's default) is 10,000: about 90 s on 2 loaded cores."""


def test_fuzz_live_short() -> None:
    audio_dir = shared_audio_dir()  # jfk.flac, the good session's audio
    command = [sys.executable, "-m", "bench.fuzz_live", "--messages", str(MESSAGES)]
    command += ["--audio-dir", str(audio_dir)]
    proc = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    print(proc.stdout)
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-3000:]}"
    sent = re.search(r"^messages: (\d+)", proc.stdout, re.MULTILINE)
    assert sent is not None and int(sent.group(1)) >= MESSAGES, proc.stdout
