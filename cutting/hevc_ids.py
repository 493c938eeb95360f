"""Renumber x265's HEVC parameter sets so they sit beside the source's in one ``hvcC``.

A spliced HEVC clip holds pictures of two encoders. With ``hvc1`` (what Apple's players
want) every parameter set must be in the sample description, so the re-encoder's VPS, SPS
and PPS need ids the source does not use; x265 always writes id 0 and has no option to
change it. The ids are rewritten in the bitstream:

- VPS and SPS carry the VPS id as a fixed 4-bit field;
- the SPS id (Exp-Golomb) follows the SPS's profile/tier/level, the PPS starts
  with its own id and its SPS id; both end in stop-bit padding, which is rebuilt;
- every slice header names its PPS in the third field. Slice data starts byte-aligned, so
  its PPS id is rewritten only with a code exactly 8 bits longer than the old one:
  ``ue(0)`` is 1 bit, ``ue(15..30)`` are 9.
"""

from dataclasses import dataclass

from cutting.nal import Codec, Rbsp, nal_type

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
        bits = Rbsp.of(nal[_NAL_HEADER_BYTES:])
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
    if kind > _LAST_VCL and kind not in (_VPS, _SPS, _PPS):
        return nal  # SEI and the like name no parameter set
    bits = Rbsp.of(nal[_NAL_HEADER_BYTES:])
    if kind == _VPS:
        bits = bits.with_fixed(0, 4, ids.vps)
    elif kind == _SPS:
        bits = bits.with_fixed(0, 4, ids.vps)
        bits = bits.with_exp_golomb(_sps_id_bit(bits), ids.sps, padded=True)
    elif kind == _PPS:
        bits = bits.with_exp_golomb(0, ids.pps, padded=True)
        bits = bits.with_exp_golomb(bits.exp_golomb(0)[1], ids.sps, padded=True)
    else:
        position = 2 if kind in _IRAP else 1
        bits = bits.with_exp_golomb(position, ids.pps, padded=False)
    return nal[:_NAL_HEADER_BYTES] + bits.escaped()


def _sps_id_bit(sps: Rbsp) -> int:
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
