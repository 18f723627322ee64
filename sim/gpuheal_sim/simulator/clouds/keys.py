"""The RSA keys of the simulated clouds' service accounts: one per cloud, made once per process.

Making a 2048-bit RSA key takes a noticeable while (around a tenth of a second, far more on a busy
machine), and every simulated cluster serves every cloud: a fresh key per cluster made starting one
the slowest part of it. Each cluster still writes its own credentials file, with this key in it.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.asymmetric import rsa

_KEYS: dict[str, rsa.RSAPrivateKey] = {}
_LOCK = threading.Lock()


def service_account_key(cloud: str) -> rsa.RSAPrivateKey:
    """The 2048-bit RSA key (exponent 65537) of `cloud`'s service account in this process."""
    with _LOCK:
        key = _KEYS.get(cloud)
        if key is None:
            key = _KEYS[cloud] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key
