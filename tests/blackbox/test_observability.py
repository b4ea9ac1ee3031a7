"""Metrics read by a real Prometheus parser, and the dashboard driven in headless Chromium."""
import json
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from helpers import eventually, recv_json, recv_until, send_json

TOKEN = "dash-token-0123456789"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def scrape(server) -> dict:
    """{(name, frozenset(labels)): value} from /metrics."""
    status, text = server.http("/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0)


def test_metrics_move_by_the_right_amounts(server, rawws_factory):
    before = scrape(server)
    with pytest.raises(InvalidStatus):
        connect(f"{server.url}/ws?userId=bad%20id")
    clients = [connect(f"{server.url}/ws?userId=u{i}") for i in range(3)]
    try:
        for ws in clients:
            send_json(ws, action="joinRoom", roomId="metrics")
            recv_until(ws, "joinedRoom")
        for ws in clients:
            for n in range(2):
                send_json(ws, action="sendMessage", roomId="metrics", message=n)
        for ws in clients:
            for _ in range(6):
                recv_until(ws, "message")
        clients[0].send("not json")
        assert recv_json(clients[0])["message"] == "Invalid JSON"
        during = scrape(server)
        assert value(during, "switchboard_connections_active") == 3
        assert value(during, "switchboard_rooms") == 1
        assert value(during, "switchboard_connections_accepted_total") - value(before, "switchboard_connections_accepted_total") == 3
        assert value(during, "switchboard_connections_rejected_total", reason="bad_request") == 1
        assert value(during, "switchboard_messages_received_total", route="joinRoom") == 3
        assert value(during, "switchboard_messages_received_total", route="sendMessage") == 6
        assert value(during, "switchboard_messages_received_total", route="$default") == 1
        assert value(during, "switchboard_client_errors_total", reason="bad_message") == 1
        # 3 joinedRoom + 3 userJoined (0 + 1 + 2 others) + 6 messages x 3 members + 1 error frame
        assert value(during, "switchboard_messages_sent_total") == 3 + 3 + 18 + 1
        assert value(during, "switchboard_message_bytes_received_total", route="sendMessage") > 0
    finally:
        for ws in clients[:2]:
            ws.close()
    raw = rawws_factory(server.port, "/ws?userId=raw")
    raw.send_frame(0x1, b"\xff")  # invalid UTF-8: closed 1007, a client error
    raw.expect_close()
    clients[2].close()
    eventually(lambda: value(scrape(server), "switchboard_connections_active") == 0, timeout=5, message="connections gone")
    after = scrape(server)
    assert value(after, "switchboard_disconnects_total", code="1000") == 3
    assert value(after, "switchboard_client_errors_total", reason="invalid_utf8") == 1
    assert value(after, "switchboard_connections_active") == 0


def test_dashboard_shows_live_numbers_in_chromium(start_server):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_server("--management-bearer-token", TOKEN)
    assert server.http("/dashboard")[0] == 403
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(argument)
    browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        browser.get(f"http://127.0.0.1:{server.port}/dashboard?token={TOKEN}")
        text = lambda element_id: browser.find_element("id", element_id).text
        WebDriverWait(browser, 10).until(lambda _: text("active") == "0")
        clients = [connect(f"{server.url}/ws?userId=viewer{i}") for i in range(5)]
        try:
            for ws in clients:
                send_json(ws, action="joinRoom", roomId="watched")
            WebDriverWait(browser, 10).until(lambda _: text("active") == "5")
            WebDriverWait(browser, 10).until(lambda _: "watched" in text("topRooms") and "5" in text("topRooms"))
            stop = time.monotonic() + 2.5
            while time.monotonic() < stop:
                send_json(clients[0], action="sendMessage", roomId="watched", message="tick")
                time.sleep(0.02)
            WebDriverWait(browser, 10).until(lambda _: float(text("in")) > 0 and float(text("out")) > 0)
            assert text("status").startswith("live")
            ARTIFACTS.mkdir(exist_ok=True)
            browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        finally:
            for ws in clients:
                ws.close()
        WebDriverWait(browser, 10).until(lambda _: text("active") == "0")
    finally:
        browser.quit()


def test_alerts_dashboard_and_docs_name_the_metrics_that_exist(start_server):
    import re

    import yaml

    root = Path(__file__).resolve().parents[2]
    documented = set(re.findall(r"^\| `(switchboard_[a-z_]+)`", (root / "docs/operations.md").read_text(), re.M))
    server = start_server("--integrations", "$default=http://127.0.0.1:9/")
    with connect(f"{server.url}/ws") as ws:
        ws.send("x")
        ws.recv(timeout=10)
    _, text = server.http("/metrics")
    # The parser names counter families without their `_total` suffix.
    exported = {family.name for family in text_string_to_metric_families(text)}
    undocumented = {name for name in exported if name not in documented and name + "_total" not in documented}
    assert not undocumented, undocumented

    def names(expression: str) -> set[str]:
        return {re.sub(r"_(bucket|sum|count)$", "", n) for n in re.findall(r"switchboard_[a-z_]+", expression)}

    rules = yaml.safe_load((root / "deploy/prometheus/alerts.yml").read_text())
    used = set().union(*(names(rule["expr"]) for group in rules["groups"] for rule in group["rules"]))
    grafana = json.loads((root / "deploy/grafana/switchboard.json").read_text())
    used |= set().union(*(names(target["expr"]) for panel in grafana["panels"] for target in panel["targets"]))
    assert used <= documented, used - documented
