"""Renumber x265's HEVC parameter sets so they sit beside the source's in one ``hvcC``.

A spliced HEVC clip holds pictures of two encoders. With ``hvc1`` (what Apple's players
want) every parameter set must be in the sample description, so the re-encoder's VPS, SPS
and PPS need ids the source does not use; x265 always writes id 0 and has no option to
change it. The ids are rewritten in the bitstream:

- VPS and SPS carry the VPS id as a fixed 4-bit field;
- the SPS id (Exp-Golomb) follows the SPS's fixed-size profile/tier/level, the PPS starts
  with its own id and its SPS id; both end in stop-bit padding, which is rebuilt;
- every slice header names its PPS in the third field. Slice data starts byte-aligned, so
  its PPS id is rewritten only with a code exactly 8 bits longer than the old one:
  ``ue(0)`` is 1 bit, ``ue(15..30)`` are 9.
"""

import re
from dataclasses import dataclass

from cutting.errors import CutError
from cutting.nal import Codec, nal_type

_VPS, _SPS, _PPS = 32, 33, 34
_LAST_VCL = 31
_IRAP = range(16, 24)
_NAL_HEADER_BYTES = 2
# sps_video_parameter_set_id(4) max_sub_layers_minus1(3) temporal_id_nesting(1), then
# profile_tier_level: 88 bits of general profile and 8 of level, then per sub-layer.
_GENERAL_PTL_END = 4 + 3 + 1 + 88 + 8
_SUB_LAYER_PROFILE_BITS, _SUB_LAYER_LEVEL_BITS = 88, 8
SLICE_PPS_IDS = range(15, 31)


@dataclass(frozen=True)
class ParameterSetIds:
    vps: int
    sps: int
    pps: int


def source_ids(parameter_sets: list[bytes]) -> tuple[set[int], set[int], set[int]]:
    """The VPS, SPS and PPS ids the source's parameter sets use."""
    vps, sps, pps = set(), set(), set()
    for nal in parameter_sets:
        bits = _Bits.of(nal)
        kind = nal_type(Codec.HEVC, nal)
        if kind == _VPS:
            vps.add(bits.fixed(0, 4))
        elif kind == _SPS:
            sps.add(bits.exp_golomb(_sps_id_bit(bits))[0])
        elif kind == _PPS:
            pps.add(bits.exp_golomb(0)[0])
    return vps, sps, pps


def free_ids(parameter_sets: list[bytes]) -> ParameterSetIds:
    """Ids for the re-encoder's sets that none of the source's ``parameter_sets`` use."""
    vps, sps, pps = source_ids(parameter_sets)
    return ParameterSetIds(
        vps=next(candidate for candidate in range(16) if candidate not in vps),
        sps=next(candidate for candidate in range(16) if candidate not in sps),
        pps=next(candidate for candidate in SLICE_PPS_IDS if candidate not in pps),
    )


def renumbered(nal: bytes, ids: ParameterSetIds) -> bytes:
    """``nal`` (an x265 parameter set or slice, all ids 0) with ``ids`` instead."""
    kind = nal_type(Codec.HEVC, nal)
    bits = _Bits.of(nal)
    if kind == _VPS:
        bits = bits.with_fixed(0, 4, ids.vps)
    elif kind == _SPS:
        bits = bits.with_fixed(0, 4, ids.vps)
        bits = bits.with_exp_golomb(_sps_id_bit(bits), ids.sps, padded=True)
    elif kind == _PPS:
        bits = bits.with_exp_golomb(0, ids.pps, padded=True)
        bits = bits.with_exp_golomb(bits.exp_golomb(0)[1], ids.sps, padded=True)
    elif kind <= _LAST_VCL:
        position = 2 if kind in _IRAP else 1
        bits = bits.with_exp_golomb(position, ids.pps, padded=False)
    else:
        return nal
    return nal[:_NAL_HEADER_BYTES] + bits.escaped()


def _sps_id_bit(sps: "_Bits") -> int:
    """Where the SPS id starts: after profile_tier_level, whose size depends on sub-layers."""
    sub_layers = sps.fixed(4, 3)
    if not sub_layers:
        return _GENERAL_PTL_END
    position = _GENERAL_PTL_END + 16  # two presence flags per sub-layer, padded to 8 pairs
    for layer in range(sub_layers):
        flags = _GENERAL_PTL_END + 2 * layer
        position += _SUB_LAYER_PROFILE_BITS * sps.fixed(flags, 1)
        position += _SUB_LAYER_LEVEL_BITS * sps.fixed(flags + 1, 1)
    return position


@dataclass(frozen=True)
class _Bits:
    """An RBSP (a NAL unit's payload without emulation prevention) as one big integer."""

    value: int
    length: int

    @classmethod
    def of(cls, nal: bytes) -> "_Bits":
        payload = nal[_NAL_HEADER_BYTES:].replace(b"\x00\x00\x03", b"\x00\x00")
        return cls(int.from_bytes(payload, "big"), 8 * len(payload))

    def fixed(self, position: int, width: int) -> int:
        return (self.value >> (self.length - position - width)) & ((1 << width) - 1)

    def exp_golomb(self, position: int) -> tuple[int, int]:
        """The ue(v) at ``position`` and the position after it."""
        zeros = 0
        while not self.fixed(position + zeros, 1):
            zeros += 1
        width = 2 * zeros + 1
        return self.fixed(position, width) - 1, position + width

    def with_fixed(self, position: int, width: int, number: int) -> "_Bits":
        return self._replaced(position, width, number, width)

    def with_exp_golomb(self, position: int, number: int, *, padded: bool) -> "_Bits":
        """The ue(v) at ``position`` replaced by ``number``. ``padded``: the RBSP ends in
        stop-bit padding, rebuilt for the new length; otherwise the length must change by
        whole bytes (a slice header before byte-aligned data)."""
        old_end = self.exp_golomb(position)[1]
        code = number + 1
        width = 2 * code.bit_length() - 1
        if padded:
            return self._unpadded()._replaced(position, old_end - position, code, width)._padded()
        if (width - (old_end - position)) % 8:
            raise CutError(f"a slice's PPS id cannot become {number} without moving its data")
        return self._replaced(position, old_end - position, code, width)

    def escaped(self) -> bytes:
        rbsp = self.value.to_bytes(self.length // 8, "big")
        return re.sub(rb"\x00\x00(?=[\x00-\x03]|\Z)", b"\x00\x00\x03", rbsp)

    def _replaced(self, position: int, old_width: int, number: int, width: int) -> "_Bits":
        after = self.length - position - old_width
        head = self.value >> (after + old_width)
        tail = self.value & ((1 << after) - 1)
        value = (((head << width) | number) << after) | tail
        return _Bits(value, self.length - old_width + width)

    def _unpadded(self) -> "_Bits":
        """Without the stop bit and the zeros after it."""
        trailing = (self.value & -self.value).bit_length()
        return _Bits(self.value >> trailing, self.length - trailing)

    def _padded(self) -> "_Bits":
        padding = -(self.length + 1) % 8
        return _Bits(((self.value << 1) | 1) << padding, self.length + 1 + padding)
