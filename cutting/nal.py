"""H.264/HEVC NAL units: framing (Annex B, length-prefixed, avcC/hvcC) and what a splice needs.

Every packet the smart cut writes is rebuilt as Annex B, whatever the source container used;
the MP4 muxer converts Annex B to length-prefixed samples and builds avcC/hvcC from the
Annex B parameter sets given as extradata.
"""

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

START_CODE = b"\x00\x00\x00\x01"


class Codec(Enum):
    H264 = "h264"
    HEVC = "hevc"


# NAL unit types by codec.
_H264_NON_IDR_SLICE, _H264_IDR, _H264_SPS, _H264_PPS, _H264_AUD, _H264_END_OF_SEQUENCE = (
    1,
    5,
    7,
    8,
    9,
    10,
)
_HEVC_BLA_FIRST, _HEVC_CRA = 16, 21
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS, _HEVC_AUD, _HEVC_END_OF_SEQUENCE = 32, 33, 34, 35, 36

_PARAMETER_SETS = {
    Codec.H264: frozenset({_H264_SPS, _H264_PPS}),
    Codec.HEVC: frozenset({_HEVC_VPS, _HEVC_SPS, _HEVC_PPS}),
}
_DROPPED_ON_COPY = {
    Codec.H264: _PARAMETER_SETS[Codec.H264] | {_H264_AUD, _H264_END_OF_SEQUENCE},
    Codec.HEVC: _PARAMETER_SETS[Codec.HEVC] | {_HEVC_AUD, _HEVC_END_OF_SEQUENCE},
}
# HEVC end-of-sequence NAL unit (type 36, layer 0, temporal id 1): the next picture starts
# a new coded video sequence, so a CRA after it drops its RASL pictures and may switch SPS.
HEVC_END_OF_SEQUENCE = bytes([_HEVC_END_OF_SEQUENCE << 1, 1])


