"""Cutting clips out of small generated recordings: exact frames, every input kind, bad input.

Each source frame shows its own number (``tests.media``), so a clip is checked by the
frames it really holds: the first must be the first source frame at or after START, the
last the last one before END, with nothing missing, timestamps from 0, audio starting with
the video, and no decoding error anywhere in the clip.
"""

import shutil
from pathlib import Path

import av
import pytest

from clipping.messages import ClipMode
from clipping.outputs import ClipOutput
from cutting import CutError, cut_clip, keyframes_near, probe, write_poster
from cutting.verify import packet_digest, verify_clip
from tests.clip_checks import (
    FRAME,
    assert_exact,
    clean_frames,
    expected_numbers,
)
from tests.media import FPS, SourceSpec, ffmpeg, frame_number, make_source, written_long_ago

MP4 = SourceSpec()
INPUT_KINDS = [
    pytest.param(MP4, id="mp4-h264-bframes"),
    pytest.param(SourceSpec(bframes=0), id="mp4-h264-no-bframes"),
    pytest.param(SourceSpec(gop_seconds=1), id="mp4-h264-gop1"),
    pytest.param(SourceSpec(gop_seconds=10, seconds=24), id="mp4-h264-gop10"),
    pytest.param(SourceSpec(container="ts", ts_offset=10), id="ts-h264-offset"),
    pytest.param(SourceSpec(container="mkv"), id="mkv-h264"),
    pytest.param(SourceSpec(container="mov"), id="mov-h264"),
    pytest.param(SourceSpec(codec="hevc"), id="mp4-hevc"),
    pytest.param(SourceSpec(codec="hevc", container="ts", ts_offset=5), id="ts-hevc-offset"),
    pytest.param(SourceSpec(codec="hevc", container="mkv", open_gop=True), id="mkv-hevc-open-gop"),
    pytest.param(SourceSpec(codec="hevc", open_gop=True, gop_seconds=4), id="mp4-hevc-open-gop"),
    pytest.param(SourceSpec(open_gop=True, gop_seconds=4), id="mp4-h264-open-gop"),
    pytest.param(SourceSpec(audio_tracks=0), id="mp4-no-audio"),
    pytest.param(SourceSpec(audio_tracks=2), id="mp4-two-audio-tracks"),
]
RANGES = [
    pytest.param(2.5, 7.45, id="mid-gop-start-and-end"),
    pytest.param(4.0, 8.0, id="on-keyframes"),
    pytest.param(0.1, 0.9, id="inside-first-gop"),
    pytest.param(5.03, 11.5, id="late"),
]


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nas_root_is_pytest_tmp")]


@pytest.fixture(scope="session")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("sources")


