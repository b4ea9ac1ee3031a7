"""The browser client and the demo chat: two Chromium pages chat, one loses its connection, reconnects and recovers."""
import json
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
TOKEN = "demo-token-0123456789"


def test_served_client_is_the_one_in_the_repository(server):
    for path, file in (("/client/switchboard.js", "clients/js/switchboard.js"), ("/demo", "clients/js/demo.html")):
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}") as response:
            assert response.read() == (ROOT / file).read_bytes()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,700"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


def test_two_pages_chat_and_a_dropped_page_recovers_what_it_missed(start_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_server("--management-bearer-token", TOKEN)
    wait = WebDriverWait(browser, 15)

    def lines():
        return [item.text for item in browser.find_elements(By.CSS_SELECTOR, "#messages li:not(.system)")]

    def say(text):
        box = browser.find_element(By.ID, "text")
        box.send_keys(text)
        browser.find_element(By.CSS_SELECTOR, "#composer button").click()

    browser.get(f"http://127.0.0.1:{server.port}/demo?user=alice&room=lobby")
    alice = browser.current_window_handle
    wait.until(lambda d: d.find_element(By.ID, "status").text == "open")
    browser.switch_to.new_window("tab")
    browser.get(f"http://127.0.0.1:{server.port}/demo?user=bob&room=lobby")
    bob = browser.current_window_handle
    wait.until(lambda d: d.find_element(By.ID, "status").text == "open" and "joined as bob" in d.page_source)

    say("hi from bob")
    browser.switch_to.window(alice)
    wait.until(lambda d: "bob: hi from bob" in lines())
    say("hi from alice")
    browser.switch_to.window(bob)
    wait.until(lambda d: "alice: hi from alice" in lines())

    # Drop alice's connection from the server side, and keep her away long enough for bob to talk.
    browser.switch_to.window(alice)
    browser.execute_script("window.client.random = () => 1; window.client.options.reconnect.base = 2000;")
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/@connections?limit=100", headers={"Authorization": f"Bearer {TOKEN}"})
    items = json.loads(urllib.request.urlopen(request).read())["items"]
    [alice_id] = [item["connectionId"] for item in items if item["userId"] == "alice"]
    request = urllib.request.Request(f"http://127.0.0.1:{server.port}/@connections/{alice_id}?code=1012&reason=restart",
                                     method="DELETE", headers={"Authorization": f"Bearer {TOKEN}"})
    assert urllib.request.urlopen(request).status == 204
    wait.until(lambda d: d.find_element(By.ID, "status").text == "reconnecting")

    browser.switch_to.window(bob)
    say("while you were away")
    say("and one more")
    browser.switch_to.window(alice)
    wait.until(lambda d: d.find_element(By.ID, "status").text == "open")
    wait.until(lambda d: "bob: and one more" in lines())
    time.sleep(0.5)
    assert lines() == ["bob: hi from bob", "alice: hi from alice", "bob: while you were away", "bob: and one more"]
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "demo-chat.png"))
    assert browser.execute_script("return window.client.state") == "open"

    # Chromium offered permessage-deflate on every connection, and a long message crossed compressed both ways.
    connected = [event for event in server.log_events() if event["msg"] == "connected"]
    assert len(connected) == 3 and all(event.get("compression") == "permessage-deflate" for event in connected)
    long = "compressed " * 60
    say(long)
    browser.switch_to.window(bob)
    wait.until(lambda d: f"alice: {long.strip()}" in lines() or f"alice: {long}" in lines())
