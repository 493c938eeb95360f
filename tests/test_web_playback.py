"""Clips play where M6 plays them: in a browser (Debian's headless Chromium).

The clips are cut in process and served from a local HTTP server with a page that plays
each one muted and posts back what the <video> element reports once playback is past
0.5 s: readyState, videoWidth, decoded frames and currentTime. Chromium cannot decode
HEVC (``canPlayType`` is "" for hvc1), so HEVC recordings reach the web as ``web`` output
(H.264). ``.ci/run`` installs Chromium; without it this module fails and says so.
"""

import json
import shutil
import subprocess
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from clipping.messages import ClipMode
from clipping.outputs import ClipOutput
from cutting import cut_clip
from tests.media import SourceSpec, make_source

# A guard against a browser that never answers; playback itself takes a few seconds.
RESULT_GUARD_SECONDS = 300
PAGE = """<!doctype html><html><body><video id="clip" muted playsinline></video><script>
const video = document.getElementById("clip");
const clips = CLIPS;
const results = {hvc1: video.canPlayType('video/mp4; codecs="hvc1.1.6.L93.B0"')};
function play(index) {
  if (index === clips.length) {
    fetch("/results", {method: "POST", body: JSON.stringify(results)});
    return;
  }
  const name = clips[index];
  const report = () => {
    const quality = video.getVideoPlaybackQuality();
    results[name] = {readyState: video.readyState, videoWidth: video.videoWidth,
                     frames: quality.totalVideoFrames, currentTime: video.currentTime};
    video.ontimeupdate = video.onerror = null;
    play(index + 1);
  };
  video.ontimeupdate = () => { if (video.currentTime > 0.5) report(); };
  video.onerror = () => {
    results[name] = {error: video.error && video.error.message};
    play(index + 1);
  };
  video.src = name;
  video.play();
}
play(0);
</script></body></html>
"""


pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("nas_root_is_pytest_tmp")]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: apt-get install chromium (.ci/run does)")
    return path


def test_web_clips_play_in_chromium(chromium: str, tmp_path: Path) -> None:
    h264 = make_source(tmp_path, SourceSpec(seconds=6))
    hevc = make_source(tmp_path, SourceSpec(codec="hevc", seconds=6))
    site = tmp_path / "site"
    clips = {
        "h264-accurate.mp4": (h264, ClipMode.ACCURATE),
        "hevc-accurate.mp4": (hevc, ClipMode.ACCURATE),
        "hevc-copy.mp4": (hevc, ClipMode.COPY),
    }
    for name, (source, mode) in clips.items():
        cut_clip(source, 1.2, 4.5, mode, site / name, output_for=ClipOutput.WEB)
    results = played_in_chromium(chromium, site, list(clips), tmp_path / "profile")
    assert results.pop("hvc1") == ""  # why HEVC recordings need the web output
    for name in clips:
        played = results[name]
        assert played.get("error") is None, (name, played)
        assert played["readyState"] == 4, (name, played)
        assert played["videoWidth"] > 0, (name, played)
        assert played["frames"] > 0, (name, played)
        assert played["currentTime"] > 0.5, (name, played)


def played_in_chromium(
    chromium: str, site: Path, clips: list[str], profile: Path
) -> dict[str, Any]:
    """Open the playing page for ``clips`` (files in ``site``) and return what it posts."""
    (site / "index.html").write_text(PAGE.replace("CLIPS", json.dumps(clips)))
    posted: dict[str, Any] = {}
    arrived = threading.Event()

    class Site(SimpleHTTPRequestHandler):
        def do_POST(self) -> None:
            posted.update(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()
            arrived.set()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Site, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    browser = subprocess.Popen(
        [
            chromium,
            "--headless=new",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
            f"--user-data-dir={profile}",
            f"http://127.0.0.1:{server.server_address[1]}/index.html",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert arrived.wait(RESULT_GUARD_SECONDS), "Chromium never posted its results"
    finally:
        browser.terminate()
        browser.wait()
        server.shutdown()
        server.server_close()
    return posted
