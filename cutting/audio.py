"""The audio side of a clip: AAC packets copied from one packet before the cut instant.

An AAC frame decodes correctly only after its predecessor (overlapping transforms), so the
clip keeps one packet of pre-roll before the one that contains the cut instant; the packets
start before 0 on the clip's timeline and the MP4 edit list hides everything before 0,
which puts the first audible sample exactly at the first video frame.
"""

import collections
from collections.abc import Iterator
from pathlib import Path

import av

from cutting.errors import CutError
from cutting.probe import open_media, origin_seconds, packets_from, pts_of, time_base_of, to_ticks

_PRE_ROLL_PACKETS = 2  # the packet containing the cut instant and the one before it


def check_audio(stream: av.stream.Stream) -> None:
    if stream.codec_context.name != "aac":
        name = stream.codec_context.name
        raise CutError(f"audio track {stream.index} is {name!r}; only AAC audio can be cut")


def audio_packets(
    source: Path, index: int, start_seconds: float, end_seconds: float
) -> Iterator[av.Packet]:
    """Audio track ``index`` of ``source`` from ``start`` to ``end`` (seconds of the recording).

    Packets keep the source's time base; their timestamps are moved so that ``start`` is 0.
    """
    with open_media(source) as container:
        stream = container.streams.audio[index]
        origin = origin_seconds(container)
        time_base = time_base_of(stream)
        start = to_ticks(start_seconds + origin, time_base)
        end = to_ticks(end_seconds + origin, time_base)
        frame = to_ticks(1024 / stream.codec_context.sample_rate, time_base)
        for packet in _between(
            packets_from(container, stream, start - frame, keyframe=False), start, end
        ):
            packet.pts = pts_of(packet) - start
            packet.dts = packet.pts
            yield packet


def _between(packets: Iterator[av.Packet], start: int, end: int) -> Iterator[av.Packet]:
    pre_roll: collections.deque[av.Packet] = collections.deque(maxlen=_PRE_ROLL_PACKETS)
    for packet in packets:
        if pts_of(packet) <= start:
            pre_roll.append(packet)
            continue
        yield from pre_roll
        pre_roll.clear()
        if pts_of(packet) >= end:
            return
        yield packet
    yield from pre_roll
