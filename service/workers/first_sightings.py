"""Telling a first sighting from a repeat, in bounded memory: what a worker logs "once".

Hand-written: an insertion-ordered dict used as a least-recently-seen set is all it takes,
and the one well-known library for it (cachetools) is not otherwise a dependency.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable


class FirstSightings:
    """Remembers at most `capacity` keys, the least recently seen forgotten first: a key
    forgotten and then seen again counts as a first sighting again."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._seen: OrderedDict[Hashable, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def first(self, key: Hashable) -> bool:
        """Note `key` as seen now; True when it was not remembered."""
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True
