"""`GET /metrics`: the node's counts in the Prometheus text exposition format (version 0.0.4).

Who may read it: any client on loopback without a token (a Prometheus agent or node
exporter on the same device), any other client only with an operator's bearer token, as
for the JSON API. The numbers hold no personal data, but peer node ids and addresses
describe the office network, so they are not for everyone on the WiFi.

Written by hand (no client library): every metric is named `simpul_*` with HELP and TYPE.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from typing import Any

from aiohttp import web

from simpul.node.api import NODE_KEY, error
from simpul.node.node_status import status_of
from simpul.node.sync_counters import SyncCounters

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STARTED_AT = time.time()  # when the node's code was loaded: the process start, near enough


def escape(value: str) -> str:
    """A label value as the text format wants it: backslash, quote and newline escaped."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def sample(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    text = ",".join(f'{key}="{escape(val)}"' for key, val in (labels or {}).items())
    number = str(value) if isinstance(value, int) else repr(float(value))  # every digit
    return f"{name}{{{text}}} {number}" if text else f"{name} {number}"


def render(
    status: dict[str, Any], started_at: float, counters: SyncCounters, clock_behind_ms: int
) -> str:
    """The exposition text for the facts `status_of` gives and what the carriers counted."""
    peers = status["peers"]
    states: dict[str, int] = {}
    for peer in peers:
        states[peer["state"]] = states.get(peer["state"], 0) + 1

    def per_peer(field: str) -> list[str]:
        return [
            sample(
                f"simpul_peer_{field}_total",
                peer[field],
                {"node_id": peer["node_id"] or "", "address": peer["address"]},
            )
            for peer in peers
        ]

    info = {"node_id": status["node_id"], "network_id": status["network_id"] or ""}
    families = [
        ("simpul_info", "gauge", "This node's identity (value always 1).",
         [sample("simpul_info", 1, info)]),
        ("simpul_records", "gauge", "Household records held (not deleted).",
         [sample("simpul_records", status["records"])]),
        ("simpul_entries", "gauge", "Feed entries stored, every origin.",
         [sample("simpul_entries", status["entries"])]),
        ("simpul_feeds", "gauge", "Feeds (origins) held.",
         [sample("simpul_feeds", len(status["frontier"]))]),
        ("simpul_feed_length", "gauge", "Entries in this node's own feed.",
         [sample("simpul_feed_length", status["feed_length"])]),
        ("simpul_pending_entries", "gauge",
         "Entries received whose dependencies have not arrived yet.",
         [sample("simpul_pending_entries", status["pending"])]),
        ("simpul_refused_entries", "gauge",
         "Entries of each origin this node refuses, by reason (held unapplied; a chunk "
         "refused for good counts 1). Non-zero: records differ between nodes.",
         [sample("simpul_refused_entries", n, {"origin": origin, "reason": reason})
          for origin, reasons in sorted(status["refused"].items())
          for reason, n in sorted(reasons.items())]),
        ("simpul_peer_refusals", "gauge",
         "Per peer and reason: entries this node refuses of it (side=ours) and that it says "
         "it refuses (side=theirs), as of its last session.",
         [sample("simpul_peer_refusals", n,
                 {"node_id": peer["node_id"] or "", "side": side, "reason": reason})
          for peer in peers
          for side, field in (("ours", "refused"), ("theirs", "refused_by_peer"))
          for reason, n in sorted(peer[field].items())]),
        ("simpul_peers", "gauge", "Known peers by state.",
         [sample("simpul_peers", n, {"state": state}) for state, n in sorted(states.items())]),
        ("simpul_peer_entries_sent_total", "counter", "Entries this node sent to each peer.",
         per_peer("entries_sent")),
        ("simpul_peer_entries_received_total", "counter",
         "Entries this node received from each peer.", per_peer("entries_received")),
        ("simpul_sync_sessions_total", "counter",
         "Sync sessions since start, by carrier, side (client: this node called) and outcome.",
         [sample("simpul_sync_sessions_total", n,
                 {"carrier": carrier, "side": side, "outcome": outcome})
          for (carrier, side, outcome), n in sorted(counters.sessions.items())]),
        ("simpul_sync_bytes_total", "counter",
         "Bytes of sync streams since start, by carrier and direction.",
         [sample("simpul_sync_bytes_total", n, {"carrier": carrier, "direction": direction})
          for (carrier, direction), n in sorted(counters.bytes.items())]),
        ("simpul_sync_refusals_total", "counter",
         "Runs of received entries refused since start, by carrier and reason "
         "(chain, own-feed, gap, untrusted, scope, revoked, ...).",
         [sample("simpul_sync_refusals_total", n, {"carrier": carrier, "reason": reason})
          for (carrier, reason), n in sorted(counters.refused.items())]),
        ("simpul_tls_handshakes_refused_total", "counter",
         "TLS handshakes this node's sync server refused since start, by carrier and reason "
         "(no-certificate, untrusted-certificate, revoked, protocol).",
         [sample("simpul_tls_handshakes_refused_total", n, {"carrier": carrier, "reason": reason})
          for (carrier, reason), n in sorted(counters.handshakes_refused.items())]),
        ("simpul_clock_behind_seconds", "gauge",
         "How far the device clock is behind the newest time this node knows has passed "
         "(writes are refused beyond 5 minutes; see simpul doctor).",
         [sample("simpul_clock_behind_seconds", clock_behind_ms / 1000)]),
        ("simpul_process_start_time_seconds", "gauge",
         "Start time of the node process, seconds since the Unix epoch.",
         [sample("simpul_process_start_time_seconds", round(started_at, 3))]),
    ]  # fmt: skip
    lines = []
    for name, kind, help_text, samples in families:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *samples]
    return "\n".join(lines) + "\n"


def from_loopback(request: web.Request) -> bool:
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False  # a unix socket or an unknown peer: ask for a token


async def metrics(request: web.Request) -> web.StreamResponse:
    node = request.app[NODE_KEY]
    if not from_loopback(request):
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        operator = None
        if scheme.lower() == "bearer" and token.strip():
            operator = await node.operators.by_token(token.strip())
        if operator is None:
            log.info("metrics refused remote=%s reason=no valid token", request.remote)
            return error(401, "a valid bearer token is required off loopback")
    text = render(await status_of(node), STARTED_AT, node.counters, node.clock.behind_ms())
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def add_metrics_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
