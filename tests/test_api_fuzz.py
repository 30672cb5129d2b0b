"""schemathesis against a running node (`simpul node` as its own process, an admin token):
requests generated from the OpenAPI document the node publishes, valid and invalid, to
every operation; no answer may be a 5xx. Bounded (EXAMPLES per operation, derandomized)
so the default suite stays well under a minute on two cores; SIMPUL_FUZZ_EXAMPLES=300
runs a deeper search by hand (about two minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import requests
import schemathesis
from conftest import generate, make_token
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import Response

from simpul.node.usb_watcher import ROOTS_ENV

EXAMPLES = int(os.environ.get("SIMPUL_FUZZ_EXAMPLES", "25"))


class FuzzedNode:
    def __init__(self, url: str, token: str, record_id: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.record_id = record_id


@pytest.fixture(scope="module")
def fuzzed_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzedNode]:
    """A node process with one household and a USB root of its own (so "use this drive"
    can touch nothing else)."""
    base = tmp_path_factory.mktemp("fuzz")
    data_dir, usb = base / "node", base / "usb"
    usb.mkdir()
    token = asyncio.run(make_token(data_dir))
    env = {**os.environ, "SIMPUL_DISCOVERY": "off", "PYTHONUNBUFFERED": "1", ROOTS_ENV: str(usb)}
    argv = [sys.executable, "-m", "simpul.node", "--data-dir", str(data_dir), "node",
            "--listen", "127.0.0.1:0"]  # fmt: skip
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    try:
        assert process.stdout is not None
        found = re.search(rb"(http://\S+?)/? ", process.stdout.readline())
        assert found, "the node did not start"
        url = found.group(1).decode()
        household = json.loads(generate(1, "jsonl", seed=29).splitlines()[0])
        created = requests.post(
            f"{url}/api/v1/records", json=household, headers={"Authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        yield FuzzedNode(url, token, created.json()["id"])
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def published_schema(fuzzed_node: FuzzedNode) -> schemathesis.BaseSchema:
    """The document as the node serves it; schemathesis generates valid and invalid data."""
    return schemathesis.openapi.from_url(
        f"{fuzzed_node.url}/api/v1/openapi.json", headers=fuzzed_node.headers
    )


schema = schemathesis.pytest.from_fixture("published_schema")


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_request_makes_the_node_answer_5xx(
    case: schemathesis.Case, fuzzed_node: FuzzedNode
) -> None:
    if "id" in (case.path_parameters or {}) and case.method != "DELETE":
        case.path_parameters["id"] = fuzzed_node.record_id  # reach past the 404
    response: Response = case.call(base_url=fuzzed_node.url, headers=fuzzed_node.headers)
    case.validate_response(response, checks=[not_a_server_error])
