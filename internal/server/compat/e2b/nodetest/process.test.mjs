// The unmodified e2b JS SDK's data plane against paddock: commands (run,
// streamed, in the background, with stdin, killed), PTYs (create, input,
// resize, output), getHost(port) serving a server from inside the sandbox,
// and team isolation of envd. The Go test (go test ./e2e -run TestE2BSDK)
// starts paddock with TLS from its development CA and sets E2B_API_URL,
// E2B_API_KEY, E2B_DOMAIN, E2B_SANDBOX_URL (paddock's own address: envd
// is told apart by the E2b-Sandbox-Id header, so no DNS is needed) and
// NODE_EXTRA_CA_CERTS as a user would.
import assert from "node:assert/strict";
import https from "node:https";
import { after, before, describe, test } from "node:test";
import { CommandExitError, Sandbox, SandboxNotFoundError } from "e2b";

const key = process.env.E2B_API_KEY;
const key2 = process.env.E2B_API_KEY_2;
const sandboxURL = process.env.E2B_SANDBOX_URL;
const skip =
  !key || !key2 || !process.env.E2B_API_URL || !sandboxURL
    ? "E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and E2B_API_KEY_2 are not set (run through go test ./e2e -run TestE2BSDK)"
    : false;

// get fetches an https URL of a host under paddock's domain from
// 127.0.0.1, keeping the host name for TLS and the Host header: the
// <port>-<id>.<domain> names have no DNS here.
function get(url, headers = {}) {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const req = https.request(
      { host: "127.0.0.1", port: u.port || 443, path: u.pathname + u.search, servername: u.hostname, headers: { host: u.host, ...headers } },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (c) => (body += c));
        res.on("end", () => resolve({ status: res.statusCode, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

// rpc calls an envd Connect method by hand, as another client would.
async function rpc(method, sandboxId, headers, body = {}) {
  const res = await fetch(`${sandboxURL}/process.Process/${method}`, {
    method: "POST",
    headers: { "content-type": "application/json", "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": "49983", ...headers },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.text() };
}

async function eventually(what, f, ms = 15_000) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await f();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  assert.fail(`${what}: not within ${ms} ms (last: ${last})`);
}

describe("envd", { skip }, () => {
  let sbx;
  before(async () => {
    sbx = await Sandbox.create({ envs: { GREETING: "hello" }, timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill();
  });

  test("commands.run: output, exit code, env, cwd, user", async () => {
    const r = await sbx.commands.run("echo out; echo err >&2; echo $GREETING $X; pwd", { envs: { X: "y" }, cwd: "/tmp" });
    assert.equal(r.exitCode, 0);
    assert.equal(r.stdout, "out\nhello y\n/tmp\n");
    assert.equal(r.stderr, "err\n");
    await assert.rejects(sbx.commands.run("exit 3"), (e) => e instanceof CommandExitError && e.exitCode === 3);
    assert.equal((await sbx.commands.run("id -u", { user: "root" })).stdout.trim(), "0");
    assert.notEqual((await sbx.commands.run("id -u")).stdout.trim(), "0");
  });

  test("commands.run streams output as it comes", async () => {
    const chunks = [];
    const r = await sbx.commands.run("for i in 1 2 3; do echo line$i; sleep 0.2; done", { onStdout: (d) => chunks.push(d) });
    assert.equal(r.stdout, "line1\nline2\nline3\n");
    assert.equal(chunks.join(""), r.stdout);
    assert.ok(chunks.length >= 2, `one chunk per line was expected, got ${JSON.stringify(chunks)}`);
  });

  test("in the background: list, connect, wait", async () => {
    const h = await sbx.commands.run("sleep 1; echo done", { background: true });
    assert.ok(h.pid > 0);
    const procs = await sbx.commands.list();
    assert.ok(procs.some((p) => p.pid === h.pid && p.cmd === "/bin/bash"), JSON.stringify(procs));
    const again = await sbx.commands.connect(h.pid);
    const r = await h.wait();
    assert.equal(r.stdout, "done\n");
    assert.equal((await again.wait()).exitCode, 0);
  });

  test("with stdin", async () => {
    const h = await sbx.commands.run("cat", { background: true, stdin: true });
    await h.sendStdin("one ");
    await sbx.commands.sendStdin(h.pid, "two");
    await h.closeStdin();
    const r = await h.wait();
    assert.equal(r.stdout, "one two");
  });

  test("killed", async () => {
    const h = await sbx.commands.run("sleep 60", { background: true });
    assert.equal(await h.kill(), true);
    await assert.rejects(h.wait(), (e) => e instanceof CommandExitError && e.exitCode === -1);
    assert.equal(await sbx.commands.kill(h.pid), false, "a killed process is not found again");
  });

  test("pty: create, input, resize, output", async () => {
    const dec = new TextDecoder();
    let out = "";
    const term = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => (out += dec.decode(d, { stream: true })) });
    const send = (s) => sbx.pty.sendInput(term.pid, new TextEncoder().encode(s));
    await send("echo pty-$((6*7))\n");
    await eventually("the terminal's output", () => out.includes("pty-42"));
    await send("stty size\n");
    await eventually("the first size", () => out.includes("24 80"));
    await sbx.pty.resize(term.pid, { cols: 120, rows: 40 });
    await send("stty size\n");
    await eventually("the size after resize", () => out.includes("40 120"));
    await send("exit\n");
    const r = await term.wait();
    assert.equal(r.exitCode, 0);
  });

  test("getHost(port) serves a server started inside the sandbox", async () => {
    await sbx.commands.run("mkdir -p /tmp/www && echo served > /tmp/www/index.txt");
    const server = await sbx.commands.run("exec python3 -m http.server 8000 --bind 0.0.0.0", { background: true, cwd: "/tmp/www", timeoutMs: 0 });
    try {
      const url = `https://${sbx.getHost(8000)}/index.txt`;
      assert.match(url, new RegExp(`^https://8000-${sbx.sandboxId}\\.`));
      const res = await eventually("the server's answer", async () => {
        const r = await get(url, { "e2b-traffic-access-token": sbx.trafficAccessToken });
        return r.status === 200 ? r : false;
      });
      assert.equal(res.body, "served\n");
      assert.equal((await get(url)).status, 401, "a private port opened without a token");
      assert.equal((await get(url, { "e2b-traffic-access-token": "x" + sbx.trafficAccessToken })).status, 401);
      // The envd host form too, for a client that resolves it.
      const health = await get(`https://${sbx.getHost(49983)}/health`, { "x-access-token": sbx.envdAccessToken });
      assert.equal(health.status, 204);
    } finally {
      await server.kill();
    }
  });

  test("another team cannot reach the sandbox's envd", async () => {
    await assert.rejects(Sandbox.connect(sbx.sandboxId, { apiKey: key2 }), SandboxNotFoundError);
    const theirs = await Sandbox.create({ apiKey: key2 });
    try {
      const cases = {
        "no token": {},
        "their sandbox's token": { "x-access-token": theirs.envdAccessToken },
        "their API key": { "x-api-key": key2, authorization: `Bearer ${key2}` },
      };
      for (const [name, headers] of Object.entries(cases)) {
        const r = await rpc("List", sbx.sandboxId, headers);
        assert.equal(r.status, 401, `${name}: ${r.status} ${r.body}`);
        assert.match(r.body, /unauthenticated/, name);
      }
      assert.equal((await rpc("List", sbx.sandboxId, { "x-access-token": sbx.envdAccessToken })).status, 200);
      // Their own sandbox works with their token.
      assert.equal((await theirs.commands.run("echo theirs")).stdout, "theirs\n");
    } finally {
      await theirs.kill();
    }
  });
});
