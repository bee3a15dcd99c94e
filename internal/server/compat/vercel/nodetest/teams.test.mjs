// Teams and sources through both SDKs: a paddock team is the SDK's teamId,
// another team's member cannot see its sandboxes, and sandboxes start from
// git and tarball sources the Go test serves on 127.0.0.1.
import { test } from "node:test";
import assert from "node:assert/strict";
import { Sandbox as Sandbox3, APIError as APIError3 } from "sandbox3";
import { Sandbox as Sandbox1, APIError as APIError1 } from "sandbox1";
import { creds, skip, team, team2, token, token2, nativeGet } from "./helpers.mjs";

const gitURL = process.env.PADDOCK_GIT_URL; // main: a.txt = "two\n"; tag v1: a.txt = "one\n"
const privateGitURL = process.env.PADDOCK_GIT_PRIVATE_URL; // the same, behind basic auth
const gitPassword = process.env.PADDOCK_GIT_PASSWORD;
const tarballURL = process.env.PADDOCK_TARBALL_URL; // src/hello.txt = "from a tarball\n"
const teamName = process.env.PADDOCK_TEAM_NAME;

const teamsSkip = skip || (!team2 || !token2 || !teamName ? "PADDOCK_TEAM_2, PADDOCK_TOKEN_2 and PADDOCK_TEAM_NAME are not set" : false);
const gitSkip = skip || (!gitURL || !privateGitURL ? "PADDOCK_GIT_URL is not set (git is not installed where go test runs)" : false);
const tarballSkip = skip || (!tarballURL ? "PADDOCK_TARBALL_URL is not set" : false);

const c3 = creds("prj_teams3");
const c1 = creds("prj_teams1");
const other3 = creds("prj_teams3", { teamId: team2, tok: token2 });
const other1 = creds("prj_teams1", { teamId: team2, tok: token2 });

const status = (Err, code) => (err) => err instanceof Err && err.response.status === code;

async function cat(sandbox, path) {
  const r = await sandbox.runCommand("cat", [path]);
  assert.equal(r.exitCode, 0, `cat ${path}: ${await r.stderr()}`);
  return r.stdout();
}

test("teams: 3.x", { skip: teamsSkip, timeout: 300_000 }, async (t) => {
  const name = `teams3-${Date.now()}`;
  const sandbox = await Sandbox3.create({ ...c3, name, timeout: 120_000, persistent: false });
  t.after(() => sandbox.delete().catch(() => {}));
  const sid = sandbox.currentSession().sessionId;

  await t.test("the sandbox is the team's in paddock's own API", async () => {
    const mine = await nativeGet(sid, token);
    assert.equal(mine.status, 200);
    assert.equal(mine.body.teamId, team);
    assert.equal((await nativeGet(sid, token2)).status, 404);
  });

  await t.test("the team by its name is the same team", async () => {
    const got = await Sandbox3.get({ ...creds("prj_teams3", { teamId: teamName }), name });
    assert.equal(got.currentSession().sessionId, sid);
  });

  await t.test("another team's member cannot get it", async () => {
    await assert.rejects(Sandbox3.get({ ...other3, name }), status(APIError3, 404));
    const theirs = await (await Sandbox3.list({ ...other3 })).toArray();
    assert.ok(!theirs.some((s) => s.name === name), JSON.stringify(theirs.map((s) => s.name)));
    const mine = await (await Sandbox3.list({ ...c3 })).toArray();
    assert.ok(mine.some((s) => s.name === name));
    // Nor name the first team.
    await assert.rejects(Sandbox3.get({ ...c3, token: token2, name }), status(APIError3, 403));
  });
});

test("teams: 1.x", { skip: teamsSkip, timeout: 300_000 }, async (t) => {
  const sandbox = await Sandbox1.create({ ...c1, timeout: 120_000 });
  t.after(() => sandbox.stop().catch(() => {}));

  await t.test("the sandbox is the team's in paddock's own API", async () => {
    const mine = await nativeGet(sandbox.sandboxId, token);
    assert.equal(mine.status, 200);
    assert.equal(mine.body.teamId, team);
  });

  await t.test("another team's member cannot get it", async () => {
    await assert.rejects(Sandbox1.get({ ...other1, sandboxId: sandbox.sandboxId }), status(APIError1, 404));
    const theirs = await Sandbox1.list({ ...other1 });
    assert.ok(!theirs.json.sandboxes.some((s) => s.id === sandbox.sandboxId));
    await assert.rejects(Sandbox1.get({ ...c1, token: token2, sandboxId: sandbox.sandboxId }), status(APIError1, 403));
  });
});

test("sources: 3.x", { skip, timeout: 300_000 }, async (t) => {
  const made = [];
  t.after(async () => {
    for (const sb of made) await sb.delete().catch(() => {});
  });
  const create = async (source) => {
    const sb = await Sandbox3.create({ ...c3, name: `src3-${made.length}-${Date.now()}`, timeout: 120_000, persistent: false, source });
    made.push(sb);
    return sb;
  };

  await t.test("git, a revision, shallow", { skip: gitSkip }, async () => {
    const sb = await create({ type: "git", url: gitURL, revision: "v1", depth: 1 });
    assert.equal(await cat(sb, "a.txt"), "one\n");
  });

  await t.test("private git with username and password", { skip: gitSkip }, async () => {
    const sb = await create({ type: "git", url: privateGitURL, username: "x-access-token", password: gitPassword });
    assert.equal(await cat(sb, "a.txt"), "two\n");
  });

  await t.test("wrong credentials: the source's error", { skip: gitSkip }, async () => {
    await assert.rejects(
      create({ type: "git", url: privateGitURL, username: "x-access-token", password: "wrong" }),
      (err) => err instanceof APIError3 && err.response.status === 400 && err.json?.error?.code === "source_auth_failed",
    );
  });

  await t.test("tarball", { skip: tarballSkip }, async () => {
    const sb = await create({ type: "tarball", url: tarballURL });
    assert.equal(await cat(sb, "src/hello.txt"), "from a tarball\n");
  });
});

test("sources: 1.x", { skip, timeout: 300_000 }, async (t) => {
  const made = [];
  t.after(async () => {
    for (const sb of made) await sb.stop().catch(() => {});
  });
  const create = async (source) => {
    const sb = await Sandbox1.create({ ...c1, timeout: 120_000, source });
    made.push(sb);
    return sb;
  };

  await t.test("git", { skip: gitSkip }, async () => {
    const sb = await create({ type: "git", url: gitURL });
    assert.equal(await cat(sb, "a.txt"), "two\n");
  });

  await t.test("private git with username and password", { skip: gitSkip }, async () => {
    const sb = await create({ type: "git", url: privateGitURL, username: "u", password: gitPassword, revision: "v1" });
    assert.equal(await cat(sb, "a.txt"), "one\n");
  });

  await t.test("tarball", { skip: tarballSkip }, async () => {
    const sb = await create({ type: "tarball", url: tarballURL });
    assert.equal(await cat(sb, "src/hello.txt"), "from a tarball\n");
  });
});
