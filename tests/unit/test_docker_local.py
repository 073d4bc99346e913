"""The Docker runtime's Engine API calls on a local socket, what can be checked without an
engine (tests/integration drive the rest against dockerd)."""

from __future__ import annotations

from bluegreen.runtime.docker import _demuxed


def test_a_container_log_stream_is_demultiplexed():
    frame = lambda kind, text: bytes([kind, 0, 0, 0]) + len(text).to_bytes(4, "big") + text  # noqa: E731
    assert _demuxed(frame(1, b"out\n") + frame(2, b"err: boom\n")) == b"out\nerr: boom\n"
    assert _demuxed(b"") == b"" and _demuxed(frame(1, b"cut")[:-1] + b"") == b"cu"
