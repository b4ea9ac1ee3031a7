"""The management API's OpenAPI 3.1 document: valid, and true of the live server under fuzzing."""
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

from openapi_spec_validator import validate
from websockets.sync.client import connect

from helpers import recv_json, send_json

TOKEN = "fuzz-token-0123456789"


def test_document_is_valid_openapi_3_1(server):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/@openapi.json", timeout=5) as response:
        document = json.load(response)
    assert document["openapi"] == "3.1.0"
    validate(document)
    assert {"/@connections/{connectionId}", "/@rooms/{roomId}", "/@broadcast", "/@users/{userId}"} <= set(document["paths"])


def test_schemathesis_finds_no_server_error_and_no_undocumented_response(start_server, tmp_path):
    server = start_server("--management-bearer-token", TOKEN)
    with connect(f"{server.url}/ws?userId=fuzzed") as ws:
        send_json(ws, action="joinRoom", roomId="room")
        recv_json(ws)
        result = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")), "run", f"http://127.0.0.1:{server.port}/@openapi.json",
                "--header", f"Authorization: Bearer {TOKEN}",
                "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance,content_type_conformance",
                "--max-examples", "40", "--seed", "1", "--request-timeout", "5",
            ],
            capture_output=True, text=True, timeout=600, cwd=tmp_path,
            env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        )
    report = Path(__file__).resolve().parents[2] / "artifacts" / "schemathesis.txt"
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-4000:]
    assert server.process.poll() is None
