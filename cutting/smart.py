"""The video of a frame-exact clip: re-encode only where the source cannot be copied.

Smart cut: decode from the last keyframe at or before START and re-encode the pictures
from START up to the first spliceable keyframe K1 (the *head*), copy the source's packets
from K1, and re-encode the few pictures before END that can only be decoded with a
reference picture at or after END (the *tail*, B-frames). Full re-encode is the same
pipeline without a splice point.

Timestamps are the source stream's ticks until the muxer shifts them. Decode timestamps
are rebuilt for every copied packet (Matroska has none): the n-th packet gets the pts of
the (n - R)-th picture in display order, R being the source's reorder depth, and the
re-encoded parts (no B-frames) get ``pts - R`` frame durations, so the spliced stream's
dts rise monotonically.
"""

import heapq
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum

import av
import av.container
import av.stream
from av.video.stream import VideoStream

from cutting.encode import EncoderSettings, encode, full_settings, splice_settings, web_settings
from cutting.errors import CutError
from cutting.hevc_ids import ParameterSetIds, free_ids, renumbered
from cutting.logs import ffmpeg_errors
from cutting.nal import (
    HEVC_END_OF_SEQUENCE,
    Codec,
    h264_parameter_set_ids,
    is_splice_point,
    join_annexb,
    may_be_referenced,
    parameter_sets,
    parameter_sets_from_extradata,
    split_annexb,
    split_length_prefixed,
    without_stream_headers,
)
from cutting.probe import frame_ticks, origin_seconds, packets_from, pts_of, time_base_of

# Packets looked at to measure the source's reorder depth (H.264 allows up to 16).
_REORDER_WINDOW = 48
ProgressCallback = Callable[[float], None]


class VideoMode(Enum):
    SMART = "smart"
    FULL = "full"
    WEB = "web"  # full re-encode to H.264, whatever the source's codec


# Every parameter set is in the sample description, a spliced clip's re-encoder's under
# ids of its own: 'hvc1' for HEVC (what Apple's players want), not 'hev1'.
_CODEC_TAGS = {Codec.H264: "avc1", Codec.HEVC: "hvc1"}


@dataclass
class Unit:
    """One access unit of the source: its packet (for decoding) and its NAL units (for copying)."""

    packet: av.Packet
    nals: list[bytes]
    pts: int
    keyframe: bool
    reference: bool
    dts: int = 0


@dataclass
class OutputPacket:
    data: bytes
    pts: int
    dts: int
    keyframe: bool


@dataclass
class VideoCut:
    """Packets of the cut video in decode order; ``first_pts``/``end_pts`` once known."""

    codec: Codec
    stream: VideoStream
    origin_seconds: float
    extradata: bytes
    codec_tag: str
    packets: Iterator[OutputPacket]
    # Set when the video is re-encoded into another codec than the source's: the muxer's
    # stream is an encoder opened with the same settings (so the same parameter sets).
    transcoded_with: EncoderSettings | None = None
    head_frames: int = 0
    tail_frames: int = 0
    joins: list[int] = field(default_factory=list)
    first_pts: int | None = None
    end_pts: int | None = None

    def first_seconds(self) -> float:
        """Recording time of the first frame (known once the first packet is out)."""
        assert self.first_pts is not None
        return float(self.first_pts * time_base_of(self.stream)) - self.origin_seconds


def source_codec(stream: VideoStream) -> Codec:
    name = stream.codec_context.name
    try:
        return Codec(name)
    except ValueError:
        raise CutError(f"video codec {name!r} is not supported (H.264 or HEVC only)") from None


class _Source:
    """The source video stream as access units in decode order, from a keyframe."""

    def __init__(self, container: av.container.InputContainer, stream: VideoStream) -> None:
        self.stream = stream
        self.codec = source_codec(stream)
        extradata = stream.codec_context.extradata or b""
        self.parameter_sets, self._length_size = parameter_sets_from_extradata(
            self.codec, extradata
        )
        self.frame_ticks = frame_ticks(stream)
        self.container = container

    def units_from(self, target: int) -> Iterator[Unit]:
        packets = packets_from(self.container, self.stream, target, keyframe=True)
        return (self._unit(packet) for packet in packets)

    def _unit(self, packet: av.Packet) -> Unit:
        data = bytes(packet)
        if self._length_size:
            nals = split_length_prefixed(data, self._length_size)
        else:
            nals = split_annexb(data)
        if not self.parameter_sets:
            self.parameter_sets = parameter_sets(self.codec, nals)
        return Unit(
            packet=packet,
            nals=nals,
            pts=pts_of(packet),
            keyframe=packet.is_keyframe,
            reference=may_be_referenced(self.codec, nals),
        )

    def ticks(self, frames: float) -> int:
        return round(frames * self.frame_ticks)


