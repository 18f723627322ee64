"""Free text within a byte budget: cut at a character boundary, with a marker saying how much went.

Messages and metadata come from other programs and can be any size; what gpuheal passes on (a
Temporal payload, a condition message, a spool entry) cannot. The cut is deterministic, so the
same text always becomes the same shorter text, and a reader sees that something was cut and how
much: `XID 79 on GPU-… [truncated 3911 bytes]`.
"""

from __future__ import annotations


def marker(dropped: int) -> str:
    """What replaces the cut-off end of a text that lost `dropped` bytes."""
    return f"… [truncated {dropped} bytes]"


def truncate(text: str, max_bytes: int) -> str:
    """`text` when its UTF-8 form fits in `max_bytes`; else its longest prefix that fits with the marker.

    The result never exceeds `max_bytes` (an empty string when even the marker does not fit).
    """
    encoded = text.encode("utf-8", "surrogatepass")
    if len(encoded) <= max_bytes:
        return text
    # The marker names fewer dropped bytes than the whole text has, so it is never longer than this.
    room = max_bytes - len(marker(len(encoded)).encode())
    if room < 0:
        return ""
    # Decoding drops a character split by the cut, so the prefix may be a few bytes under `room`.
    kept = encoded[:room].decode("utf-8", "ignore")
    return kept + marker(len(encoded) - len(kept.encode("utf-8", "surrogatepass")))
