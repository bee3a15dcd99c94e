// Shared setup of the compatibility tests: the paddock server comes from
// the environment (the Go e2e test sets it), the SDK's fixed base URL is
// rewritten to paddock's /compat/vercel by a fetch override, and the
// credentials are given explicitly, as a self-hosted user would.
import assert from "node:assert/strict";
import http from "node:http";

export const base = process.env.PADDOCK_URL;
// token is a member of the paddock team PADDOCK_TEAM (its id); the Go test
// makes both. A second team and a member token of it make the cross-team
// tests.
export const token = process.env.PADDOCK_TOKEN;
export const team = process.env.PADDOCK_TEAM;
export const team2 = process.env.PADDOCK_TEAM_2;
export const token2 = process.env.PADDOCK_TOKEN_2;
export const skip =
  !base || !token || !team
    ? "PADDOCK_URL, PADDOCK_TOKEN and PADDOCK_TEAM are not set (run through go test ./e2e -run TestVercelSDK)"
    : false;

const vercelAPI = "https://vercel.com/api";
const nativeFetch = globalThis.fetch;

// paddockFetch rewrites the SDK's requests to paddock. It drops the SDK's
// own undici dispatcher, which belongs to another copy of undici than
// Node's fetch.
export function paddockFetch(input, init = {}) {
  let url = typeof input === "string" ? input : input instanceof URL ? input.href : input.url;
  if (url.startsWith(vercelAPI)) url = base + "/compat/vercel" + url.slice(vercelAPI.length);
  const { dispatcher: _ignored, ...rest } = init;
  return nativeFetch(url, rest);
}

// withGlobalFetch runs fn with paddockFetch as the global fetch, for the
// few SDK entry points that do not pass their fetch option on (1.x's
// Snapshot.get).
export async function withGlobalFetch(fn) {
  globalThis.fetch = paddockFetch;
  try {
    return await fn();
  } finally {
    globalThis.fetch = nativeFetch;
  }
}

// creds are what every SDK entry point takes; each test file uses its own
// project so that names never collide between files. The project is only a
// namespace within the team; the team must be a paddock team.
export function creds(projectId, { teamId = team, tok = token } = {}) {
  return { token: tok, teamId, projectId, fetch: paddockFetch };
}

// nativeGet reads a sandbox through paddock's own API (/api/v1).
export async function nativeGet(id, tok) {
  const res = await nativeFetch(`${base}/api/v1/sandboxes/${id}`, { headers: { authorization: `Bearer ${tok}` } });
  return { status: res.status, body: await res.json() };
}

// eventually retries fn until it stops throwing, for at most ms.
export async function eventually(fn, ms = 15000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > deadline) throw err;
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

// localGet GETs url with node:http, resolving every *.localhost name to
// 127.0.0.1 as browsers do (route URLs are paddock's host form,
// <port>-<id>.localhost, which the system resolver here does not know).
// It follows no redirect.
export function localGet(url) {
  const u = new URL(url);
  const lookup = (host, opts, cb) => {
    if (host === "localhost" || host.endsWith(".localhost")) {
      if (opts && opts.all) return cb(null, [{ address: "127.0.0.1", family: 4 }]);
      return cb(null, "127.0.0.1", 4);
    }
    return cb(new Error(`not a local name: ${host}`));
  };
  return new Promise((resolve, reject) => {
    const req = http.get(u, { lookup }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (c) => (text += c));
      res.on("end", () => resolve({ status: res.statusCode, text }));
    });
    req.on("error", reject);
    req.setTimeout(10000, () => req.destroy(new Error(`GET ${url}: timed out`)));
  });
}

// serveAndFetch starts python's http.server on port inside the sandbox,
// serving dir, and fetches url until it answers with the expected body.
export async function serveAndFetch(sandbox, port, dir, url, want) {
  // Routes are the host form: a page the sandbox serves has its own origin.
  assert.match(new URL(url).hostname, new RegExp(`^${port}-[a-z0-9-]+\\.localhost$`));
  await sandbox.runCommand({
    cmd: "python3",
    args: ["-m", "http.server", String(port), "--bind", "0.0.0.0", "--directory", dir],
    detached: true,
  });
  const body = await eventually(async () => {
    const res = await localGet(url);
    if (res.status !== 200) throw new Error(`GET ${url}: ${res.status} ${res.text}`);
    return res.text;
  });
  assert.equal(body, want);
}

// openTerminal opens an interactive session's WebSocket (url and token from
// openInteractive) as Vercel's CLI does, sends the start frame and resolves
// once the socket is open. It collects output; until(re) waits for it to
// match, exit resolves with the exit frame's code. undici's WebSocket (a
// dependency of the SDK) for Node 20, which has no global one.
export async function openTerminal(url, token, start) {
  const { WebSocket } = await import("undici");
  const ws = new WebSocket(`${url}?token=${encodeURIComponent(token)}`);
  ws.binaryType = "arraybuffer";
  let output = "";
  let waiters = [];
  let resolveExit;
  const exit = new Promise((r) => (resolveExit = r));
  ws.addEventListener("message", (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "exit") resolveExit(msg.code);
      return;
    }
    output += Buffer.from(ev.data).toString("utf8");
    waiters = waiters.filter((w) => !w());
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", (ev) => reject(new Error(`WebSocket refused or closed: ${ev.message ?? ev.error ?? "error"}`)), { once: true });
  });
  ws.send(JSON.stringify(start));
  const enc = new TextEncoder();
  return {
    send: (text) => ws.send(enc.encode(text)),
    resize: (cols, rows) => ws.send(JSON.stringify({ type: "resize", cols, rows })),
    until: (re, ms = 10000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`terminal output ${JSON.stringify(output)} never matched ${re}`)), ms);
        const check = () => {
          if (!re.test(output)) return false;
          clearTimeout(timer);
          resolve(output);
          return true;
        };
        if (!check()) waiters.push(check);
      }),
    exit,
    close: () => ws.close(),
  };
}
