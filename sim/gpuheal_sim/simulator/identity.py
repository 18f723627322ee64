"""The identifiers the simulated cluster mints: object uids, generated-name suffixes, template hashes."""

from __future__ import annotations

import hashlib
import random
import uuid

# Kubernetes' name-suffix alphabet: no vowels (no accidental words) and no look-alike digits.
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def new_uid() -> str:
    """A fresh object uid (a random UUID, as the API server assigns)."""
    return str(uuid.uuid4())


def random_suffix(rng: random.Random, length: int = 5) -> str:
    """A generated-name suffix like the API server's ``generateName`` (``trainer-7d9f-x2k4q``)."""
    return "".join(rng.choice(_SUFFIX_ALPHABET) for _ in range(length))


def stable_hash(text: str, length: int = 10) -> str:
    """A deterministic short hash in the suffix alphabet (used for pod-template-hash)."""

    digest = int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")
    chars = []
    for _ in range(length):
        digest, rem = divmod(digest, len(_SUFFIX_ALPHABET))
        chars.append(_SUFFIX_ALPHABET[rem])
    return "".join(chars)
