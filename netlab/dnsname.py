"""DNS names as rules match them: one ``name_matches`` for the oracle, the compiler, coverage and
the in-lab middleboxes (which run it per packet: keep it cheap), and ``wire_name`` for a name read
off the wire. A scenario's own names are checked and put in IDNA form by the loader (idna_name)."""

from __future__ import annotations

__all__ = ["name_matches", "wire_name"]


def name_matches(name: str | None, pattern: str, exact: bool = False) -> bool:
    """``name`` is ``pattern`` or, unless ``exact``, a name under it; the pattern case-insensitively
    and without a trailing dot. ``name`` is already lower-case (wire_name, the loader); None never matches."""
    if not name:
        return False
    pattern = pattern.rstrip(".").lower()
    return name == pattern or (not exact and name.endswith("." + pattern))


def wire_name(raw: bytes | str) -> str | None:
    """A host name read off the wire, lower-case without one trailing dot; None unless it is a
    plausible ASCII host name."""
    try:
        name = raw.decode("ascii") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        return None
    name = name.strip().rstrip(".").lower()
    if not name or len(name) > 253 or any(c.isspace() or ord(c) < 0x21 or ord(c) > 0x7E for c in name):
        return None
    return name
