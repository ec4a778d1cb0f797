"""Whether the Hugging Face hub can be reached, asked once per process and answered in milliseconds.

Why: offline, `from_pretrained` and `load_dataset` retry for about 25 s (five retries with back-off) before they fail,
once per file asked for. Loading code asks here first and, when the hub cannot be reached, uses the local cache or
fails at once with a message that says how to use local files.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")
_PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def hub_offline_mode() -> bool:
    """HF_HUB_OFFLINE is set: the user asked for the local cache only."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


@functools.lru_cache(maxsize=None)
def hub_reachable(timeout_s: float = 3.0) -> bool:
    """A TCP connection to the hub's endpoint (HF_ENDPOINT, default huggingface.co) opens within `timeout_s`.

    Behind a proxy a direct connection says nothing, so the answer is then yes and the libraries decide.
    """
    if hub_offline_mode():
        return False
    if any(os.environ.get(name) for name in _PROXY_VARIABLES):
        return True
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def hub_expected_but_unreachable() -> bool:
    """The user did not ask for the cache only (HF_HUB_OFFLINE), yet the hub cannot be reached: data that would come
    from the hub can only fail, so say so now."""
    return not hub_offline_mode() and not hub_reachable()
