// The unmodified e2b JS SDK against paddock's /compat/e2b: the REST
// control plane (create, list, timeout, pause and connect, kill) and team
// isolation. The Go test (go test ./e2e -run TestE2BSDK) starts paddock
// with TLS from its development CA and sets E2B_API_URL, E2B_API_KEY,
// E2B_DOMAIN and NODE_EXTRA_CA_CERTS as a user would (and E2B_SANDBOX_URL
// for the data plane: the file kept across a pause is read with
// sandbox.files); paddock's own API is called with the same key where E2B
// has no word for a check.
import assert from "node:assert/strict";
import { test } from "node:test";
import { Sandbox, SandboxNotFoundError } from "e2b";

const paddock = process.env.PADDOCK_URL;
const key = process.env.E2B_API_KEY;
const key2 = process.env.E2B_API_KEY_2;
const skip =
  !paddock || !key || !key2 || !process.env.E2B_API_URL
    ? "PADDOCK_URL, E2B_API_URL, E2B_API_KEY and E2B_API_KEY_2 are not set (run through go test ./e2e -run TestE2BSDK)"
    : false;

// native calls paddock's own API with the E2B key, which is a paddock token.
async function native(method, path, body) {
  const res = await fetch(`${paddock}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function listIds(opts) {
  const paginator = Sandbox.list(opts);
  const ids = [];
  while (paginator.hasNext) {
    for (const s of await paginator.nextItems()) ids.push(s.sandboxId);
  }
  return ids.sort();
}

test("create with metadata and envs, get, list by metadata, kill", { skip }, async () => {
  const run = `run-${Date.now()}`;
  const sbx = await Sandbox.create({ metadata: { run, role: "worker" }, envs: { GREETING: "hello" }, timeoutMs: 120_000 });
  const other = await Sandbox.create({ metadata: { run, role: "other" } });
  try {
    assert.match(sbx.sandboxId, /^sb-/);
    const info = await sbx.getInfo();
    assert.equal(info.sandboxId, sbx.sandboxId);
    assert.equal(info.templateId, "base");
    assert.deepEqual(info.metadata, { run, role: "worker" });
    assert.equal(info.state, "running");
    const left = info.endAt.getTime() - Date.now();
    assert.ok(left > 100_000 && left <= 121_000, `endAt ${info.endAt} is not about 2 minutes away`);
    const got = await native("GET", `/sandboxes/${sbx.sandboxId}`);
    assert.equal(got.body.env.GREETING, "hello");

    assert.deepEqual(await listIds({ query: { metadata: { run, role: "worker" } } }), [sbx.sandboxId]);
    assert.deepEqual(await listIds({ query: { metadata: { run } } }), [sbx.sandboxId, other.sandboxId].sort());
    assert.deepEqual(await listIds({ query: { metadata: { run }, state: ["paused"] } }), []);
    assert.deepEqual(await listIds({ query: { metadata: { run } }, limit: 1 }), [sbx.sandboxId, other.sandboxId].sort());
  } finally {
    assert.equal(await sbx.kill(), true);
    assert.equal(await Sandbox.kill(other.sandboxId), true);
  }
  await assert.rejects(Sandbox.getInfo(sbx.sandboxId), SandboxNotFoundError);
  assert.equal(await Sandbox.kill(sbx.sandboxId), false);
});

test("set timeout", { skip }, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 60_000 });
  try {
    await sbx.setTimeout(600_000);
    let left = (await sbx.getInfo()).endAt.getTime() - Date.now();
    assert.ok(left > 590_000 && left <= 601_000, `endAt is ${left} ms away, want about 10 minutes`);
    await sbx.setTimeout(30_000); // and earlier again
    left = (await sbx.getInfo()).endAt.getTime() - Date.now();
    assert.ok(left > 20_000 && left <= 31_000, `endAt is ${left} ms away, want about 30 s`);
  } finally {
    await sbx.kill();
  }
});

test("pause, then connect: same sandbox, files intact", { skip }, async () => {
  const sbx = await Sandbox.create({ timeoutMs: 120_000, metadata: { kind: "paused" } });
  try {
    await sbx.files.write("f.txt", "kept");
    assert.equal(await sbx.pause(), true);
    assert.equal(await sbx.pause(), false, "pausing a paused sandbox answers false");
    assert.equal((await sbx.getInfo()).state, "paused");
    assert.deepEqual(await listIds({ query: { metadata: { kind: "paused" }, state: ["paused"] } }), [sbx.sandboxId]);

    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
    assert.equal(again.sandboxId, sbx.sandboxId);
    const info = await again.getInfo();
    assert.equal(info.state, "running");
    assert.deepEqual(info.metadata, { kind: "paused" });
    const left = info.endAt.getTime() - Date.now();
    assert.ok(left > 290_000 && left <= 301_000, `endAt is ${left} ms away, want about 5 minutes`);
    assert.equal(await again.files.read("f.txt"), "kept");

    // Connecting to a running sandbox never shortens it.
    await Sandbox.connect(sbx.sandboxId, { timeoutMs: 10_000 });
    assert.ok((await again.getInfo()).endAt.getTime() - Date.now() > 280_000);
  } finally {
    await sbx.kill();
  }
});

test("a second team's key sees and touches nothing", { skip }, async () => {
  const sbx = await Sandbox.create({ metadata: { owner: "team-1" } });
  const opts = { apiKey: key2 };
  try {
    assert.deepEqual(await listIds({ ...opts, query: { metadata: { owner: "team-1" } } }), []);
    await assert.rejects(Sandbox.getInfo(sbx.sandboxId, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.connect(sbx.sandboxId, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.setTimeout(sbx.sandboxId, 600_000, opts), SandboxNotFoundError);
    await assert.rejects(Sandbox.pause(sbx.sandboxId, opts), SandboxNotFoundError);
    assert.equal(await Sandbox.kill(sbx.sandboxId, opts), false);
    assert.equal((await sbx.getInfo()).state, "running", "the first team's sandbox is untouched");
  } finally {
    await sbx.kill();
  }
});
