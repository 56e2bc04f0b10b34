"""A quick reachability probe, so that offline downloads fail in seconds instead of minutes.

TFDS downloads with `requests` and 10 retries with exponential backoff: with no network (even
when name resolution fails at once) a single file takes about 200 s to give up. The builders
probe the host first and raise `DataUnavailableError` at once when it cannot be reached.
"""

import socket
import threading
import time
import urllib.parse
import urllib.request
from typing import Any

PROBE_TIMEOUT_SECONDS = 5.0
"""Longest wait for name resolution, and separately for the TCP connection."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


def _endpoint(url: str) -> tuple[str, int]:
    """The host and port a download of `url` connects to, honouring `*_proxy` variables."""
    parts = urllib.parse.urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"No host in URL {url!r}.")
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname):
        proxy_parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if proxy_parts.hostname:
            return proxy_parts.hostname, proxy_parts.port or _DEFAULT_PORTS.get(
                proxy_parts.scheme, 80
            )
    return parts.hostname, parts.port or _DEFAULT_PORTS.get(parts.scheme, 80)


def unreachable_reason(url: str, timeout: float = PROBE_TIMEOUT_SECONDS) -> str | None:
    """Checks whether a TCP connection to the host serving `url` can be opened.

    Resolves the host (in a daemon thread, since `getaddrinfo` has no timeout of its own) and
    opens and closes one TCP connection to it, or to the proxy configured for the URL's
    scheme. Nothing is sent, so this takes one round trip when the network works.

    Args:
        url: An http(s) URL.
        timeout: Seconds to wait for name resolution and, separately, for the connection.

    Returns:
        `None` if the host is reachable, else a short reason such as
        `"cannot resolve example.org ([Errno -2] Name or service not known)"`.
    """
    host, port = _endpoint(url)
    result: dict[str, Any] = {}

    def resolve() -> None:
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as e:
            result["error"] = e

    resolver = threading.Thread(target=resolve, name=f"resolve {host}", daemon=True)
    resolver.start()
    resolver.join(timeout)
    if resolver.is_alive():
        return f"resolving {host} took more than {timeout:g} s"
    if "error" in result:
        return f"cannot resolve {host} ({result['error']})"
    # Connect to the resolved addresses, so that a slow resolver is not consulted twice, within
    # one overall timeout however many addresses there are.
    deadline = time.monotonic() + timeout
    error: object = "no address"
    for family, kind, proto, _, address in result["addresses"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            error = f"timed out after {timeout:g} s"
            break
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(remaining)
                sock.connect(address)
            return None
        except OSError as e:
            error = e
    return f"cannot connect to {host}:{port} ({error})"
