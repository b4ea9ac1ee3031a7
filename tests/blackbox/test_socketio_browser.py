"""The reference socket.io-client (4.8.1, the browser bundle PyPI's nicegui ships; npm is not reachable here) in
headless Chromium, on a page of another origin with `withCredentials`, as seed 004's frontend: polling upgraded to
WebSocket, rooms shared with a native client, connection state recovery (`socket.recovered`) after a drop, and after
the node holding the session is killed behind haproxy round robin."""
import asyncio
import functools
import http.server
import json
import shutil
import signal
import threading
from pathlib import Path

import pytest

from conftest import free_port
from test_socketio_cluster import subscribed
from test_socketio_recovery import Native

BUNDLE = next(Path(__file__).resolve().parents[2].glob(".venv/lib/python3*/site-packages/nicegui/static/socket.io.min.js"), None)
RECOVERY = ("--socketio-recovery-window", "30s", "--rooms-presence", "false")

PAGE = """<!doctype html><meta charset="utf-8"><title>socket.io-client</title>
<script src="socket.io.min.js"></script>
<script>
window.events = [];
window.start = (url, options) => {
  const socket = io(url, options);
  window.socket = socket;
  socket.on("connect", () => events.push(["connect", socket.id, socket.recovered]));
  socket.on("disconnect", (reason) => events.push(["disconnect", reason]));
  socket.on("connect_error", (error) => events.push(["connect_error", error.message]));
  socket.on("joinedRoom", (data) => events.push(["joinedRoom", data.roomId]));
  socket.on("message", (data, offset) => events.push(["message", data.message, offset]));
};
</script>"""


@pytest.fixture
def page(tmp_path):
    """A page with the client bundle, served from its own origin."""
    if BUNDLE is None:
        pytest.fail("socket.io.min.js missing: scripts/test installs it (pip install --no-deps nicegui)")
    (tmp_path / "index.html").write_text(PAGE)
    shutil.copy(BUNDLE, tmp_path / "socket.io.min.js")
    port = free_port()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{port}/index.html"
    server.shutdown()


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    yield driver
    driver.quit()


class Page:
    def __init__(self, browser):
        from selenium.webdriver.support.ui import WebDriverWait

        self.browser = browser
        self.wait = WebDriverWait(browser, 30, poll_frequency=0.05)

    def events(self, kind=None):
        events = self.browser.execute_script("return window.events")
        return [event for event in events if kind is None or event[0] == kind]

    def until(self, condition, message):
        self.wait.until(lambda _: condition(), message)

    def js(self, script, *arguments):
        return self.browser.execute_script(script, *arguments)


def open_page(browser, page, url, **options):
    browser.get(page)
    client = Page(browser)
    client.js("start(arguments[0], arguments[1])", url, {"withCredentials": True, **options})
    client.until(lambda: client.events("connect"), "connected")
    client.js("socket.emit('joinRoom', {roomId: 'lobby'})")
    client.until(lambda: client.events("joinedRoom"), "joined the room")
    return client


def test_socket_io_client_in_chromium_upgrades_shares_a_room_and_recovers_after_a_drop(start_server, browser, page):
    node = start_server(*RECOVERY)
    url = f"http://127.0.0.1:{node.port}"

    async def scenario():
        native = await Native.joined(node.port, "lobby")
        client = open_page(browser, page, url, reconnectionDelay=2000, randomizationFactor=0)
        [(_, socket_id, recovered)] = client.events("connect")
        assert recovered is False
        client.until(lambda: client.js("return socket.io.engine.transport.name") == "websocket", "upgraded to WebSocket")
        await native.say("lobby", "m1")
        client.until(lambda: client.events("message"), "m1")
        assert client.events("message") == [["message", "m1", "1@lobby"]]
        client.js("socket.emit('sendMessage', {roomId: 'lobby', message: 'from chromium'})")
        while json.loads(await asyncio.wait_for(native.ws.recv(), 10)).get("message") != "from chromium":
            pass

        # The transport drops; the client reconnects 2 s later, naming its pid and the last offset it saw.
        client.js("socket.io.engine.close()")
        client.until(lambda: client.events("disconnect"), "disconnected")
        await native.say("lobby", "m3", "m4")
        client.until(lambda: len(client.events("connect")) == 2, "reconnected")
        assert client.events("connect")[1] == ["connect", socket_id, True]  # same id, `socket.recovered`
        client.until(lambda: len(client.events("message")) == 4, "missed messages")
        assert [event[1:] for event in client.events("message")] == \
            [["m1", "1@lobby"], ["from chromium", "2@lobby"], ["m3", "3@lobby"], ["m4", "4@lobby"]]
        await native.say("lobby", "m5")
        client.until(lambda: len(client.events("message")) == 5, "live again")
        await native.ws.close()

    asyncio.run(scenario())


def test_socket_io_client_recovers_on_the_survivor_when_its_node_is_killed(redis, cluster, haproxy, browser, page):
    nodes = cluster(2, *RECOVERY)
    subscribed(redis)
    port = haproxy(*nodes)

    async def scenario():
        client = open_page(browser, page, f"http://127.0.0.1:{port}", transports=["polling"])
        [(_, socket_id, _)] = client.events("connect")
        owner_id = client.js("return socket.io.engine.id").split("~")[0]
        owner = nodes[int(owner_id.removeprefix("node"))]
        survivor = nodes[1 - nodes.index(owner)]
        native = await Native.joined(survivor.port, "lobby")
        await native.say("lobby", "m1")
        client.until(lambda: client.events("message"), "m1 over polling, relayed half of the time")

        owner.signal(signal.SIGKILL)
        owner.process.wait(timeout=5)
        await native.say("lobby", "m2")
        client.until(lambda: len(client.events("connect")) == 2, "reconnected through haproxy")
        assert client.events("connect")[1] == ["connect", socket_id, True]
        assert client.js("return socket.io.engine.id").startswith(survivor_id := f"node{nodes.index(survivor)}"), survivor_id
        client.until(lambda: len(client.events("message")) == 2, "m2, missed while the node died")
        assert [event[1:] for event in client.events("message")] == [["m1", "1@lobby"], ["m2", "2@lobby"]]
        await native.ws.close()

    asyncio.run(scenario())
