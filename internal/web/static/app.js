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
  // An event that comes while a refresh is in flight asks for one more
  // after it (pending): the page it fetched may predate that event.
  var refreshing = null, pending = false;
  function refreshed() {
    refreshing = null;
    if (pending) { pending = false; refresh(); }
  }
  function refresh() {
    if (refreshing) { pending = true; return; }
    refreshing = setTimeout(function () {
      fetch(location.href, { credentials: "same-origin" }).then(function (r) {
        if (r.redirected && r.url.indexOf("/ui/login") >= 0) { location.href = r.url; return null; }
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (!html) { refreshed(); return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById("main");
        var active = document.activeElement;
        // Keep what the user is typing or reading in a command's output.
        if (!next || (active && active.closest && active.closest("form#run, #term, #demo"))) { refreshed(); return; }
        var keep = document.querySelectorAll("[data-keep]");
        main.innerHTML = next.innerHTML;
        keep.forEach(function (el) {
          var slot = document.getElementById(el.id);
          if (slot) slot.replaceWith(el);
        });
        enhance();
        refreshed();
      }, function () { refreshed(); });
    }, 250);
  }
  // sse reads a server-sent event stream with fetch (the API's events
  // are named by type, which EventSource hands only to listeners of each
  // name) and calls onEvent(data, id) for each; it resolves when the
  // stream ends. method/body make it a POST (the agent's streamed reply).
  function sse(path, onEvent, opts) {
    opts = opts || {};
    var headers = { Accept: "text/event-stream" };
    if (opts.last) headers["Last-Event-ID"] = opts.last;
    var init = { headers: headers, credentials: "same-origin" };
    if (opts.body !== undefined) {
      init.method = "POST";
      headers["Content-Type"] = "application/json";
      headers["X-CSRF-Token"] = csrf;
      init.body = JSON.stringify(opts.body);
    }
    return fetch("/ui/api/v1" + path, init).then(function (r) {
      if (r.status === 401) { location.href = "/ui/login?next=" + encodeURIComponent(location.pathname); return; }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
      function pump() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buf += dec.decode(chunk.value, { stream: true });
          var blocks = buf.split("\n\n");
          buf = blocks.pop();
          blocks.forEach(function (b) {
            var data = null, id = "";
            b.split("\n").forEach(function (l) {
              if (l.indexOf("id:") === 0) id = l.slice(3).trim();
              if (l.indexOf("data:") === 0) data = (data === null ? "" : data + "\n") + l.slice(5).replace(/^ /, "");
            });
            if (data !== null) onEvent(data, id);
          });
          return pump();
        });
      }
      return pump();
    });
  }

  // The team's event feed keeps live pages current; it resumes after the
  // last id when the server ends the stream.
  function follow(last) {
    sse("/events", function (data, id) { last = id || last; refresh(); }, { last: last })
      .then(function () { setTimeout(function () { follow(last); }, 1000); }, function () { /* navigated away, or no feed here */ });
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

  // A small terminal: a screen of lines with a cursor, fed the PTY's
  // output. It follows \r, \n, backspace and the cursor/erase escapes a
  // shell prompt uses, and drops the rest (colours, titles).
  function Screen(pre) {
    this.pre = pre; this.lines = [""]; this.row = 0; this.col = 0; this.esc = "";
  }
  Screen.prototype.put = function (ch) {
    var l = this.lines[this.row];
    while (l.length < this.col) l += " ";
    this.lines[this.row] = l.slice(0, this.col) + ch + l.slice(this.col + 1);
    this.col++;
  };
  Screen.prototype.csi = function (seq) {
    var final = seq.slice(-1), n = parseInt(seq.slice(0, -1), 10) || 1;
    if (final === "D") this.col = Math.max(0, this.col - n);
    else if (final === "C") this.col += n;
    else if (final === "K") this.lines[this.row] = this.lines[this.row].slice(0, this.col);
    else if (final === "J" && seq.slice(0, -1) === "2") { this.lines = [""]; this.row = 0; this.col = 0; }
  };
  Screen.prototype.write = function (text) {
    for (var i = 0; i < text.length; i++) {
      var ch = text[i];
      if (this.esc) {
        this.esc += ch;
        if (this.esc === "\x1b[" || this.esc === "\x1b]") continue;
        if (this.esc[1] === "[" && /[@-~]/.test(ch)) { this.csi(this.esc.slice(2)); this.esc = ""; }
        else if (this.esc[1] === "]" && (ch === "\x07" || this.esc.slice(-2) === "\x1b\\")) this.esc = "";
        else if (this.esc[1] !== "[" && this.esc[1] !== "]") this.esc = "";
        continue;
      }
      if (ch === "\x1b") this.esc = ch;
      else if (ch === "\r") this.col = 0;
      else if (ch === "\n") { this.row++; if (this.row === this.lines.length) this.lines.push(""); }
      else if (ch === "\b") this.col = Math.max(0, this.col - 1);
      else if (ch >= " ") this.put(ch);
    }
    if (this.lines.length > 1000) { this.row -= this.lines.length - 1000; this.lines = this.lines.slice(-1000); }
    this.pre.textContent = this.lines.join("\n");
    this.pre.scrollTop = this.pre.scrollHeight;
  };

  var keys = { Enter: "\r", Backspace: "\x7f", Tab: "\t", Escape: "\x1b", ArrowUp: "\x1b[A", ArrowDown: "\x1b[B",
    ArrowRight: "\x1b[C", ArrowLeft: "\x1b[D", Home: "\x1b[H", End: "\x1b[F", Delete: "\x1b[3~" };

  // cellsOf is the terminal's size in cells: what fits in the <pre> at
  // its font, measured with a probe (an empty <pre> is not displayed).
  function cellsOf(pre) {
    var probe = document.createElement("span");
    probe.textContent = "0000000000";
    pre.appendChild(probe);
    var box = probe.getBoundingClientRect(), cs = getComputedStyle(pre);
    var w = pre.clientWidth - parseFloat(cs.paddingLeft) - parseFloat(cs.paddingRight);
    var h = pre.clientHeight - parseFloat(cs.paddingTop) - parseFloat(cs.paddingBottom);
    pre.removeChild(probe);
    var cw = box.width / 10 || 8, lh = box.height || 16;
    function clamp(n, lo, hi) { return Math.max(lo, Math.min(hi, n || lo)); }
    return { cols: clamp(Math.floor(w / cw), 20, 4096), rows: clamp(Math.floor(h / lh), 5, 4096) };
  }

  function openTerminal(btn) {
    var sandbox = btn.getAttribute("data-sandbox");
    var section = document.getElementById("term-section");
    var pre = document.getElementById("term");
    var full = document.getElementById("term-full");
    var screen = new Screen(pre);
    btn.disabled = true;
    pre.hidden = false;
    var size = cellsOf(pre);
    // Keys go out in order, one request at a time; those typed before the
    // session exists wait for it.
    var base = null, queue = Promise.resolve(), pending = "";
    function send() {
      if (!pending || !base) return;
      var data = pending; pending = "";
      var path = "/ui/api/v1" + base + "/input";
      queue = queue.then(function () {
        return fetch(path, { method: "POST", credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf, "Content-Type": "application/octet-stream" }, body: data });
      }).catch(function () {});
    }
    pre.addEventListener("keydown", function (e) {
      // Shift+Tab stays the browser's, so the keyboard can leave.
      if (e.key === "Tab" && e.shiftKey) return;
      var data = keys[e.key];
      if (!data && e.ctrlKey && e.key.length === 1) data = String.fromCharCode(e.key.toUpperCase().charCodeAt(0) - 64);
      else if (!data && e.key.length === 1 && !e.metaKey && !e.altKey) data = e.key;
      if (!data) return;
      e.preventDefault();
      pending += data;
      send();
    });
    pre.addEventListener("paste", function (e) {
      e.preventDefault();
      pending += (e.clipboardData || window.clipboardData).getData("text");
      send();
    });
    api("POST", "/sandboxes/" + sandbox + "/pty", size)
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.message || r.status); return j; }); })
      .then(function (cmd) {
        document.getElementById("term-hint").hidden = false;
        full.hidden = false;
        pre.focus();
        base = "/sandboxes/" + sandbox + "/pty/" + cmd.id;
        send();
        // The PTY follows the terminal's box: the window's size, and full
        // screen or not. Its programs get SIGWINCH.
        var fitting = null;
        function fit() {
          clearTimeout(fitting);
          fitting = setTimeout(function () {
            var next = cellsOf(pre);
            if (next.rows === size.rows && next.cols === size.cols) return;
            size = next;
            api("POST", base + "/resize", next).catch(function () {});
          }, 100);
        }
        window.addEventListener("resize", fit);
        full.addEventListener("click", function () {
          var on = !section.classList.contains("term-full");
          section.classList.toggle("term-full", on);
          full.setAttribute("aria-pressed", on ? "true" : "false");
          full.textContent = on ? "Exit full screen" : "Full screen";
          fit();
          pre.focus();
        });
        return fetch("/ui/api/v1" + base + "/output", { credentials: "same-origin" }).then(function (r) {
          var reader = r.body.getReader(), dec = new TextDecoder(), buf = "";
          function pump() {
            return reader.read().then(function (chunk) {
              if (chunk.done) return;
              buf += dec.decode(chunk.value, { stream: true });
              var lines = buf.split("\n");
              buf = lines.pop();
              lines.forEach(function (l) {
                if (!l) return;
                var m = JSON.parse(l);
                if (m.data) {
                  var bin = atob(m.data), bytes = new Uint8Array(bin.length);
                  for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
                  screen.write(new TextDecoder().decode(bytes));
                } else if (m.exit) {
                  screen.write("\r\n[session ended]\r\n");
                  window.removeEventListener("resize", fit);
                }
              });
              return pump();
            });
          }
          return pump();
        });
      })
      .catch(function (err) { pre.textContent = "[" + err.message + "]"; });
  }

  // Activate with live progress: the activation's event stream, queue
  // position included, until it is ready, failed or stopped.
  function activate(form) {
    var project = form.getAttribute("data-project");
    var list = form.parentNode.querySelector(".progress") || document.querySelector(".progress");
    var state = document.getElementById("demo-state");
    list.innerHTML = "";
    function step(text) {
      var li = document.createElement("li");
      li.textContent = text;
      list.appendChild(li);
      if (state) state.textContent = text.split(" ")[0];
    }
    return api("POST", "/projects/" + project + "/activate", {})
      .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.message || r.status); return j; }); })
      .then(function (act) {
        return new Promise(function (resolve, reject) {
          var done = false;
          sse("/activations/" + act.id + "/events", function (data) {
            var ev = JSON.parse(data);
            var text = ev.type;
            if (ev.data && ev.data.position) text += " (position " + ev.data.position + " in the queue)";
            if (ev.message) text += ": " + ev.message;
            step(text);
            if (ev.type === "ready") { done = true; resolve(act); }
            if (ev.type === "failed" || ev.type === "stopped") { done = true; reject(new Error(text)); }
          }).then(function () { if (!done) reject(new Error("the progress stream ended")); }, reject);
        });
      })
      .catch(function (err) { step("error: " + err.message); throw err; });
  }

  // The demo's chat: a goose session through the app proxy, kept in
  // sessionStorage so that coming back after an idle deactivation resumes it.
  function demo(section) {
    var project = section.getAttribute("data-project");
    var form = document.getElementById("chat-form");
    var chat = document.getElementById("chat");
    var state = document.getElementById("demo-state");
    var key = "paddock-demo-session-" + project;
    function say(cls, text) {
      var div = document.createElement("div");
      div.className = "msg " + cls;
      div.textContent = text;
      chat.appendChild(div);
      return div;
    }
    function app(path, body) {
      return api("POST", "/projects/" + project + "/app" + path, body).then(function (r) {
        return r.json().then(function (j) { if (!r.ok) throw new Error((j && j.message) || ("HTTP " + r.status)); return j; });
      });
    }
    function ensureActive() {
      if (state && state.textContent === "ready") return Promise.resolve();
      say("note", "Activating…");
      return activate(section.querySelector("form.activate"));
    }
    // restored shows what the agent kept of a session it resumed: the
    // count of earlier messages, and those messages themselves when this
    // page has not shown them (it was opened again after a deactivation).
    function restored(id) {
      return api("GET", "/projects/" + project + "/app/sessions/" + encodeURIComponent(id))
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (s) {
          var msgs = ((s && s.conversation) || []).filter(function (m) { return m.metadata && m.metadata.userVisible; });
          // The message being sent is on the page already; any before it
          // means the page saw the earlier exchange itself.
          var mine = chat.querySelectorAll(".you"), current = mine[mine.length - 1];
          var shown = mine.length > 1 || !!chat.querySelector(".agent");
          say("note restored", "Session " + id + " restored: " + msgs.length + " earlier message" + (msgs.length === 1 ? "" : "s") +
            (shown || !msgs.length ? "." : ", shown above."));
          if (shown) return;
          msgs.forEach(function (m) {
            var text = (m.content || []).filter(function (c) { return c.type === "text"; }).map(function (c) { return c.text; }).join("");
            var div = document.createElement("div");
            div.className = "msg earlier " + (m.role === "user" ? "you" : "agent");
            div.textContent = text;
            chat.insertBefore(div, current);
          });
        }, function () {});
    }
    function session() {
      var id = sessionStorage.getItem(key);
      var start = id ? Promise.resolve({ id: id }) : app("/agent/start", { working_dir: "/home/user" });
      return start.then(function (s) {
        return app("/agent/resume", { session_id: s.id, load_model_and_extensions: true }).then(function () {
          sessionStorage.setItem(key, s.id);
          return id ? restored(id).then(function () { return s.id; }) : s.id;
        }, function (err) {
          // A session the agent no longer has: the next message starts anew.
          sessionStorage.removeItem(key);
          throw err;
        });
      });
    }
    var sid = null;
    form.addEventListener("submit", function (e) {
      e.preventDefault();
      var text = form.elements.message.value;
      form.elements.message.value = "";
      say("you", text);
      ensureActive().then(function () { return sid || session(); }).then(function (id) {
        sid = id;
        var out = say("agent", "");
        return sse("/projects/" + project + "/app/reply", function (data) {
          var f = JSON.parse(data);
          if (f.type === "Message" && f.message && f.message.role === "assistant") {
            (f.message.content || []).forEach(function (c) { if (c.type === "text") out.textContent += c.text; });
          } else if (f.type === "Error") out.textContent += " [" + f.error + "]";
        }, { body: { session_id: id, user_message: { role: "user", created: Math.floor(Date.now() / 1000),
          content: [{ type: "text", text: text }], metadata: { userVisible: true, agentVisible: true } } } });
      }).catch(function (err) { say("note", "[" + err.message + "]"); sid = null; });
    });
    // Deactivation, idle or not, shows up on the project's events.
    var reasons = { idle_timeout: "idle: nobody talked to the agent for its idle timeout",
      max_lifetime: "it reached its maximum lifetime", explicit: "deactivated on request", budget: "the team's budget is spent" };
    sse("/events?project=" + encodeURIComponent(project) + "&type=activation.deactivating&type=activation.stopped", function (data) {
      var ev = JSON.parse(data);
      var reason = (ev.data && ev.data.reason) || "";
      if (ev.type === "activation.deactivating") {
        if (state) state.textContent = "deactivating";
        return;
      }
      if (state) state.textContent = "stopped";
      sid = null;
      say("note deactivated", "Deactivated (" + (reasons[reason] || reason || ev.message || ev.type) +
        "). Send a message to come back: the session is restored.");
    }).catch(function () {});
  }

  function enhance() {
    document.querySelectorAll("form.activate").forEach(function (f) {
      if (f.dataset.bound) return;
      f.dataset.bound = "1";
      f.addEventListener("submit", function (e) {
        e.preventDefault();
        activate(f).then(function () { if (!document.getElementById("demo")) refresh(); }, function () {});
      });
    });
    var demoSection = document.getElementById("demo");
    if (demoSection && !demoSection.dataset.bound) { demoSection.dataset.bound = "1"; demo(demoSection); }
    var topen = document.getElementById("term-open");
    if (topen && !topen.dataset.bound) {
      topen.dataset.bound = "1";
      topen.addEventListener("click", function () { openTerminal(topen); });
    }
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
