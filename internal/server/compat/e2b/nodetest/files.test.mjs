// The unmodified e2b JS SDK's sandbox.files against paddock: write (a
// string, bytes, several files, octet-stream, as root), read (text,
// bytes), list to a depth, exists, getInfo, makeDir, rename, remove,
// watchDir events, signed download and upload URLs, and another team's
// sandbox token opening nothing. The Go test (go test ./e2e -run
// TestE2BSDK) starts paddock with TLS from its development CA and sets
// E2B_API_URL, E2B_API_KEY, E2B_DOMAIN, E2B_SANDBOX_URL and
// NODE_EXTRA_CA_CERTS as a user would.
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { FileNotFoundError, Sandbox } from "e2b";

const key = process.env.E2B_API_KEY;
const key2 = process.env.E2B_API_KEY_2;
const sandboxURL = process.env.E2B_SANDBOX_URL;
const skip =
  !key || !key2 || !process.env.E2B_API_URL || !sandboxURL
    ? "E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY and E2B_API_KEY_2 are not set (run through go test ./e2e -run TestE2BSDK)"
    : false;

const home = "/home/user";

async function eventually(what, f, ms = 15_000) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await f()) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`timed out waiting for ${what}`);
}

// routed is fetch for a URL the SDK made from E2B_SANDBOX_URL (paddock's
// own address): the sandbox is named by the header the SDK itself sends.
function routed(url, sandboxId, init = {}) {
  return fetch(url, { ...init, headers: { "e2b-sandbox-id": sandboxId, "e2b-sandbox-port": "49983", ...init.headers } });
}

