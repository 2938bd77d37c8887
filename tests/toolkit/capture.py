"""Record what botocore sends: the request a launcher (SDK v2 or v3) builds, exactly as it leaves.

Imports only botocore, so it also runs in SDK v3's environment (``v3_request.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def captured(operation: str) -> Iterator[dict[str, Any]]:
    """Parameters of the ``operation`` calls any botocore client makes meanwhile (sent on as usual)."""
    import botocore.client

    sent: dict[str, Any] = {}
    real = botocore.client.BaseClient._make_api_call

    def record(client, name: str, params: dict[str, Any]):
        if name == operation:
            sent.update(params)
        return real(client, name, params)

    botocore.client.BaseClient._make_api_call = record
    try:
        yield sent
    finally:
        botocore.client.BaseClient._make_api_call = real
