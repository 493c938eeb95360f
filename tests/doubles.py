"""In-memory stand-ins for unit tests, where a real component would add nothing but time.

``MemoryBucket`` keeps the few ``google.cloud.storage`` semantics the request records rely
on: objects with generations, ``if_generation_match`` preconditions (0: only if absent),
``NotFound``, ``PreconditionFailed`` and listing by prefix. The same records are tested
against the real GCS emulator in ``tests/test_outcomes.py``.
"""

from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.api_core.exceptions import NotFound, PreconditionFailed


@dataclass
class _Stored:
    data: bytes
    generation: int
    updated: datetime


@dataclass
class MemoryBucket:
    objects: dict[str, _Stored] = field(default_factory=dict)
    generations: int = 0

    def blob(self, name: str) -> "MemoryBlob":
        return MemoryBlob(self, name)

    def names(self) -> list[str]:
        return sorted(self.objects)

    def list_blobs(self, prefix: str = "") -> list["MemoryBlob"]:
        return [self.blob(name) for name in self.names() if name.startswith(prefix)]


class MemoryBlob:
    def __init__(self, bucket: MemoryBucket, name: str) -> None:
        self._bucket = bucket
        self.name = name
        self.generation: int | None = None
        self.updated: datetime | None = None

    def download_as_bytes(self) -> bytes:
        return self._stored().data

    def upload_from_string(
        self,
        data: bytes | str,
        content_type: str | None = None,
        if_generation_match: int | None = None,
    ) -> None:
        self._check(if_generation_match)
        self._bucket.generations += 1
        stored = _Stored(
            data.encode() if isinstance(data, str) else data,
            self._bucket.generations,
            datetime.now(UTC),
        )
        self._bucket.objects[self.name] = stored
        self.generation, self.updated = stored.generation, stored.updated

    def reload(self) -> None:
        stored = self._stored()
        self.generation, self.updated = stored.generation, stored.updated

    def delete(self, if_generation_match: int | None = None) -> None:
        self._stored()
        self._check(if_generation_match)
        del self._bucket.objects[self.name]

    def _stored(self) -> _Stored:
        try:
            return self._bucket.objects[self.name]
        except KeyError:
            raise NotFound(f"no object {self.name}") from None

    def _check(self, generation: int | None) -> None:
        if generation is None:
            return
        current = self._bucket.objects.get(self.name)
        if (current.generation if current else 0) != generation:
            raise PreconditionFailed(f"{self.name}: generation is not {generation}")
