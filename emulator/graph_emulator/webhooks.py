"""Send Meta-shaped, signed Page webhooks (Lead Ads ``leadgen`` and Messenger messages).

Meta POSTs a JSON body and signs the raw bytes with the app secret:
``X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`` (plus the legacy SHA-1 ``X-Hub-Signature``).
A receiver must verify the signature over the exact bytes it received, which is why
:func:`post_webhook` serialises once and sends precisely what it signed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from datetime import datetime
from typing import Any

__all__ = ["leadgen_payload", "messenger_payload", "post_webhook", "sign"]


def _unix(moment: int | datetime) -> int:
    return int(moment.timestamp()) if isinstance(moment, datetime) else int(moment)


def leadgen_payload(
    page_id: str,
    form_id: str,
    leadgen_id: str,
    ad_id: str | None,
    created_time: int | datetime,
) -> dict[str, Any]:
    """A ``leadgen`` change notification for one new lead (``created_time`` in unix seconds).

    Meta only sends ids: the lead's answers must be fetched with ``GET /{leadgen_id}``.
    """
    created = _unix(created_time)
    value: dict[str, Any] = {}
    if ad_id is not None:
        # Meta sends the ad id twice: as ad_id and under its legacy name adgroup_id.
        value.update(ad_id=str(ad_id), adgroup_id=str(ad_id))
    value.update(
        form_id=str(form_id),
        leadgen_id=str(leadgen_id),
        created_time=created,
        page_id=str(page_id),
    )
    return {
        "object": "page",
        "entry": [
            {
                "id": str(page_id),
                "time": created,
                "changes": [{"field": "leadgen", "value": value}],
            }
        ],
    }


def messenger_payload(
    page_id: str, psid: str, mid: str, text: str, timestamp_ms: int
) -> dict[str, Any]:
    """A Messenger ``messages`` event: user ``psid`` sent ``text`` to the Page (ms timestamps)."""
    return {
        "object": "page",
        "entry": [
            {
                "id": str(page_id),
                "time": int(timestamp_ms),
                "messaging": [
                    {
                        "sender": {"id": str(psid)},
                        "recipient": {"id": str(page_id)},
                        "timestamp": int(timestamp_ms),
                        "message": {"mid": mid, "text": text},
                    }
                ],
            }
        ],
    }


def sign(body: bytes, app_secret: str) -> str:
    """The ``X-Hub-Signature-256`` value for ``body``: ``sha256=<hex HMAC>``."""
    digest = hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def _sign_sha1(body: bytes, app_secret: str) -> str:
    return "sha1=" + hmac.new(app_secret.encode(), body, hashlib.sha1).hexdigest()


def post_webhook(url: str, payload: dict[str, Any], app_secret: str, *, timeout: float = 10) -> int:
    """POST ``payload`` to ``url`` signed like Meta; returns the HTTP status (errors included).

    Connection failures raise ``urllib.error.URLError``. Proxies from the environment are ignored:
    the emulator only ever talks to local receivers.
    """
    body = json.dumps(payload, separators=(",", ":")).encode()
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": "facebookexternalua",
            "X-Hub-Signature-256": sign(body, app_secret),
            "X-Hub-Signature": _sign_sha1(body, app_secret),
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        error.read()
        return error.code
