"""NAS-root confinement: the only way a recording path becomes something we may open."""

import os
from collections.abc import Iterable
from pathlib import Path


class OutsideNasRoots(ValueError):
    """The path does not resolve inside any configured NAS root."""


def confine_to_nas_roots(path: str, roots: Iterable[Path]) -> Path:
    """Resolve ``path`` (following symlinks) and return it if it lies inside one of ``roots``.

    Symlinks are resolved as far as they exist on this host, so a link that escapes a root
    is refused on any host that can see it, and a purely lexical escape (``..``) is refused
    everywhere, including hosts that do not mount the NAS at all.
    """
    if "\x00" in path:
        raise OutsideNasRoots("nas_video_path contains a NUL byte")
    if not os.path.isabs(path):
        raise OutsideNasRoots("nas_video_path must be an absolute path")
    real = Path(os.path.realpath(path))
    for root in roots:
        if real.is_relative_to(os.path.realpath(root)):
            return real
    raise OutsideNasRoots("nas_video_path is outside the configured NAS roots")
