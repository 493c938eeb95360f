"""NAS sites: a site is a set of NAS roots and the workers that can read them.

    CLIPPING_SITES="vegas=/mnt/nas-vegas;macau=/mnt/nas-macau:/mnt/nas-macau-2"

Each site is a work queue of ``nas-pool`` named after it (``python -m deployments``
creates them); a site's workers poll only their queue (``python -m agent_pool.worker
--site vegas``), and the listener creates each run in the queue of the site whose root
holds the recording. A rerun (a crash, a drained agent handing over) stays in its queue,
so it moves to another worker of the same site only. A path no site serves is refused
with that reason. Unset: one pool-wide site, as before sites existed (every worker can
read every NAS root).
"""

import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, field_validator

SITE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")


class Site(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    roots: tuple[Path, ...]

    @field_validator("name")
    @classmethod
    def _a_queue_name(cls, name: str) -> str:
        if not SITE_NAME.fullmatch(name):
            raise ValueError(f"site {name!r}: 1-32 lowercase letters, digits and '-'")
        return name

    @property
    def work_queue(self) -> str:
        return f"site-{self.name}"


def parse_sites(text: str) -> tuple[Site, ...]:
    """``name=root:root;name=root`` as sites."""
    sites = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        name, separator, roots = entry.partition("=")
        if not separator:
            raise ValueError(f"site entry {entry!r} is not name=root[:root...]")
        sites.append(
            Site(name=name.strip(), roots=tuple(Path(r) for r in roots.split(os.pathsep) if r))
        )
    return tuple(sites)


def site_serving(path: Path, sites: tuple[Site, ...]) -> Site | None:
    """The site whose root holds ``path`` (the most specific root, if roots nest)."""
    best: tuple[int, Site] | None = None
    for site in sites:
        for root in site.roots:
            holds = path == root or root in path.parents
            if holds and (best is None or len(root.parts) > best[0]):
                best = (len(root.parts), site)
    return best[1] if best else None