describe("sandbox.files", { skip }, () => {
  let sbx;
  before(async () => {
    sbx = await Sandbox.create({ timeoutMs: 300_000 });
  });
  after(async () => {
    await sbx?.kill();
  });

  test("write and read: a string, bytes, several files, octet-stream, as root", async () => {
    const info = await sbx.files.write(`${home}/hello.txt`, "hello e2b");
    assert.deepEqual({ name: info.name, path: info.path, type: info.type }, { name: "hello.txt", path: `${home}/hello.txt`, type: "file" });
    assert.equal(await sbx.files.read(`${home}/hello.txt`), "hello e2b");

    const bytes = new Uint8Array([0, 1, 2, 127, 128, 250, 255]);
    const rel = await sbx.files.write("data/blob.bin", bytes); // relative: the user's home
    assert.equal(rel.path, `${home}/data/blob.bin`);
    assert.deepEqual(await sbx.files.read(`${home}/data/blob.bin`, { format: "bytes" }), bytes);

    const many = await sbx.files.write([
      { path: "multi/a.txt", data: "A" },
      { path: "/tmp/multi/b.txt", data: new TextEncoder().encode("B") },
    ]);
    assert.deepEqual(many.map((w) => w.path).sort(), [`${home}/multi/a.txt`, "/tmp/multi/b.txt"]);
    assert.equal(await sbx.files.read("multi/a.txt"), "A");
    assert.equal(await sbx.files.read("/tmp/multi/b.txt"), "B");

    await sbx.files.write("empty.txt", "");
    assert.equal(await sbx.files.read("empty.txt"), "");
    await sbx.files.write("hello.txt", "overwritten");
    assert.equal(await sbx.files.read("hello.txt"), "overwritten");
    await sbx.files.write("octet.txt", "as octet-stream", { useOctetStream: true });
    assert.equal(await sbx.files.read("octet.txt"), "as octet-stream");

    await sbx.files.write("/root/secret.txt", "root's", { user: "root" });
    assert.equal(await sbx.files.read("/root/secret.txt", { user: "root" }), "root's");
    await assert.rejects(sbx.files.read("/root/secret.txt"), "the user reads no file of root's");
    await assert.rejects(sbx.files.read("nope.txt"), FileNotFoundError);
  });

  test("list, exists, getInfo, makeDir, rename, remove", async () => {
    assert.equal(await sbx.files.makeDir("tree/sub/deeper"), true);
    assert.equal(await sbx.files.makeDir("tree/sub/deeper"), false, "an existing directory answers false");
    await sbx.files.write("tree/top.txt", "top");
    await sbx.files.write("tree/sub/mid.txt", "mid");

    let entries = await sbx.files.list("tree");
    assert.deepEqual(entries.map((e) => `${e.name}:${e.type}`), ["sub:dir", "top.txt:file"]);
    entries = await sbx.files.list(`${home}/tree`, { depth: 3 });
    assert.deepEqual(
      entries.map((e) => e.path),
      [`${home}/tree/sub`, `${home}/tree/sub/deeper`, `${home}/tree/sub/mid.txt`, `${home}/tree/top.txt`],
    );

    assert.equal(await sbx.files.exists("tree/top.txt"), true);
    assert.equal(await sbx.files.exists(`${home}/tree/sub`), true);
    assert.equal(await sbx.files.exists("tree/nope"), false);

    const info = await sbx.files.getInfo("tree/top.txt");
    assert.equal(info.name, "top.txt");
    assert.equal(info.type, "file");
    assert.equal(info.path, `${home}/tree/top.txt`);
    assert.equal(info.size, 3);
    assert.equal(info.mode, 0o644);
    assert.equal(info.permissions, "-rw-r--r--");
    assert.ok(info.owner && info.group, `owner ${info.owner} group ${info.group}`);
    assert.ok(info.modifiedTime instanceof Date && Math.abs(Date.now() - info.modifiedTime.getTime()) < 10 * 60_000, `modifiedTime ${info.modifiedTime}`);
    assert.equal((await sbx.files.getInfo("tree/sub")).type, "dir");
    await assert.rejects(sbx.files.getInfo("tree/nope"), FileNotFoundError);

    const moved = await sbx.files.rename("tree/top.txt", "tree/renamed/top2.txt");
    assert.equal(moved.path, `${home}/tree/renamed/top2.txt`);
    assert.equal(await sbx.files.exists("tree/top.txt"), false);
    assert.equal(await sbx.files.read("tree/renamed/top2.txt"), "top");
    await assert.rejects(sbx.files.rename("tree/top.txt", "tree/x"), FileNotFoundError);

    await sbx.files.remove("tree/renamed/top2.txt");
    assert.equal(await sbx.files.exists("tree/renamed/top2.txt"), false);
    await sbx.files.remove("tree");
    assert.equal(await sbx.files.exists("tree"), false);
  });

  test("watchDir sees create, write and remove", async () => {
    await sbx.files.makeDir("watched");
    const seen = [];
    const handle = await sbx.files.watchDir(`${home}/watched`, (e) => seen.push(`${e.type} ${e.name}`), { recursive: true });
    try {
      await sbx.files.write("watched/new.txt", "x");
      await sbx.files.makeDir("watched/sub");
      await sbx.files.write("watched/sub/inner.txt", "y");
      await sbx.files.remove("watched/new.txt");
      const want = ["create new.txt", "write new.txt", "create sub", "create sub/inner.txt", "remove new.txt"];
      await eventually(`events ${want} (seen ${seen})`, () => want.every((w) => seen.includes(w)));
    } finally {
      await handle.stop();
    }
    await assert.rejects(sbx.files.watchDir("not-there", () => {}), FileNotFoundError);
  });

  test("signed download and upload URLs", async () => {
    await sbx.files.write("signed.txt", "by signed URL");
    const down = await sbx.downloadUrl(`${home}/signed.txt`);
    assert.match(down, /signature=v1_/);
    let res = await routed(down, sbx.sandboxId);
    assert.equal(res.status, 200);
    assert.equal(await res.text(), "by signed URL");

    const expired = await sbx.downloadUrl(`${home}/signed.txt`, { useSignatureExpiration: -60 });
    res = await routed(expired, sbx.sandboxId);
    assert.equal(res.status, 401, "an expired signature opens nothing");
    await res.body?.cancel();

    const up = await sbx.uploadUrl(`${home}/uploaded.txt`);
    const form = new FormData();
    form.append("file", new Blob(["uploaded"]), "uploaded.txt");
    res = await routed(up, sbx.sandboxId, { method: "POST", body: form });
    assert.equal(res.status, 200, await res.text());
    assert.equal(await sbx.files.read("uploaded.txt"), "uploaded");

    // The download URL is for reading only.
    res = await routed(down, sbx.sandboxId, { method: "POST", body: form });
    assert.equal(res.status, 401);
    await res.body?.cancel();
  });

  test("another team's sandbox token reads and writes nothing", async () => {
    const theirs = await Sandbox.create({ apiKey: key2 });
    try {
      await sbx.files.write("private.txt", "team one's");
      const headers = { "x-access-token": theirs.envdAccessToken };
      let res = await routed(`${sandboxURL}/files?path=${home}/private.txt`, sbx.sandboxId, { headers });
      assert.equal(res.status, 401);
      await res.body?.cancel();
      res = await routed(`${sandboxURL}/filesystem.Filesystem/Stat`, sbx.sandboxId, {
        method: "POST",
        headers: { ...headers, "content-type": "application/json" },
        body: JSON.stringify({ path: `${home}/private.txt` }),
      });
      assert.equal(res.status, 401);
      await res.body?.cancel();
      // Without a token, nothing either.
      res = await routed(`${sandboxURL}/files?path=${home}/private.txt`, sbx.sandboxId);
      assert.equal(res.status, 401);
      await res.body?.cancel();
      assert.equal(await theirs.files.exists(`${home}/private.txt`), false, "their own sandbox does not hold it");
    } finally {
      await theirs.kill();
    }
  });
});