def nal_type(codec: Codec, nal: bytes) -> int:
    if codec is Codec.H264:
        return nal[0] & 0x1F
    return (nal[0] >> 1) & 0x3F


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (3- or 4-byte start codes)."""
    nals = []
    position = data.find(b"\x00\x00\x01")
    while position != -1:
        begin = position + 3
        position = data.find(b"\x00\x00\x01", begin)
        end = len(data) if position == -1 else position
        nal = data[begin:end].rstrip(b"\x00") if position != -1 else data[begin:end]
        if nal:
            nals.append(nal)
    return nals


def split_length_prefixed(data: bytes, length_size: int) -> list[bytes]:
    """NAL units of an MP4/Matroska sample (each preceded by its big-endian length)."""
    nals = []
    position = 0
    while position + length_size <= len(data):
        length = int.from_bytes(data[position : position + length_size], "big")
        position += length_size
        nals.append(data[position : position + length])
        position += length
    return nals


def join_annexb(nals: Iterable[bytes]) -> bytes:
    return b"".join(START_CODE + nal for nal in nals)


def parameter_sets_from_extradata(codec: Codec, extradata: bytes) -> tuple[list[bytes], int]:
    """Parameter-set NAL units in ``extradata`` and the sample NAL length size (0: Annex B)."""
    if not extradata:
        return [], 0
    if extradata[0] != 1:
        return split_annexb(extradata), 0
    if codec is Codec.H264:
        return _avcc_parameter_sets(extradata), (extradata[4] & 0x03) + 1
    return _hvcc_parameter_sets(extradata), (extradata[21] & 0x03) + 1


def _avcc_parameter_sets(avcc: bytes) -> list[bytes]:
    nals: list[bytes] = []
    position = 5
    for count_mask in (0x1F, 0xFF):
        count = avcc[position] & count_mask
        position += 1
        for _ in range(count):
            length = int.from_bytes(avcc[position : position + 2], "big")
            nals.append(avcc[position + 2 : position + 2 + length])
            position += 2 + length
    return nals


def _hvcc_parameter_sets(hvcc: bytes) -> list[bytes]:
    nals: list[bytes] = []
    arrays = hvcc[22]
    position = 23
    for _ in range(arrays):
        count = int.from_bytes(hvcc[position + 1 : position + 3], "big")
        position += 3
        for _ in range(count):
            length = int.from_bytes(hvcc[position : position + 2], "big")
            nals.append(hvcc[position + 2 : position + 2 + length])
            position += 2 + length
    return nals


def parameter_sets(codec: Codec, nals: Iterable[bytes]) -> list[bytes]:
    return [nal for nal in nals if nal_type(codec, nal) in _PARAMETER_SETS[codec]]


def without_stream_headers(codec: Codec, nals: Iterable[bytes]) -> list[bytes]:
    """Drop in-band parameter sets, access unit delimiters and end-of-sequence units."""
    return [nal for nal in nals if nal_type(codec, nal) not in _DROPPED_ON_COPY[codec]]


def is_splice_point(codec: Codec, nals: Iterable[bytes]) -> bool:
    """Can decoding start at this access unit with new parameter sets?

    H.264 only at an IDR picture (an SPS may change only there). HEVC at IDR, BLA and CRA
    pictures: a CRA is preceded by an end-of-sequence unit, which makes it start a new
    coded video sequence.
    """
    types = {nal_type(codec, nal) for nal in nals}
    if codec is Codec.H264:
        return _H264_IDR in types
    return any(_HEVC_BLA_FIRST <= kind <= _HEVC_CRA for kind in types)


def may_be_referenced(codec: Codec, nals: Iterable[bytes]) -> bool:
    """False only for an H.264 picture no other picture uses (``nal_ref_idc`` 0).

    Such a picture need not be decoded unless it is shown. HEVC's non-reference types only
    hold within a temporal sub-layer, so HEVC pictures are always assumed referenced.
    """
    if codec is Codec.HEVC:
        return True
    slices = [nal for nal in nals if nal_type(codec, nal) in (_H264_NON_IDR_SLICE, _H264_IDR)]
    return not slices or any(nal[0] & 0x60 for nal in slices)


def h264_parameter_set_ids(nals: Iterable[bytes]) -> set[int]:
    """The ``seq_parameter_set_id`` of every SPS and ``pic_parameter_set_id`` of every PPS."""
    ids = set()
    for nal in nals:
        kind = nal_type(Codec.H264, nal)
        if kind == _H264_SPS:
            # after profile_idc, the constraint flags and level_idc: 24 bits
            ids.add(Rbsp.of(nal[1:]).exp_golomb(24)[0])
        elif kind == _H264_PPS:
            ids.add(Rbsp.of(nal[1:]).exp_golomb(0)[0])
    return ids


@dataclass(frozen=True)
class Rbsp:
    """An RBSP (a NAL unit's payload without emulation prevention) as one big integer:
    fields read and rewritten by bit position."""

    value: int
    length: int

    @classmethod
    def of(cls, payload: bytes) -> "Rbsp":
        """The RBSP of a NAL unit's ``payload`` (what follows its header)."""
        rbsp = payload.replace(b"\x00\x00\x03", b"\x00\x00")
        return cls(int.from_bytes(rbsp, "big"), 8 * len(rbsp))

    def fixed(self, position: int, width: int) -> int:
        return (self.value >> (self.length - position - width)) & ((1 << width) - 1)

    def exp_golomb(self, position: int) -> tuple[int, int]:
        """The ue(v) at ``position`` and the position after it."""
        zeros = 0
        while not self.fixed(position + zeros, 1):
            zeros += 1
        width = 2 * zeros + 1
        return self.fixed(position, width) - 1, position + width

    def with_fixed(self, position: int, width: int, number: int) -> "Rbsp":
        return self._replaced(position, width, number, width)

    def with_exp_golomb(self, position: int, number: int, *, padded: bool) -> "Rbsp":
        """The ue(v) at ``position`` replaced by ``number``. ``padded``: the RBSP ends in
        stop-bit padding, rebuilt for the new length; otherwise the length must change by
        whole bytes (a slice header before byte-aligned data)."""
        old_end = self.exp_golomb(position)[1]
        code = number + 1
        width = 2 * code.bit_length() - 1
        if padded:
            return self._unpadded()._replaced(position, old_end - position, code, width)._padded()
        if (width - (old_end - position)) % 8:
            raise ValueError(f"ue({number}) at bit {position} would move byte-aligned data")
        return self._replaced(position, old_end - position, code, width)

    def escaped(self) -> bytes:
        """The payload again: emulation prevention added back (a final zero run too)."""
        rbsp = self.value.to_bytes(self.length // 8, "big")
        return re.sub(rb"\x00\x00(?=[\x00-\x03]|\Z)", b"\x00\x00\x03", rbsp)

    def _replaced(self, position: int, old_width: int, number: int, width: int) -> "Rbsp":
        after = self.length - position - old_width
        head = self.value >> (after + old_width)
        tail = self.value & ((1 << after) - 1)
        value = (((head << width) | number) << after) | tail
        return Rbsp(value, self.length - old_width + width)

    def _unpadded(self) -> "Rbsp":
        """Without the stop bit and the zeros after it."""
        trailing = (self.value & -self.value).bit_length()
        return Rbsp(self.value >> trailing, self.length - trailing)

    def _padded(self) -> "Rbsp":
        padding = -(self.length + 1) % 8
        return Rbsp(((self.value << 1) | 1) << padding, self.length + 1 + padding)
