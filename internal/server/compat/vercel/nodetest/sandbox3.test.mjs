// @vercel/sandbox 3.x (v2 + POST /v3/sandboxes) against paddock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Sandbox, Session, Snapshot, APIError } from "sandbox3";
import { creds, skip, serveAndFetch, localGet, eventually, openTerminal } from "./helpers.mjs";

const c = creds("prj_sdk3");

test("@vercel/sandbox 3.x", { skip, timeout: 600_000 }, async (t) => {
  const name = `sdk3-${Date.now()}`;
  const sandbox = await Sandbox.create({ ...c, name, ports: [3000], timeout: 120_000, env: { GREETING: "hi" } });
  const cleanup = [sandbox];
  t.after(async () => {
    for (const sb of cleanup) await sb.delete().catch(() => {});
  });

  await t.test("create with ports", () => {
    assert.equal(sandbox.name, name);
    assert.equal(sandbox.status, "running");
    assert.equal(sandbox.persistent, true);
    assert.equal(sandbox.routes.length, 1);
    assert.equal(sandbox.routes[0].port, 3000);
    assert.match(sandbox.routes[0].url, /^http:\/\//);
    assert.ok(sandbox.createdAt instanceof Date && sandbox.createdAt.getTime() > 0);
    assert.ok(sandbox.expiresAt.getTime() > Date.now());
  });

  await t.test("writeFiles, readFile, readFileToBuffer", async () => {
    await sandbox.writeFiles([
      { path: "hello.txt", content: Buffer.from("hello paddock\n") },
      { path: "/tmp/bin/greet.sh", content: "#!/bin/sh\necho \"$GREETING from script\"\n", mode: 0o755 },
    ]);
    const buf = await sandbox.readFileToBuffer({ path: "hello.txt" });
    assert.equal(buf.toString(), "hello paddock\n");
    const abs = await sandbox.readFileToBuffer({ path: `${sandbox.cwd}/hello.txt` });
    assert.equal(abs.toString(), "hello paddock\n");
    const stream = await sandbox.readFile({ path: "/tmp/bin/greet.sh" });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.match(Buffer.concat(chunks).toString(), /from script/);
    assert.equal(await sandbox.readFileToBuffer({ path: "/no/such/file" }), null);
    const run = await sandbox.runCommand("/tmp/bin/greet.sh");
    assert.equal(run.exitCode, 0);
    assert.equal(await run.stdout(), "hi from script\n");
  });

  await t.test("the working directory is /vercel/sandbox, the user's", async () => {
    assert.equal(sandbox.cwd, "/vercel/sandbox");
    assert.equal(sandbox.currentSession().cwd, "/vercel/sandbox");
    // writeFiles put hello.txt there (the SDK joins relative paths with the session's cwd).
    assert.equal((await sandbox.runCommand("cat", ["/vercel/sandbox/hello.txt"]).then((r) => r.stdout())), "hello paddock\n");
    const owner = await sandbox.runCommand("stat", ["-c", "%U", "/vercel/sandbox"]);
    const me = await sandbox.runCommand("id", ["-un"]);
    assert.equal(await owner.stdout(), await me.stdout());
    const pwd = await sandbox.runCommand("pwd");
    assert.equal((await pwd.stdout()).trim(), "/vercel/sandbox");
    const rel = await sandbox.runCommand({ cmd: "pwd", cwd: "sub/.." });
    assert.equal((await rel.stdout()).trim(), "/vercel/sandbox");
  });

  await t.test("mkDir", async () => {
    await sandbox.mkDir("/tmp/made");
    const r = await sandbox.runCommand("test", ["-d", "/tmp/made"]);
    assert.equal(r.exitCode, 0);
    // Not recursive, as on Vercel: an existing path or a missing parent fails.
    await assert.rejects(sandbox.mkDir("/tmp/made"), (err) => err instanceof APIError && err.response.status === 409);
    await assert.rejects(sandbox.mkDir("/tmp/no/parent"), (err) => err instanceof APIError && err.response.status === 404);
    await sandbox.fs.mkdir("/tmp/deep/er/still", { recursive: true });
    assert.equal((await sandbox.runCommand("test", ["-d", "/tmp/deep/er/still"])).exitCode, 0);
  });

  await t.test("runCommand waited: exit code, stdout, stderr, streams", async () => {
    const out = [];
    const { Writable } = await import("node:stream");
    const stdout = new Writable({ write(chunk, _enc, cb) { out.push(String(chunk)); cb(); } });
    const r = await sandbox.runCommand({ cmd: "sh", args: ["-c", "echo out; echo err >&2; exit 3"], stdout });
    assert.equal(r.exitCode, 3);
    assert.equal(await r.stdout(), "out\n");
    assert.equal(await r.stderr(), "err\n");
    assert.equal(out.join(""), "out\n");
    assert.equal(typeof r.cmdId, "string");
    const again = await sandbox.getCommand(r.cmdId);
    assert.equal(again.exitCode, 3);
    const cwd = await sandbox.runCommand("pwd");
    assert.equal((await cwd.stdout()).trim(), sandbox.cwd);
    const sudo = await sandbox.runCommand({ cmd: "id", args: ["-u"], sudo: true });
    assert.equal((await sudo.stdout()).trim(), "0");
  });

  await t.test("runCommand detached: logs iterator, wait, stdout", async () => {
    const cmd = await sandbox.runCommand({
      cmd: "sh",
      args: ["-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo bye >&2"],
      detached: true,
    });
    assert.equal(cmd.exitCode, null);
    const lines = [];
    for await (const log of cmd.logs()) lines.push(`${log.stream}:${log.data}`);
    assert.equal(lines.filter((l) => l.startsWith("stdout:")).join(""), "stdout:line1\nstdout:line2\nstdout:line3\n");
    assert.ok(lines.includes("stderr:bye\n"), lines.join("|"));
    const done = await cmd.wait();
    assert.equal(done.exitCode, 0);
    assert.equal(await cmd.stdout(), "line1\nline2\nline3\n");
  });

  await t.test("kill", async () => {
    const cmd = await sandbox.runCommand({ cmd: "sleep", args: ["60"], detached: true });
    await cmd.kill();
    const done = await cmd.wait();
    assert.equal(done.exitCode, 128 + 15);
  });

  await t.test("extendTimeout", async () => {
    const before = sandbox.expiresAt.getTime();
    await sandbox.extendTimeout(60_000);
    const after = sandbox.expiresAt.getTime();
    assert.ok(after - before >= 59_000, `expiresAt moved by ${after - before} ms`);
  });

  await t.test("network policy", async () => {
    assert.equal(await sandbox.updateNetworkPolicy("deny-all"), "deny-all");
    const custom = { allow: ["example.com"], subnets: { deny: ["10.0.0.0/8"] } };
    if (process.env.PADDOCK_RUNTIME === "kubernetes") {
      // A Pod's egress is a NetworkPolicy, which names no domain: refused
      // (501 no_domain_policy), and subnets alone work.
      await assert.rejects(sandbox.updateNetworkPolicy(custom), (err) => err instanceof APIError && err.response.status === 501);
      const subnets = { subnets: { allow: ["203.0.113.0/24"], deny: ["10.0.0.0/8"] } };
      assert.deepEqual(await sandbox.updateNetworkPolicy(subnets), subnets);
    } else {
      assert.deepEqual(await sandbox.updateNetworkPolicy(custom), custom);
    }
    assert.equal(await sandbox.updateNetworkPolicy("allow-all"), "allow-all");
    await assert.rejects(
      sandbox.updateNetworkPolicy({ allow: { "api.example.com": [{ transform: [{ headers: { authorization: "x" } }] }] } }),
      (err) => err instanceof APIError && err.response.status === 400,
    );
  });

  await t.test("the port's route URL serves a request", async () => {
    await sandbox.writeFiles([{ path: "/tmp/www/index.html", content: "served by the sandbox\n" }]);
    await serveAndFetch(sandbox, 3000, "/tmp/www", sandbox.routes[0].url, "served by the sandbox\n");
  });

  await t.test("domain(port): the SDK's vercel.run name, or the route URL with the documented patch", async () => {
    // The SDK builds https://<subdomain>.vercel.run itself: not paddock's.
    assert.equal(sandbox.domain(3000), `https://${sandbox.routes[0].subdomain}.vercel.run`);
    // docs/compat-vercel.md's one line: domain() returns routes[].url,
    // paddock's signed URL of the port under the operator's domain.
    const original = Session.prototype.domain;
    Session.prototype.domain = function (p) {
      const r = this.routes.find((r) => r.port == p);
      if (!r) throw new Error(`No route for port ${p}`);
      return r.url;
    };
    try {
      assert.equal(sandbox.domain(3000), sandbox.routes[0].url);
      assert.throws(() => sandbox.domain(4000), /No route for port 4000/);
      const res = await localGet(sandbox.domain(3000));
      assert.equal(res.status, 200);
      assert.equal(res.text, "served by the sandbox\n");
      // A path of the app: set it on the URL, which keeps the token.
      const u = new URL(sandbox.domain(3000));
      u.pathname = "/index.html";
      assert.equal((await localGet(u.href)).text, "served by the sandbox\n");
    } finally {
      Session.prototype.domain = original;
    }
  });

  await t.test("usage: active CPU and network bytes while running", async () => {
    await sandbox.runCommand("sh", ["-c", "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done"]);
    const got = await Sandbox.get({ ...c, name });
    assert.ok(got.activeCpuUsageMs > 0, `activeCpuUsageMs ${got.activeCpuUsageMs}`);
    // The route's request went in and its answer out through the sandbox's interface.
    assert.ok(got.networkTransfer.ingress > 0 && got.networkTransfer.egress > 0, JSON.stringify(got.networkTransfer));
    assert.equal(got.totalActiveCpuDurationMs, got.activeCpuUsageMs);
    assert.equal(got.totalIngressBytes, got.networkTransfer.ingress);
    assert.equal(got.totalEgressBytes, got.networkTransfer.egress);
  });

  await t.test("openInteractive: a terminal over a WebSocket", async () => {
    const { url, token } = await sandbox.openInteractive();
    assert.match(url, /^ws:\/\/.+\/compat\/vercel\/interactive\/sb-/);
    const term = await openTerminal(url, token, { type: "start", command: "sh", args: [], env: ["TERM=xterm-256color", "PS1=$ "], cwd: sandbox.cwd, cols: 80, rows: 24 });
    term.send("echo hi-$((40+2)) in $(pwd)\n");
    await term.until(/hi-42 in \/vercel\/sandbox/);
    term.resize(120, 40);
    term.send("stty size\n");
    await term.until(/40 120/);
    term.send("exit 7\n");
    assert.equal(await term.exit, 7);
    // A token opens only its session's terminal, once it is past its life not at all.
    await assert.rejects(openTerminal(url, token.slice(0, -2) + "xx", { type: "start", command: "sh" }), /403|refused|closed/);
  });

  await t.test("Sandbox.get and list", async () => {
    const got = await Sandbox.get({ ...c, name });
    assert.equal(got.name, name);
    assert.equal(got.currentSession().sessionId, sandbox.currentSession().sessionId);
    assert.equal(got.status, "running");
    const page = await Sandbox.list({ ...c });
    const all = await page.toArray();
    assert.ok(all.some((s) => s.name === name && s.status === "running"), JSON.stringify(all.map((s) => s.name)));
    const prefixed = await Sandbox.list({ ...c, namePrefix: "sdk3-", sortBy: "name", limit: 1 });
    assert.equal(prefixed.sandboxes.length, 1);
    await assert.rejects(Sandbox.get({ ...c, name: "no-such-sandbox" }), (err) => err instanceof APIError && err.response.status === 404);
  });

  let snapshotId;
  await t.test("snapshot, then create from it", async () => {
    // /tmp is a tmpfs in paddock sandboxes, kept out of snapshots (docs/compat-vercel.md).
    await sandbox.writeFiles([{ path: "/tmp/scratch.txt", content: "scratch\n" }, { path: "kept.txt", content: "kept\n" }]);
    const snap = await sandbox.snapshot();
    snapshotId = snap.snapshotId;
    assert.equal(snap.status, "created");
    assert.ok(snap.sizeBytes > 0);
    assert.equal(sandbox.status, "stopped");
    const fetched = await Snapshot.get({ ...c, snapshotId });
    assert.equal(fetched.snapshotId, snapshotId);
    const listed = await Snapshot.list({ ...c, name });
    assert.ok(listed.snapshots.some((s) => s.id === snapshotId));

    const copy = await Sandbox.create({ ...c, name: `${name}-copy`, source: { type: "snapshot", snapshotId }, persistent: false });
    cleanup.push(copy);
    assert.equal(copy.sourceSnapshotId, snapshotId);
    assert.equal((await copy.readFileToBuffer({ path: "hello.txt" })).toString(), "hello paddock\n");
    assert.equal(copy.cwd, "/vercel/sandbox");
    assert.equal((await copy.readFileToBuffer({ path: "kept.txt" })).toString(), "kept\n");
    assert.equal(await copy.readFileToBuffer({ path: "/tmp/scratch.txt" }), null, "/tmp is not in the snapshot");
    await copy.stop();
    assert.equal(copy.status, "stopped");
  });

  await t.test("a stopped persistent sandbox resumes on use", async () => {
    // The session was stopped by snapshot(): the next command resumes from
    // that snapshot (410, resume, retry inside the SDK).
    const oldSession = sandbox.currentSession().sessionId;
    const r = await sandbox.runCommand("cat", ["hello.txt"]);
    assert.equal(await r.stdout(), "hello paddock\n");
    assert.notEqual(sandbox.currentSession().sessionId, oldSession);
    assert.equal(sandbox.sourceSnapshotId, snapshotId);
  });

  await t.test("stop snapshots; get with resume starts a new session from it", async () => {
    await sandbox.writeFiles([{ path: "second.txt", content: "written after resume\n" }]);
    await sandbox.runCommand("sh", ["-c", "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done"]);
    const stopped = await sandbox.stop();
    assert.equal(stopped.status, "stopped");
    assert.ok(stopped.snapshot, "a persistent sandbox snapshots on stop");
    // Usage of the stopped session, from paddock's meter, and the sandbox's totals over its sessions.
    assert.ok(stopped.activeCpuDurationMs > 0, `activeCpuDurationMs ${stopped.activeCpuDurationMs}`);
    assert.equal(typeof stopped.networkTransfer.ingress, "number");
    assert.equal(sandbox.activeCpuUsageMs, stopped.activeCpuDurationMs);
    assert.ok(sandbox.totalActiveCpuDurationMs >= stopped.activeCpuDurationMs, `total ${sandbox.totalActiveCpuDurationMs}`);
    assert.equal(sandbox.currentSnapshotId, stopped.snapshot.id);

    const idle = await Sandbox.get({ ...c, name });
    assert.equal(idle.status, "stopped");
    let resumedHook = false;
    const resumed = await Sandbox.get({ ...c, name, resume: true, onResume: async () => { resumedHook = true; } });
    assert.ok(resumedHook, "onResume runs when the server resumed the sandbox");
    assert.equal(resumed.status, "running");
    assert.equal(resumed.sourceSnapshotId, stopped.snapshot.id);
    assert.equal((await resumed.readFileToBuffer({ path: "second.txt" })).toString(), "written after resume\n");
    const sessions = await resumed.listSessions();
    assert.ok(sessions.sessions.length >= 3);
    await resumed.stop();
  });

  await t.test("fork, update, getOrCreate", async () => {
    const fork = await Sandbox.fork({ ...c, sourceSandbox: name, name: `${name}-fork`, persistent: false, tags: { kind: "fork" } });
    cleanup.push(fork);
    assert.equal(fork.persistent, false);
    assert.deepEqual(fork.tags, { kind: "fork" });
    assert.equal((await fork.readFileToBuffer({ path: "second.txt" })).toString(), "written after resume\n");
    await fork.update({ tags: { kind: "fork", updated: "yes" }, ports: [3000, 3002] });
    assert.equal(fork.tags.updated, "yes");
    assert.deepEqual(fork.routes.map((r) => r.port).sort(), [3000, 3002]);
    const tagged = await Sandbox.list({ ...c, tags: { updated: "yes" } });
    assert.deepEqual(tagged.sandboxes.map((s) => s.name), [`${name}-fork`]);
    const same = await Sandbox.getOrCreate({ ...c, name: `${name}-fork` });
    assert.equal(same.currentSession().sessionId, fork.currentSession().sessionId);
    const fresh = await Sandbox.getOrCreate({ ...c, name: `${name}-new`, persistent: false });
    cleanup.push(fresh);
    assert.equal(fresh.status, "running");
  });

  await t.test("unsupported options answer a clear error", async () => {
    await assert.rejects(
      Sandbox.create({ ...c, mounts: { "/data": { drive: "d", mode: "read-write" } } }),
      (err) => err instanceof APIError && err.response.status === 400 && /not supported by paddock/.test(err.message),
    );
  });
});