def reorder_depth(units: Iterator[Unit]) -> tuple[int, Iterator[Unit]]:
    """The source's reorder depth R, measured on its first packets, and all the units."""
    window = list(itertools.islice(units, _REORDER_WINDOW))
    if not window:
        raise CutError("the source has no video frames in the requested range")
    ranks = {pts: rank for rank, pts in enumerate(sorted(unit.pts for unit in window))}
    depth = max(index - ranks[unit.pts] for index, unit in enumerate(window))
    return depth, itertools.chain(window, units)


def with_decode_times(
    units: Iterator[Unit], depth: int, ticks: Callable[[float], int]
) -> Iterator[Unit]:
    """Give each unit a dts (see module doc); the first unit must be a keyframe."""
    pending: list[int] = []
    first: int | None = None
    for index, unit in enumerate(units):
        first = unit.pts if first is None else first
        heapq.heappush(pending, unit.pts)
        unit.dts = first - ticks(depth - index) if index < depth else heapq.heappop(pending)
        if unit.dts > unit.pts:
            raise CutError("the source reorders frames deeper than its first GOP shows")
        yield unit


class _Encoder:
    """Re-encodes decoded pictures into one part of the clip (an IDR first).

    ``hevc_ids``: the ids x265's parameter sets are given in its output, beside the source's.
    """

    def __init__(
        self,
        settings: EncoderSettings,
        rewrite_dts: Callable[[int], int] | None,
        hevc_ids: ParameterSetIds | None,
    ) -> None:
        self._context = settings.open()
        self._pix_fmt = settings.pix_fmt
        self._rewrite_dts = rewrite_dts
        self._hevc_ids = hevc_ids
        extradata = split_annexb(self._context.extradata or b"")
        self.parameter_sets = self._renumbered(parameter_sets(settings.codec, extradata))

    def add(self, frame: av.VideoFrame | None) -> list[OutputPacket]:
        if frame is not None and frame.format.name != self._pix_fmt:
            frame = frame.reformat(format=self._pix_fmt)  # a 10-bit source for the web
        return [self._output(packet) for packet in encode(self._context, frame)]

    def _output(self, packet: av.Packet) -> OutputPacket:
        pts = pts_of(packet)
        dts = packet.dts if self._rewrite_dts is None else self._rewrite_dts(pts)
        if dts is None:
            raise CutError("the encoder gave a packet without a decode timestamp")
        data = bytes(packet)
        if self._hevc_ids is not None:
            data = join_annexb(self._renumbered(split_annexb(data)))
        return OutputPacket(data, pts, dts, packet.is_keyframe)

    def _renumbered(self, nals: list[bytes]) -> list[bytes]:
        ids = self._hevc_ids
        return nals if ids is None else [renumbered(nal, ids) for nal in nals]


class _Decoder:
    """The source's decoder; any error it reports (even one it conceals) fails the cut."""

    def __init__(self, stream: VideoStream) -> None:
        self._context = stream.codec_context
        self._context.thread_type = "AUTO"

    def decode(self, unit: Unit | None) -> list[av.VideoFrame]:
        with ffmpeg_errors() as errors:
            try:
                frames = list(self._context.decode(None if unit is None else unit.packet))
            except av.FFmpegError as exc:
                raise CutError(f"the source is corrupt: video decoding failed ({exc})") from exc
        if errors or any(frame.is_corrupt for frame in frames):
            where = "" if unit is None else f" near {float(unit.pts * unit.packet.time_base):.2f}s"
            detail = f" ({errors[0][2].strip()})" if errors else ""
            raise CutError(f"the source is corrupt: video decoding failed{where}{detail}")
        return frames

    def restart(self) -> None:
        self._context.flush_buffers()

    def frames(self, units: list[Unit]) -> Iterator[av.VideoFrame]:
        """Every frame of ``units`` (which start at a keyframe), the decoder drained at the end."""
        for unit in units:
            yield from self.decode(unit)
        yield from self.decode(None)


def cut_video(
    container: av.container.InputContainer,
    stream: VideoStream,
    start: int,
    end: int,
    *,
    mode: VideoMode,
    on_progress: ProgressCallback,
) -> VideoCut:
    """The video of ``[start, end)`` (stream ticks) as packets to mux, cut the ``mode`` way."""
    source = _Source(container, stream)
    return _Cutter(source, start, end, mode, on_progress).cut()


