"""What both HTTP ports of a node (the page and API port, the LAN sync port) do against a
neighbour on the same WiFi: no version banner, and no connection held open for ever.

aiohttp names itself and Python's version in every answer's `Server` header; `name_server`
makes it the product's bare name. A connection that sends no request, or sends its headers a
byte at a time, is closed by aiohttp's keep-alive timer, which starts when the connection
is made and is cut short only by a complete request: `keepalive_timeout` of the runner is
the longest any idle or slow-header connection lives.
"""

from __future__ import annotations

from aiohttp import web_response

SERVER_NAME = "Simpul"
# The page and the JSON API answer in well under a second; a browser reopens a closed
# keep-alive connection without the operator noticing.
PAGE_IDLE_SECONDS = 15.0


def name_server() -> None:
    """Every answer of this process's HTTP servers says `Server: Simpul`, never the aiohttp
    or Python version.

    aiohttp fills the header from its module constant `web_response.SERVER_SOFTWARE` when a
    handler set none, also in the parser's own 400 for bytes that are not HTTP, which no
    application signal or middleware sees; setting that constant is the one place that
    covers every answer (tests/test_connections.py fails should aiohttp move it)."""
    web_response.SERVER_SOFTWARE = SERVER_NAME
