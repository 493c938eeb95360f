"""x265's parameter sets renumbered: the same pictures decode, under the ids asked for."""

import os
from fractions import Fraction

import av
import pytest
from av.codec.context import Flags
from av.video.codeccontext import VideoCodecContext

from cutting.hevc_ids import ParameterSetIds, free_ids, renumbered, source_ids
from cutting.nal import Codec, join_annexb, parameter_sets, split_annexb

pytestmark = pytest.mark.unit

WIDTH, HEIGHT, FRAMES = 64, 48, 6


@pytest.fixture(scope="module")
def x265_stream() -> tuple[list[bytes], list[bytes]]:
    """Parameter sets and packets (Annex B) of a few noise pictures, as the splice encodes."""
    encoder = av.CodecContext.create("libx265", "w")
    assert isinstance(encoder, VideoCodecContext)
    encoder.width, encoder.height, encoder.pix_fmt = WIDTH, HEIGHT, "yuv420p"
    encoder.time_base, encoder.framerate = Fraction(1, 30), Fraction(30)
    encoder.flags |= Flags.global_header
    params = "repeat-headers=0:info=0:bframes=0:log-level=error"
    encoder.options = {"preset": "ultrafast", "x265-params": params}
    encoder.open()
    packets = []
    for number in [*range(FRAMES), None]:
        frame = None if number is None else _noise(number)
        packets += [bytes(packet) for packet in encoder.encode(frame)]
    sets = parameter_sets(Codec.HEVC, split_annexb(encoder.extradata or b""))
    return sets, packets


def _noise(number: int) -> av.VideoFrame:
    frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
    for plane in frame.planes:
        plane.update(os.urandom(plane.buffer_size))
    frame.pts = number
    return frame


def _decoded(sets: list[bytes], packets: list[bytes]) -> list[bytes]:
    decoder = av.CodecContext.create("hevc", "r")
    decoder.extradata = join_annexb(sets)
    frames = []
    for data in [*packets, None]:
        packet = None if data is None else av.Packet(data)
        frames += [bytes(frame.planes[0]) for frame in decoder.decode(packet)]
    return frames


def _renumbered_stream(
    stream: tuple[list[bytes], list[bytes]], ids: ParameterSetIds
) -> tuple[list[bytes], list[bytes]]:
    sets, packets = stream
    renumber = [renumbered(nal, ids) for nal in sets]
    return renumber, [join_annexb(renumbered(n, ids) for n in split_annexb(p)) for p in packets]


@pytest.mark.parametrize("ids", [ParameterSetIds(1, 1, 15), ParameterSetIds(15, 15, 30)])
def test_renumbered_stream_decodes_to_the_same_pictures(
    x265_stream: tuple[list[bytes], list[bytes]], ids: ParameterSetIds
) -> None:
    sets, packets = _renumbered_stream(x265_stream, ids)
    assert source_ids(x265_stream[0]) == ({0}, {0}, {0})
    assert source_ids(sets) == ({ids.vps}, {ids.sps}, {ids.pps})
    original = _decoded(*x265_stream)
    assert len(original) == FRAMES
    assert _decoded(sets, packets) == original


def test_decoding_with_the_wrong_parameter_sets_fails(
    x265_stream: tuple[list[bytes], list[bytes]],
) -> None:
    """The decoding test can fail: slices naming a PPS nobody sent decode to nothing."""
    _, packets = _renumbered_stream(x265_stream, ParameterSetIds(1, 1, 15))
    assert _decoded(x265_stream[0], packets) == []


def _bits(data: bytes) -> str:
    return "".join(f"{byte:08b}" for byte in data)


def test_emulation_prevention_is_removed_and_rebuilt_around_the_new_id() -> None:
    """A slice whose data holds zero runs: escaped in and out, and its data a byte later."""
    data = bytes([0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x02, 0xAB, 0x00, 0x00])
    rbsp = bytes([0b1100_0000]) + data  # first_slice_segment_in_pic_flag, ue(0), zeros
    escaped = rbsp.replace(b"\x00\x00", b"\x00\x00\x03")  # no two runs touch here
    nal = bytes([1 << 1, 1]) + escaped  # TRAIL_R, temporal id 0
    out = renumbered(nal, ParameterSetIds(0, 0, 15))
    assert out[:2] == nal[:2]
    payload = out[2:]
    for forbidden in (b"\x00\x00\x00", b"\x00\x00\x01", b"\x00\x00\x02"):
        assert forbidden not in payload
    assert payload.endswith(b"\x00\x00\x03")  # a final zero run is escaped too
    new_rbsp = _bits(payload.replace(b"\x00\x00\x03", b"\x00\x00"))
    assert new_rbsp == "1" + "000010000" + "000000" + _bits(data)


def test_free_ids_avoid_every_id_the_source_uses(
    x265_stream: tuple[list[bytes], list[bytes]],
) -> None:
    first = free_ids(x265_stream[0])
    assert first == ParameterSetIds(1, 1, 15)
    both = x265_stream[0] + _renumbered_stream(x265_stream, first)[0]
    assert free_ids(both) == ParameterSetIds(2, 2, 16)
