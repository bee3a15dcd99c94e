// @vercel/sandbox 1.x (v1: ephemeral sandboxes named by id) against paddock.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Sandbox, Snapshot } from "sandbox1";
import { creds, skip, serveAndFetch, withGlobalFetch } from "./helpers.mjs";

const c = creds("prj_sdk1");

test("@vercel/sandbox 1.x", { skip, timeout: 600_000 }, async (t) => {
  const sandbox = await Sandbox.create({ ...c, ports: [3001], timeout: 120_000 });
  const cleanup = [sandbox];
  t.after(async () => {
    for (const sb of cleanup) await sb.stop().catch(() => {});
  });

  await t.test("create with ports", () => {
    assert.equal(typeof sandbox.sandboxId, "string");
    assert.equal(sandbox.status, "running");
    assert.equal(sandbox.routes.length, 1);
    assert.equal(sandbox.routes[0].port, 3001);
  });

  await t.test("writeFiles, readFile, mkDir", async () => {
    await sandbox.writeFiles([{ path: "/tmp/one/a.txt", content: Buffer.from("from sdk 1\n") }]);
    assert.equal((await sandbox.readFileToBuffer({ path: "/tmp/one/a.txt" })).toString(), "from sdk 1\n");
    const stream = await sandbox.readFile({ path: "a.txt", cwd: "/tmp/one" });
    const chunks = [];
    for await (const chunk of stream) chunks.push(chunk);
    assert.equal(Buffer.concat(chunks).toString(), "from sdk 1\n");
    assert.equal(await sandbox.readFileToBuffer({ path: "/tmp/one/missing" }), null);
    await sandbox.mkDir("/tmp/one/sub");
    assert.equal((await sandbox.runCommand("test", ["-d", "/tmp/one/sub"])).exitCode, 0);
  });

  await t.test("runCommand waited and detached, logs, kill", async () => {
    const r = await sandbox.runCommand("sh", ["-c", "echo one; echo two >&2; exit 4"]);
    assert.equal(r.exitCode, 4);
    assert.equal(await r.stdout(), "one\n");
    assert.equal(await r.stderr(), "two\n");

    const d = await sandbox.runCommand({ cmd: "sh", args: ["-c", "echo a; sleep 0.3; echo b"], detached: true });
    assert.equal(d.exitCode, null);
    const lines = [];
    for await (const log of d.logs()) lines.push(log.data);
    assert.equal(lines.join(""), "a\nb\n");
    assert.equal((await d.wait()).exitCode, 0);

    const s = await sandbox.runCommand({ cmd: "sleep", args: ["60"], detached: true });
    await s.kill("SIGKILL");
    assert.equal((await s.wait()).exitCode, 128 + 9);
  });

  await t.test("extendTimeout", async () => {
    const before = sandbox.timeout;
    await sandbox.extendTimeout(30_000);
    assert.ok(sandbox.timeout - before >= 29_000, `timeout grew by ${sandbox.timeout - before} ms`);
  });

  await t.test("the port's route URL serves a request", async () => {
    await sandbox.writeFiles([{ path: "/tmp/www1/index.html", content: "sdk 1 page\n" }]);
    await serveAndFetch(sandbox, 3001, "/tmp/www1", sandbox.routes[0].url, "sdk 1 page\n");
  });

  await t.test("Sandbox.get and list", async () => {
    const got = await Sandbox.get({ ...c, sandboxId: sandbox.sandboxId });
    assert.equal(got.sandboxId, sandbox.sandboxId);
    assert.equal(got.status, "running");
    const list = await Sandbox.list({ ...c });
    assert.ok(list.json.sandboxes.some((s) => s.id === sandbox.sandboxId));
  });

  await t.test("snapshot, create from it, stop", async () => {
    // /tmp is a tmpfs in paddock sandboxes: snapshots keep the rest.
    await sandbox.writeFiles([{ path: "kept.txt", content: "kept by the snapshot\n" }]);
    const snap = await sandbox.snapshot();
    assert.equal(snap.status, "created");
    assert.equal(snap.sourceSandboxId, sandbox.sandboxId);
    assert.equal(sandbox.status, "stopped");
    // 1.10.2's Snapshot.get ignores its fetch option.
    const got = await withGlobalFetch(() => Snapshot.get({ ...c, snapshotId: snap.snapshotId }));
    assert.equal(got.snapshotId, snap.snapshotId);
    const copy = await Sandbox.create({ ...c, source: { type: "snapshot", snapshotId: snap.snapshotId } });
    cleanup.push(copy);
    assert.equal((await copy.readFileToBuffer({ path: "kept.txt" })).toString(), "kept by the snapshot\n");
    const stopped = await copy.stop({ blocking: true });
    assert.equal(stopped.status, "stopped");
    await snap.delete();
    assert.equal(snap.status, "deleted");
  });
});
