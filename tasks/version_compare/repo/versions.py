"""Comparing dotted version strings such as ``1.4.2``."""

import functools


def compare_versions(a: str, b: str) -> int:
    """Return -1, 0 or 1 as version ``a`` is older than, equal to or newer than ``b``."""
    if a == b:
        return 0
    return -1 if a < b else 1


def newest(versions: list[str]) -> str:
    """Return the newest of ``versions``."""
    return max(versions, key=functools.cmp_to_key(compare_versions))
