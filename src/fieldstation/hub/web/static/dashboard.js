/* fieldstation hub dashboard: live parts poll the JSON API (no reload, no library). */
"use strict";
var fieldstation = (function () {
  function ago(iso, now) {
    if (!iso) return "never";
    var s = Math.max(0, Math.floor((Date.parse(now) - Date.parse(iso)) / 1000));
    if (s >= 172800) return Math.floor(s / 86400) + " d";
    if (s >= 7200) return Math.floor(s / 3600) + " h";
    if (s >= 120) return Math.floor(s / 60) + " min";
    return s + " s";
  }
  function bytes(n) {
    if (n === null || n === undefined) return "\u2013";
    var units = ["B", "kB", "MB", "GB", "TB"], i = 0;
    while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }
  function cell(tr, text, cls, title) {
    var td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (title) td.title = title;
    tr.appendChild(td);
    return td;
  }
  function poll(url, every, render) {
    function once() {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) { window.location = "/login?next=" + encodeURIComponent(window.location.pathname); return null; }
          return r.ok ? r.json() : null;
        })
        .then(function (data) {
          if (data) {
            render(data);
            var u = document.getElementById("updated");
            // the fleet's figures are as of its snapshot (data.now), not of this poll
            if (u) u.textContent = (data.now || new Date().toISOString()).substring(11, 19) + " UTC";
          }
        })
        .catch(function () { /* the hub restarts: try again next period */ })
        .then(function () { setTimeout(once, every); });
    }
    setTimeout(once, every);
  }
  function liveFleet(every) {
    poll("/api/fleet", every, function (data) {
      var body = document.querySelector("#fleet tbody");
      var rows = document.createDocumentFragment();
      data.stations.forEach(function (s) {
        var tr = document.createElement("tr");
        tr.dataset.station = s.id;
        var name = cell(tr, "");
        var a = document.createElement("a");
        a.href = "/stations/" + encodeURIComponent(s.id);
        a.textContent = s.id;
        name.appendChild(a);
        cell(tr, s.presence, "presence " + s.presence);
        cell(tr, s.activity || "\u2013", "activity " + (s.activity || ""));
        cell(tr, (s.health || "\u2013") + (s.failed_jobs.length ? " (" + s.failed_jobs.join(", ") + " failed)" : ""),
             "health " + (s.health || ""), s.reasons.join("; "));
        cell(tr, s.disk_percent === null ? "\u2013" : s.disk_percent.toFixed(0) + " % \u00b7 " + bytes(s.disk_free) + " free");
        cell(tr, s.battery_percent === null ? "\u2013" : s.battery_percent.toFixed(0) + " %");
        cell(tr, s.outbox_pending === null ? "\u2013" : String(s.outbox_pending));
        cell(tr, ago(s.last_detection_at, data.now));
        cell(tr, ago(s.last_heartbeat_at, data.now));
        var code = document.createElement("code");
        code.textContent = (s.config_hash || "\u2013").substring(0, 10);
        cell(tr, "").appendChild(code);
        cell(tr, s.commands_pending || s.commands_failed
          ? s.commands_pending + " pending" + (s.commands_failed ? " \u00b7 " + s.commands_failed + " failed" : "")
          : "\u2013", "commands");
        cell(tr, String(s.open_alerts));
        rows.appendChild(tr);
      });
      body.replaceChildren(rows);
      document.getElementById("fleet-count").textContent = data.stations.length + " stations";
    });
  }
  function liveStation(every) {
    var holder = document.getElementById("station-status");
    var id = holder.dataset.station;
    poll("/api/stations/" + encodeURIComponent(id), every, function (data) {
      var p = document.getElementById("presence");
      var online = data.station.online;
      var text = online === null ? "unknown" : (online ? "online" : "offline");
      p.textContent = text;
      p.className = "presence " + text;
      (data.commands || []).forEach(function (c) {
        var row = document.querySelector('tr[data-command="' + c.id + '"]');
        if (!row) { return; }
        var state = row.querySelector("td.state");
        state.textContent = c.state;
        state.className = "state " + c.state;
        row.querySelector("td.reason").textContent = c.reason || "";
      });
      var hash = document.getElementById("config-in-force");
      if (hash) { hash.textContent = data.station.config_hash || "\u2013"; }
    });
  }
  function liveAlerts(every, canAck, csrf) {
    poll("/api/alerts", every, function (data) {
      var body = document.querySelector("#alerts tbody");
      var rows = document.createDocumentFragment();
      data.alerts.forEach(function (a) {
        var tr = document.createElement("tr");
        tr.dataset.alert = a.id;
        tr.className = a.closed_at ? "closed" : "open";
        var st = cell(tr, "");
        var link = document.createElement("a");
        link.href = "/stations/" + encodeURIComponent(a.station);
        link.textContent = a.station;
        st.appendChild(link);
        cell(tr, a.kind + (a.subject ? " (" + a.subject + ")" : ""));
        cell(tr, a.detail);
        cell(tr, a.opened_at.substring(0, 19).replace("T", " "));
        cell(tr, (a.closed_at ? "closed " + a.closed_at.substring(11, 19) : "open") +
                 (a.acknowledged_at ? " \u00b7 acknowledged by " + a.acknowledged_by : ""), "state");
        var last = cell(tr, "");
        if (!a.acknowledged_at && canAck) {
          var form = document.createElement("form");
          form.method = "post";
          form.action = "/alerts/" + a.id + "/ack";
          var token = document.createElement("input");
          token.type = "hidden"; token.name = "csrf"; token.value = csrf;
          var button = document.createElement("button");
          button.type = "submit"; button.className = "ack"; button.textContent = "Acknowledge";
          form.appendChild(token); form.appendChild(button);
          last.appendChild(form);
        }
        rows.appendChild(tr);
      });
      if (!data.alerts.length) {
        var tr = document.createElement("tr");
        var td = cell(tr, "no alerts"); td.colSpan = 6;
        rows.appendChild(tr);
      }
      body.replaceChildren(rows);
    });
  }
  return { liveFleet: liveFleet, liveStation: liveStation, liveAlerts: liveAlerts };
})();
