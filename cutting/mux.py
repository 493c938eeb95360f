"""Write a clip's video and audio packets into a browser-playable MP4 (``+faststart``)."""

import heapq
import itertools
from collections.abc import Iterator
from pathlib import Path

import av
import av.container
from av.video.stream import VideoStream

from cutting.audio import audio_packets
from cutting.errors import CutError
from cutting.nal import split_annexb
from cutting.probe import frame_ticks, time_base_of
from cutting.smart import OutputPacket, VideoCut
from cutting.verify import PacketDigest, packet_digest


def write_mp4(
    output: Path,
    video: VideoCut,
    audio_tracks: list[av.stream.Stream],
    source: Path,
    end_seconds: float,
) -> list[PacketDigest]:
    """Mux ``video`` and ``audio_tracks`` of ``source``, cut at the first video frame.

    ``end_seconds`` (recording time) is where the audio ends. Returns the digest of every
    video packet as the file stores it (NAL units with 4-byte lengths, for
    ``cutting.verify``). ``output`` is removed when writing fails.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    digests: list[PacketDigest] = []
    try:
        with av.open(
            str(output), "w", format="mp4", container_options={"movflags": "+faststart"}
        ) as mp4:
            _write(mp4, video, audio_tracks, source, end_seconds, digests)
        return digests
    except BaseException as exc:
        output.unlink(missing_ok=True)
        if isinstance(exc, av.FFmpegError):
            raise CutError(f"writing the clip failed ({exc})") from exc
        raise


def _write(
    mp4: av.container.OutputContainer,
    video: VideoCut,
    audio_tracks: list[av.stream.Stream],
    source: Path,
    end_seconds: float,
    digests: list[PacketDigest],
) -> None:
    video_out = _video_stream(mp4, video)
    video_out.codec_context.codec_tag = video.codec_tag
    audio_outs = [mp4.add_stream_from_template(track) for track in audio_tracks]
    video_packets = _video_packets(video, video_out, digests)
    first = next(video_packets)  # decides the cut instant the audio follows
    audio = [
        _assigned(audio_packets(source, number, video.first_seconds(), end_seconds), stream)
        for number, stream in enumerate(audio_outs)
    ]
    streams = [itertools.chain([first], video_packets), *audio]
    for packet in heapq.merge(*streams, key=_decode_seconds):
        mp4.mux(packet)


def _decode_seconds(packet: av.Packet) -> float:
    # Every packet muxed here has both (ours are built with them, audio keeps the source's).
    assert packet.dts is not None and packet.time_base is not None
    return float(packet.dts * packet.time_base)


def _video_stream(mp4: av.container.OutputContainer, video: VideoCut) -> VideoStream:
    """The clip's video stream: the source's codec parameters with the cut's parameter sets,
    or (video re-encoded into another codec) an encoder opened like the cut's own."""
    if video.transcoded_with is None:
        stream = mp4.add_stream_from_template(video.stream)
        stream.codec_context.extradata = video.extradata
        return stream
    encoded = mp4.add_stream(video.transcoded_with.encoder_name)
    assert isinstance(encoded, VideoStream), "the transcoding encoder is a video encoder"
    video.transcoded_with.open_as(encoded.codec_context)
    encoded.time_base = video.transcoded_with.time_base
    if encoded.codec_context.extradata != video.extradata:
        raise CutError("the muxer's encoder produced other parameter sets than the cut's")
    return encoded


def _video_packets(
    video: VideoCut, stream: av.stream.Stream, digests: list[PacketDigest]
) -> Iterator[av.Packet]:
    ticks = round(frame_ticks(video.stream))
    for cut in video.packets:
        # The MP4 muxer stores Annex B NAL units with 4-byte lengths instead of start codes.
        stored = b"".join(len(nal).to_bytes(4) + nal for nal in split_annexb(cut.data))
        digests.append(packet_digest(stored))
        yield _packet(cut, video, stream, ticks)


def _packet(
    cut: OutputPacket, video: VideoCut, stream: av.stream.Stream, frame_ticks: int
) -> av.Packet:
    assert video.first_pts is not None
    packet = av.Packet(cut.data)
    packet.pts = cut.pts - video.first_pts
    packet.dts = cut.dts - video.first_pts
    packet.duration = frame_ticks
    packet.time_base = time_base_of(video.stream)
    packet.is_keyframe = cut.keyframe
    packet.stream = stream
    return packet


def _assigned(packets: Iterator[av.Packet], stream: av.stream.Stream) -> Iterator[av.Packet]:
    for packet in packets:
        packet.stream = stream
        yield packet