@pytest.mark.parametrize(("start", "end"), RANGES)
@pytest.mark.parametrize("spec", INPUT_KINDS)
def test_accurate_clip_holds_exactly_the_requested_frames(
    sources: Path, tmp_path: Path, spec: SourceSpec, start: float, end: float
) -> None:
    source = make_source(sources, spec)
    clip = cut_clip(source, start, end, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert_exact(clip, source, start, end)
    assert clip.mode is ClipMode.ACCURATE
    assert not clip.clamped
    with av.open(str(clip.path)) as container:
        assert container.streams.video[0].codec_context.name == spec.codec
        assert len(container.streams.audio) == spec.audio_tracks


def test_accurate_copies_most_of_a_long_clip(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    clip = cut_clip(source, 2.5, 7.45, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    keyframes = keyframes_near(source, 2.5)
    head = round((keyframes.after - 2.5) * FPS)
    assert head <= clip.reencoded_frames <= head + 4  # head plus at most a few B-frames at the end


def test_accurate_on_a_keyframe_reencodes_nothing_at_the_start(
    sources: Path, tmp_path: Path
) -> None:
    source = make_source(sources, SourceSpec(bframes=0))
    clip = cut_clip(source, 4.0, 8.0, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert clip.reencoded_frames == 0


def test_accurate_h264_open_gop_splices_only_at_idr_pictures(sources: Path, tmp_path: Path) -> None:
    """x264's open-GOP keyframes are recovery points, not IDRs: nothing can be spliced there,
    so the clip is re-encoded up to the next IDR (here: to its end) and still exact."""
    source = make_source(sources, SourceSpec(open_gop=True, gop_seconds=4))
    clip = cut_clip(source, 2.5, 7.45, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert clip.reencoded_frames == len(expected_numbers(source, 2.5, 7.45))


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(MP4, id="mp4"),
        pytest.param(SourceSpec(codec="hevc", container="ts", ts_offset=5), id="ts-hevc"),
    ],
)
def test_reencode_clip_holds_exactly_the_requested_frames(
    sources: Path, tmp_path: Path, spec: SourceSpec
) -> None:
    source = make_source(sources, spec)
    clip = cut_clip(source, 2.5, 7.45, ClipMode.REENCODE, tmp_path / "clip.mp4")
    assert_exact(clip, source, 2.5, 7.45)
    assert clip.reencoded_frames == len(expected_numbers(source, 2.5, 7.45))


@pytest.mark.parametrize(
    "spec",
    [
        pytest.param(MP4, id="mp4"),
        pytest.param(SourceSpec(container="ts", ts_offset=10), id="ts"),
        pytest.param(SourceSpec(container="mkv"), id="mkv"),
    ],
)
def test_copy_clip_starts_at_the_keyframe_before_start_and_covers_the_range(
    sources: Path, tmp_path: Path, spec: SourceSpec
) -> None:
    source = make_source(sources, spec)
    clip = cut_clip(source, 3.0, 7.45, ClipMode.COPY, tmp_path / "clip.mp4")
    numbers = [frame.number for frame in clean_frames(clip.path)]
    keyframe = keyframes_near(source, 3.0).at_or_before
    assert keyframe is not None
    wanted = expected_numbers(source, keyframe, 7.45)  # a complete GOP before the start
    assert numbers[: len(wanted)] == wanted
    assert clip.reencoded_frames == 0
    assert clip.first_frame_seconds == pytest.approx(0, abs=1e-3)
    assert clip.start_seconds == pytest.approx(keyframe, abs=1e-3)


def test_end_past_the_recording_is_clamped_and_reported(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    clip = cut_clip(source, 9.5, 99.0, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert clip.clamped
    assert clip.end_seconds == pytest.approx(probe(source).duration_seconds, abs=FRAME)
    assert_exact(clip, source, 9.5, 99.0)


def test_progress_runs_from_0_to_100(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    seen: list[float] = []
    cut_clip(source, 0.5, 11.0, ClipMode.ACCURATE, tmp_path / "clip.mp4", on_progress=seen.append)
    assert seen[0] == 0.0
    assert seen[-1] == 100.0
    assert seen == sorted(seen)
    assert len(set(seen)) > 10


def test_poster_is_a_jpeg_of_the_first_frame(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    clip = cut_clip(source, 2.5, 4.5, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    poster = write_poster(clip.path, tmp_path / "poster.jpg")
    with av.open(str(poster)) as container:
        assert container.streams.video[0].codec_context.name == "mjpeg"
        image = next(container.decode(video=0))
    assert frame_number(image) == expected_numbers(source, 2.5, 4.5)[0]


def test_probe_finds_streams_and_keyframes(sources: Path) -> None:
    source = make_source(sources, SourceSpec(container="ts", ts_offset=10, audio_tracks=2))
    info = probe(source)
    assert info.video_codec == "h264"
    assert info.audio_codecs == ("aac", "aac")
    assert (info.width, info.height, info.frame_rate) == (192, 108, FPS)
    assert info.duration_seconds == pytest.approx(12.0, abs=0.1)
    assert info.origin_seconds > 10
    keyframes = keyframes_near(source, 5.0)
    assert keyframes.at_or_before == pytest.approx(4.0, abs=0.05)
    assert keyframes.after == pytest.approx(6.0, abs=0.05)


# Bad input: every case fails with a specific reason.


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(CutError, match="not found"):
        cut_clip(tmp_path / "nope.mp4", 0, 1, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_unreadable_source(sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = make_source(sources, MP4)

    def denied(*_args: object, **_kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(source))

    monkeypatch.setattr(av, "open", denied)
    with pytest.raises(CutError, match="not readable"):
        cut_clip(source, 0, 1, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    source = tmp_path / "notes.mp4"
    source.write_text("these are not the frames you are looking for\n" * 100)
    written_long_ago(source)
    with pytest.raises(CutError, match="not a readable video"):
        cut_clip(source, 0, 1, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_audio_only_file_is_not_a_video(tmp_path: Path) -> None:
    source = tmp_path / "sound.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=r=48000", "-t", "2", "-c:a", "aac", str(source))
    written_long_ago(source)
    with pytest.raises(CutError, match="no video stream"):
        cut_clip(source, 0, 1, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_an_mp4_without_its_index_is_not_finalized(sources: Path, tmp_path: Path) -> None:
    source = tmp_path / "truncated.mp4"
    data = make_source(sources, MP4).read_bytes()
    source.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end
    with pytest.raises(CutError, match=r"not finalized .* record to TS, MKV or fragmented MP4"):
        cut_clip(source, 0, 1, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_corrupt_frames_fail_the_cut(sources: Path, tmp_path: Path) -> None:
    source = tmp_path / "corrupt.mp4"
    shutil.copy(make_source(sources, MP4), source)
    scramble_video_packet(source, seconds=2.0)  # the keyframe a cut from 2.5 s decodes from
    with pytest.raises(CutError, match="source is corrupt"):
        cut_clip(source, 2.5, 5.0, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()


def scramble_video_packet(path: Path, seconds: float) -> None:
    """Overwrite the middle third of the video packet shown at ``seconds`` with garbage."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packet = min(
            (packet for packet in container.demux(stream) if packet.pts is not None),
            key=lambda packet: abs(float(packet.pts * stream.time_base) - seconds),
        )
        position, size = packet.pos, packet.size
    with path.open("r+b") as file:
        file.seek(position + size // 3)
        file.write(bytes((index * 37) % 251 for index in range(size // 3)))


def test_start_at_or_past_the_end(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    with pytest.raises(CutError, match=r"start 12\.000s is at or past the end"):
        cut_clip(source, 12.0, 14.0, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_range_longer_than_the_maximum(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    with pytest.raises(CutError, match="maximum is 1800s"):
        cut_clip(source, 0, 1801, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    with pytest.raises(CutError, match="maximum is 5s"):
        cut_clip(source, 0, 6, ClipMode.ACCURATE, tmp_path / "clip.mp4", max_clip_seconds=5)


@pytest.mark.parametrize(("start", "end", "reason"), [(-1, 2, "negative"), (3, 3, "not after")])
def test_empty_or_negative_range(
    sources: Path, tmp_path: Path, start: float, end: float, reason: str
) -> None:
    with pytest.raises(CutError, match=reason):
        cut_clip(make_source(sources, MP4), start, end, ClipMode.ACCURATE, tmp_path / "clip.mp4")


def test_audio_that_is_not_aac_is_refused(sources: Path, tmp_path: Path) -> None:
    source = tmp_path / "mp3.mkv"
    original = make_source(sources, MP4)
    ffmpeg("-i", str(original), "-c:v", "copy", "-c:a", "libmp3lame", str(source))
    with pytest.raises(CutError, match="only AAC"):
        cut_clip(source, 1, 2, ClipMode.ACCURATE, tmp_path / "clip.mp4")


# Verification: a broken clip is not shipped.


def test_verification_rejects_a_clip_of_the_wrong_length(sources: Path, tmp_path: Path) -> None:
    clip = cut_clip(make_source(sources, MP4), 1, 3, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    with pytest.raises(CutError, match=r"lasts 2\.000s, 2\.900s to 3\.100s expected"):
        verify_clip(clip.path, shortest_seconds=2.9, longest_seconds=3.1, audio_tracks=1)


def test_verification_rejects_a_clip_that_does_not_decode(sources: Path, tmp_path: Path) -> None:
    clip = cut_clip(make_source(sources, MP4), 1, 3, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    scramble_video_packet(clip.path, seconds=0.0)
    with pytest.raises(CutError, match="decoding errors"):
        verify_clip(clip.path, shortest_seconds=1.9, longest_seconds=2.1, audio_tracks=1)


def test_verification_decodes_the_last_gop_with_frame_threads(
    sources: Path, tmp_path: Path
) -> None:
    """A broken last frame is found, though the decoder reports it from a worker thread."""
    clip = cut_clip(make_source(sources, MP4), 1, 7, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    scramble_video_packet(clip.path, seconds=clip.duration_seconds - FRAME)
    with pytest.raises(CutError, match="decoding errors"):
        verify_clip(clip.path, shortest_seconds=5.9, longest_seconds=6.1, audio_tracks=1)


def test_verification_compares_every_video_packet_with_the_cut(
    sources: Path, tmp_path: Path
) -> None:
    """A copied packet in the middle, never decoded by the check, differs: found by its CRC."""
    clip = cut_clip(make_source(sources, MP4), 1, 7, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    with av.open(str(clip.path)) as container:
        digests = [
            packet_digest(bytes(p)) for p in container.demux(container.streams.video[0]) if p.size
        ]
    scramble_video_packet(clip.path, seconds=3.5)
    with pytest.raises(CutError, match=r"video packet \d+ is not the one cut"):
        verify_clip(
            clip.path,
            shortest_seconds=5.9,
            longest_seconds=6.1,
            audio_tracks=1,
            packet_digests=digests,
        )


def test_copy_that_cannot_be_clean_points_to_accurate(sources: Path, tmp_path: Path) -> None:
    """An open-GOP H.264 copy ends on pictures whose references were not copied."""
    source = make_source(sources, SourceSpec(open_gop=True, gop_seconds=4))
    with pytest.raises(CutError, match=r"failed verification: .* use mode accurate"):
        cut_clip(source, 2.5, 5.5, ClipMode.COPY, tmp_path / "clip.mp4")
    assert not (tmp_path / "clip.mp4").exists()
    clip = cut_clip(source, 2.5, 5.5, ClipMode.ACCURATE, tmp_path / "clip.mp4")
    assert_exact(clip, source, 2.5, 5.5)


HEVC = SourceSpec(codec="hevc")


@pytest.mark.parametrize("mode", list(ClipMode))
def test_web_output_of_hevc_is_h264_with_exactly_the_requested_frames(
    sources: Path, tmp_path: Path, mode: ClipMode
) -> None:
    source = make_source(sources, HEVC)
    clip = cut_clip(source, 2.5, 7.45, mode, tmp_path / "clip.mp4", output_for=ClipOutput.WEB)
    assert video_codec_and_tag(clip.path) == ("h264", "avc1")
    assert_exact(clip, source, 2.5, 7.45)  # copy too: the whole clip is re-encoded


@pytest.mark.parametrize("mode", list(ClipMode))
def test_hevc_clips_are_tagged_hvc1_in_every_mode(
    sources: Path, tmp_path: Path, mode: ClipMode
) -> None:
    """A spliced clip's re-encoded parts use parameter sets of their own ids, all in hvcC."""
    source = make_source(sources, HEVC)
    clip = cut_clip(source, 2.5, 7.45, mode, tmp_path / "clip.mp4", output_for=ClipOutput.SOURCE)
    assert video_codec_and_tag(clip.path) == ("hevc", "hvc1")
    if mode is not ClipMode.COPY:  # copy is keyframe-aligned
        assert_exact(clip, source, 2.5, 7.45)


def test_web_output_leaves_h264_to_the_smart_cut(sources: Path, tmp_path: Path) -> None:
    source = make_source(sources, MP4)
    clip = cut_clip(
        source, 2.5, 7.45, ClipMode.ACCURATE, tmp_path / "clip.mp4", output_for=ClipOutput.WEB
    )
    assert clip.reencoded_frames < 80  # the head and a few tail frames, not all 149
    assert video_codec_and_tag(clip.path) == ("h264", "avc1")


def video_codec_and_tag(clip: Path) -> tuple[str, str]:
    with av.open(str(clip)) as container:
        context = container.streams.video[0].codec_context
        return context.name, context.codec_tag