class _Cutter:
    def __init__(
        self, source: _Source, start: int, end: int, mode: VideoMode, on_progress: ProgressCallback
    ) -> None:
        self._source = source
        self._start, self._end = start, end
        self._mode = mode
        self._on_progress = on_progress
        self._decoder = _Decoder(source.stream)
        self._last_dts: int | None = None
        self._last_pts = 0
        self._depth = 0
        self._splice_unit: Unit | None = None
        self._rest: Iterator[Unit] = iter(())
        self._reported = -1

    def cut(self) -> VideoCut:
        self._depth, units = reorder_depth(self._source.units_from(self._start))
        units = with_decode_times(units, self._depth, self._source.ticks)
        codec = self._source.codec
        if self._mode is VideoMode.SMART:
            self._settings = splice_settings(codec, self._source.stream, self._free_h264_id())
        elif self._mode is VideoMode.WEB:
            self._settings = web_settings(self._source.stream)
        else:
            self._settings = full_settings(codec, self._source.stream)
        self._hevc_ids = free_ids(self._source.parameter_sets) if self._spliced_hevc() else None
        self._head_encoder = self._new_encoder()
        self._encoder_parameter_sets = self._head_encoder.parameter_sets
        spliced_with = self._source.parameter_sets if self._mode is VideoMode.SMART else []
        self._cut = VideoCut(
            codec=self._settings.codec,
            stream=self._source.stream,
            origin_seconds=origin_seconds(self._source.container),
            extradata=join_annexb(spliced_with + self._encoder_parameter_sets),
            codec_tag=_CODEC_TAGS[self._settings.codec],
            packets=self._packets(units),
            transcoded_with=self._settings if self._settings.codec is not codec else None,
        )
        return self._cut

    def _spliced_hevc(self) -> bool:
        return self._mode is VideoMode.SMART and self._source.codec is Codec.HEVC

    def _free_h264_id(self) -> int:
        if self._source.codec is not Codec.H264:
            return 0
        used = h264_parameter_set_ids(self._source.parameter_sets)
        return next(candidate for candidate in range(1, 32) if candidate not in used)

    # Parts of the clip, in decode order.

    def _packets(self, units: Iterator[Unit]) -> Iterator[OutputPacket]:
        yield from self._head(units)
        if self._splice_unit is not None:
            if self._cut.head_frames:
                self._cut.joins.append(self._splice_unit.pts)
            yield from self._copied(self._splice_unit, self._rest)
        self._on_progress(100.0)

    def _head(self, units: Iterator[Unit]) -> Iterator[OutputPacket]:
        """Re-encode START up to the splice keyframe K1 (or END); remember K1 and what follows."""
        encoder = self._head_encoder
        after_splice: list[Unit] = []
        for unit in units:
            if self._splice_unit is None and self._is_splice_unit(unit):
                self._splice_unit = unit
            if self._splice_unit is not None:
                after_splice.append(unit)
            if unit.dts >= self._head_limit():
                break
            if unit.reference or self._start <= unit.pts < self._head_limit():
                for frame in self._in_head(self._decoder.decode(unit)):
                    yield from self._take_frame(encoder, frame)
        for frame in self._in_head(self._decoder.decode(None)):
            yield from self._take_frame(encoder, frame)
        if self._cut.head_frames:
            yield from encoder.add(None)
        self._rest = itertools.chain(after_splice, units)
        if self._splice_unit is not None and self._cut.first_pts is None:
            self._cut.first_pts = self._splice_unit.pts
        if self._cut.first_pts is None:
            raise CutError("the source has no video frames in the requested range")
        if self._splice_unit is None:
            self._cut.end_pts = self._last_pts + self._source.ticks(1)

    def _head_limit(self) -> int:
        return self._end if self._splice_unit is None else self._splice_unit.pts

    def _in_head(self, frames: list[av.VideoFrame]) -> list[av.VideoFrame]:
        return [frame for frame in frames if self._start <= pts_of(frame) < self._head_limit()]

    def _is_splice_unit(self, unit: Unit) -> bool:
        return (
            self._mode is VideoMode.SMART
            and unit.keyframe
            and self._start <= unit.pts < self._end
            and is_splice_point(self._source.codec, unit.nals)
        )

    def _take_frame(self, encoder: _Encoder, frame: av.VideoFrame) -> list[OutputPacket]:
        pts = pts_of(frame)
        if self._cut.first_pts is None:
            self._cut.first_pts = pts
        self._cut.head_frames += 1
        self._last_pts = pts
        self._progress(pts)
        return encoder.add(frame)

    def _new_encoder(self) -> _Encoder:
        rewrite = self._spliced_dts if self._mode is VideoMode.SMART else None
        return _Encoder(self._settings, rewrite, self._hevc_ids)

    def _spliced_dts(self, pts: int) -> int:
        dts = pts - self._source.ticks(self._depth)
        if self._last_dts is not None:
            dts = max(dts, self._last_dts + 1)
        self._last_dts = dts
        return dts

    def _copied(self, splice_unit: Unit, units: Iterator[Unit]) -> Iterator[OutputPacket]:
        """Copy from K1 one GOP at a time, holding the last GOP back for the exact end."""
        gop: list[Unit] = []
        first_part = True
        # Leading pictures of K1 are dropped (their frames are in the head): new dts.
        trailing = (unit for unit in units if unit.pts >= splice_unit.pts)
        for unit in with_decode_times(trailing, self._depth, self._source.ticks):
            if unit.dts >= self._end:
                break
            if unit.keyframe and unit.pts < self._end and gop:
                yield from self._copy(gop, after_reencoded=first_part and self._has_head())
                first_part = False
                gop = []
            gop.append(unit)
            self._progress(unit.pts)
        yield from self._last_gop(gop, after_reencoded=first_part and self._has_head())

    def _has_head(self) -> bool:
        return self._cut.head_frames > 0

    def _copy(self, units: list[Unit], *, after_reencoded: bool) -> Iterator[OutputPacket]:
        codec = self._source.codec
        for position, unit in enumerate(units):
            nals = without_stream_headers(codec, unit.nals)
            if position == 0 and after_reencoded and codec is Codec.HEVC:
                nals = [HEVC_END_OF_SEQUENCE, *nals]
            self._last_dts = unit.dts
            yield OutputPacket(join_annexb(nals), unit.pts, unit.dts, unit.keyframe)

    def _last_gop(self, gop: list[Unit], *, after_reencoded: bool) -> Iterator[OutputPacket]:
        """Copy what ends before END; re-encode pictures before END that need a later one."""
        copied, tail_pts = _split_tail(gop, self._end)
        yield from self._copy(copied, after_reencoded=after_reencoded)
        if not tail_pts:
            last_pts = max((unit.pts for unit in copied), default=self._last_pts)
            self._cut.end_pts = last_pts + self._source.ticks(1)
            return
        if min(tail_pts) < gop[0].pts:
            raise CutError("cannot re-encode the clip's end: it needs a previous GOP (open GOP)")
        self._cut.tail_frames = len(tail_pts)
        self._cut.joins.append(min(tail_pts))
        tail = self._reencoded_tail(gop, set(tail_pts))
        self._cut.end_pts = max(tail_pts) + self._source.ticks(1)
        yield from self._after_end_of_sequence(tail)

    def _reencoded_tail(self, gop: list[Unit], wanted: set[int]) -> list[OutputPacket]:
        self._decoder.restart()
        encoder = self._new_encoder()
        if encoder.parameter_sets != self._encoder_parameter_sets:
            raise CutError("the re-encoder produced different parameter sets for the same settings")
        tail: list[OutputPacket] = []
        decodable = [
            unit
            for unit in gop
            if unit.pts >= gop[0].pts and (unit.reference or unit.pts in wanted)
        ]
        for frame in self._decoder.frames(decodable):
            if frame.pts in wanted:
                tail += encoder.add(frame)
        tail += encoder.add(None)
        if len(tail) != len(wanted):
            raise CutError("the source is corrupt: the clip's last frames cannot be decoded")
        return tail

    def _after_end_of_sequence(self, tail: list[OutputPacket]) -> Iterator[OutputPacket]:
        """HEVC: the re-encoded tail starts a new coded video sequence, as K1 does after the
        head (an SPS may only change there)."""
        if self._spliced_hevc():
            first = tail[0]
            data = join_annexb([HEVC_END_OF_SEQUENCE, *split_annexb(first.data)])
            tail = [OutputPacket(data, first.pts, first.dts, first.keyframe), *tail[1:]]
        yield from tail

    def _progress(self, pts: int) -> None:
        percent = int(100 * (pts - self._start) / max(1, self._end - self._start))
        if percent > self._reported and 0 <= percent < 100:
            self._reported = percent
            self._on_progress(float(percent))


def _split_tail(gop: list[Unit], end: int) -> tuple[list[Unit], list[int]]:
    """Split the last GOP into a copyable prefix and the pts of pictures to re-encode.

    The prefix holds no picture at or after END and nothing displayed after a re-encoded
    picture; every picture before END that comes later in decode order is re-encoded.
    """
    late = [position for position, unit in enumerate(gop) if unit.pts >= end]
    split = late[0] if late else len(gop)

    def wanted(split: int) -> list[int]:
        return [unit.pts for unit in gop[split:] if unit.pts < end]

    while split > 0 and wanted(split) and max(u.pts for u in gop[:split]) > min(wanted(split)):
        split -= 1
    return gop[:split], sorted(wanted(split))
