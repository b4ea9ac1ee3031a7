/// The live dashboard served at `/dashboard`: one self-contained page (no build step, no CDN). It opens the
/// server-sent event stream at `/dashboard/events`, which carries this node's Prometheus text and its top rooms
/// every second, and computes rates from consecutive samples.
enum DashboardPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>Switchboard</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
          :root { --bg: #0f1419; --card: #1a2029; --text: #e6e6e6; --muted: #8b949e; --accent: #4fc3f7; --bad: #ef5350; }
          body { margin: 0; font: 15px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); }
          header { padding: 16px 24px; display: flex; justify-content: space-between; align-items: baseline; }
          h1 { margin: 0; font-size: 20px; } #status { color: var(--muted); }
          main { padding: 0 24px 24px; display: grid; gap: 16px; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); }
          .card { background: var(--card); border-radius: 8px; padding: 16px; }
          .card .label { color: var(--muted); font-size: 13px; } .card .value { font-size: 32px; font-weight: 600; }
          .wide { grid-column: 1 / -1; } table { width: 100%; border-collapse: collapse; }
          td, th { text-align: left; padding: 4px 8px; border-bottom: 1px solid #2a313c; } th { color: var(--muted); font-weight: 500; }
          canvas { width: 100%; height: 80px; } .bad { color: var(--bad); }
        </style>
        </head>
        <body>
        <header><h1>Switchboard</h1><span id="status">connecting…</span></header>
        <main>
          <div class="card"><div class="label">Active connections</div><div class="value" id="active">–</div></div>
          <div class="card"><div class="label">Connects / s</div><div class="value" id="connects">–</div></div>
          <div class="card"><div class="label">Messages in / s</div><div class="value" id="in">–</div></div>
          <div class="card"><div class="label">Messages out / s</div><div class="value" id="out">–</div></div>
          <div class="card"><div class="label">Integration latency (ms)</div><div class="value" id="latency">–</div></div>
          <div class="card"><div class="label">Errors / s</div><div class="value" id="errors">–</div></div>
          <div class="card"><div class="label">Rooms</div><div class="value" id="rooms">–</div></div>
          <div class="card"><div class="label">Messages total (in / out)</div><div class="value" id="totals">–</div></div>
          <div class="card wide"><div class="label">Messages per second (in, out), last 2 minutes</div><canvas id="chart" width="1200" height="80"></canvas></div>
          <div class="card wide"><div class="label">Top rooms by members</div>
            <table><thead><tr><th>Room</th><th>Members</th></tr></thead><tbody id="topRooms"></tbody></table></div>
          <div class="card wide"><div class="label">Nodes</div>
            <table><thead><tr><th>Node</th><th>Connections</th><th>Draining</th></tr></thead><tbody id="nodes"></tbody></table></div>
        </main>
        <script>
        "use strict";
        // Sums every series of a metric in Prometheus text, optionally only those whose labels contain `filter`.
        function sum(text, name, filter) {
          let total = 0;
          for (const line of text.split("\n")) {
            if (!line.startsWith(name) || line.startsWith("#")) continue;
            const rest = line.slice(name.length);
            if (rest[0] !== " " && rest[0] !== "{") continue;
            if (filter && !rest.includes(filter)) continue;
            total += parseFloat(line.slice(line.lastIndexOf(" ") + 1)) || 0;
          }
          return total;
        }
        function sample(text) {
          return {
            active: sum(text, "switchboard_connections_active"),
            accepted: sum(text, "switchboard_connections_accepted_total"),
            received: sum(text, "switchboard_messages_received_total"),
            sent: sum(text, "switchboard_messages_sent_total"),
            errors: sum(text, "switchboard_client_errors_total") + sum(text, "switchboard_execution_errors_total")
              + sum(text, "switchboard_integration_errors_total"),
            latencySum: sum(text, "switchboard_integration_latency_seconds_sum"),
            latencyCount: sum(text, "switchboard_integration_latency_seconds_count"),
            rooms: sum(text, "switchboard_rooms"),
          };
        }
        const history = [];
        let previous = null;
        function text(id, value) { document.getElementById(id).textContent = value; }
        function rate(now, before, key, seconds) { return Math.max(0, (now[key] - before[key]) / seconds); }
        function render(snapshot) {
          const now = sample(snapshot.metrics);
          now.time = snapshot.time;
          text("active", now.active);
          text("rooms", now.rooms);
          text("totals", now.received + " / " + now.sent);
          if (previous) {
            const seconds = Math.max(0.001, (now.time - previous.time) / 1000);
            const inRate = rate(now, previous, "received", seconds), outRate = rate(now, previous, "sent", seconds);
            text("connects", rate(now, previous, "accepted", seconds).toFixed(1));
            text("in", inRate.toFixed(1));
            text("out", outRate.toFixed(1));
            const errors = rate(now, previous, "errors", seconds);
            text("errors", errors.toFixed(1));
            document.getElementById("errors").className = errors > 0 ? "value bad" : "value";
            const count = now.latencyCount - previous.latencyCount;
            text("latency", count > 0 ? ((now.latencySum - previous.latencySum) / count * 1000).toFixed(1) : "–");
            history.push([inRate, outRate]);
            if (history.length > 120) history.shift();
            draw();
          }
          previous = now;
          document.getElementById("topRooms").innerHTML = snapshot.rooms.map(r =>
            "<tr><td>" + escape(r.roomId) + "</td><td>" + r.members + "</td></tr>").join("");
          document.getElementById("nodes").innerHTML = snapshot.nodes.map(n =>
            "<tr><td>" + escape(n.node) + "</td><td>" + n.connections + "</td><td>" + n.draining + "</td></tr>").join("");
          text("status", "live · updated " + new Date(snapshot.time).toLocaleTimeString());
        }
        function escape(value) { return String(value).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}[c])); }
        function draw() {
          const canvas = document.getElementById("chart"), g = canvas.getContext("2d");
          g.clearRect(0, 0, canvas.width, canvas.height);
          const max = Math.max(1, ...history.flat());
          ["#4fc3f7", "#aed581"].forEach((color, series) => {
            g.strokeStyle = color; g.lineWidth = 2; g.beginPath();
            history.forEach((point, i) => {
              const x = i * canvas.width / 119, y = canvas.height - point[series] / max * (canvas.height - 4) - 2;
              i ? g.lineTo(x, y) : g.moveTo(x, y);
            });
            g.stroke();
          });
        }
        const source = new EventSource(location.pathname.replace(/\/$/, "") + "/events" + location.search);
        source.onmessage = event => render(JSON.parse(event.data));
        source.onerror = () => text("status", "disconnected, retrying…");
        </script>
        </body>
        </html>
        """#
}
