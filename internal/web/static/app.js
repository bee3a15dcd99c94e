// paddock dashboard: progressive enhancement only. Every page works
// without this file; with it, pages refresh themselves from the event
// feed, copy buttons copy, and a sandbox page runs commands with their
// output streamed in. It talks to the API through /ui/api/v1, which adds
// the session's token; writes send the page's CSRF token.
"use strict";
(function () {
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.content : "";
  var main = document.getElementById("main");

  function api(method, path, body) {
    var opts = { method: method, headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch("/ui/api/v1" + path, opts).then(function (r) {
      if (r.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); }
      return r;
    });
  }

  // Copy buttons: data-copy names the input whose value to copy.
  document.addEventListener("click", function (e) {
    var b = e.target.closest("[data-copy]");
    if (!b) return;
    var input = document.getElementById(b.getAttribute("data-copy"));
    if (!input) return;
    input.select();
    var done = function () { b.textContent = "Copied"; };
    if (navigator.clipboard) navigator.clipboard.writeText(input.value).then(done, function () {});
    else done();
  });

  // Live pages: any event of the team reloads the main part of the page
  // in place (debounced), so lists stay current without a reload.
  var live = main && main.getAttribute("data-live");
  var refreshing = null;
  function refresh() {
    if (refreshing) return;
    refreshing = setTimeout(function () {
      fetch(location.href, { credentials: "same-origin" }).then(function (r) {
        if (r.redirected && r.url.indexOf("/ui/login") >= 0) { location.href = r.url; return null; }
        return r.ok ? r.text() : null;
      }).then(function (html) {
        refreshing = null;
        if (!html) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("main");
        var active = document.activeElement;
        // Keep what the user is typing or reading in a command's output.
        if (!next || (active && active.closest && active.closest("form#run, #term"))) return;
        var keep = document.querySelectorAll("[data-keep]");
        main.innerHTML = next.innerHTML;
        keep.forEach(function (el) {
          var slot = document.getElementById(el.id);
          if (slot) slot.replaceWith(el);
        });
        enhance();
      }, function () { refreshing = null; });
    }, 250);
  }
  // The feed's events are named by type (sandbox.created, …), which
  // EventSource only hands to listeners of each name: read the stream
  // with fetch instead, and resume after the last id on reconnect.
  function follow(last) {
    var headers = { Accept: "text/event-stream" };
    if (last) headers["Last-Event-ID"] = last;
    fetch("/ui/api/v1/events", { headers: headers, credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); return; }
      if (!r.ok || !r.body) return; // no event feed on this server: the page stays as it is
      var reader = r.body.getReader();
      var dec = new TextDecoder();
      var buf = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) { setTimeout(function () { follow(last); }, 1000); return; }
          buf += dec.decode(chunk.value, { stream: true });
          var blocks = buf.split("\n\n");
          buf = blocks.pop();
          blocks.forEach(function (b) {
            var data = false;
            b.split("\n").forEach(function (l) {
              if (l.indexOf("id: ") === 0) last = l.slice(4);
              if (l.indexOf("data: ") === 0) data = true;
            });
            if (data) refresh();
          });
          return pump();
        });
      }
      return pump();
    }).catch(function () { /* navigation away or a dropped connection */ });
  }
  if (live && window.fetch && window.ReadableStream) follow("");

  // Stream a command's output (NDJSON log lines) into a <pre>.
  function streamLogs(sandbox, cmd, out) {
    return api("GET", "/sandboxes/" + sandbox + "/commands/" + cmd + "/logs").then(function (r) {
      var reader = r.body.getReader();
      var dec = new TextDecoder();
      var buf = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buf += dec.decode(chunk.value, { stream: true });
          var lines = buf.split("\n");
          buf = lines.pop();
          lines.forEach(function (l) {
            if (!l) return;
            var m = JSON.parse(l);
            if (m.data) out.textContent += m.data;
            else if (m.dataBase64) out.textContent += atob(m.dataBase64);
            else if (m.exit) out.textContent += "\n[exit " + (m.exit.exitCode !== undefined ? m.exit.exitCode : m.exit.signal) + "]\n";
            else if (m.error) out.textContent += "\n[error: " + m.error.message + "]\n";
          });
          return pump();
        });
      }
      return pump();
    });
  }

  function enhance() {
    document.querySelectorAll(".needs-js").forEach(function (el) { el.hidden = false; });
    var run = document.getElementById("run");
    if (run && !run.dataset.bound) {
      run.dataset.bound = "1";
      run.addEventListener("submit", function (e) {
        e.preventDefault();
        var out = document.getElementById("run-output");
        var sandbox = run.getAttribute("data-sandbox");
        var line = run.elements.cmd.value;
        out.textContent = "$ " + line + "\n";
        api("POST", "/sandboxes/" + sandbox + "/commands", { cmd: "sh", args: ["-c", line], detached: true })
          .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.message || r.status); return j; }); })
          .then(function (c) { return streamLogs(sandbox, c.id, out); })
          .catch(function (err) { out.textContent += "[" + err.message + "]\n"; });
      });
    }
  }
  enhance();
})();
