"""Comparing dotted version strings such as ``1.4.2``."""

import functools
import itertools


def _components(version: str) -> list[int]:
    return [int(part) for part in version.split(".")]


def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``."""
    for x, y in itertools.zip_longest(_components(a), _components(b), fillvalue=0):
        if x != y:
            return -1 if x < y else 1
    return 0


def newest(versions: list[str]) -> str:
    """Return the newest of ``versions``."""
    return max(versions, key=functools.cmp_to_key(compare_versions))
