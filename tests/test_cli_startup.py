"""The command line starts without the web stack: every `simpul` call pays its imports,
and aiohttp, jinja2 and zeroconf cost about a third of a second here (over a second on a
Raspberry Pi). Only the commands that serve (`simpul node`, `simpul hub serve`) and the
USB sync load them."""

from __future__ import annotations

import subprocess
import sys

WEB_STACK = ("aiohttp", "jinja2", "zeroconf")


def test_the_command_line_loads_no_web_stack_until_a_command_serves() -> None:
    probe = (
        "import sys, simpul.node.cli, simpul.node.node_status, simpul.node.doctor;"
        f"print(','.join(m for m in {WEB_STACK!r} if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == ""
