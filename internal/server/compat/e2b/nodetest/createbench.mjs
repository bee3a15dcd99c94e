// Times the unmodified e2b JS SDK's Sandbox.create() until a first
// commands.run has finished, N times in one process (so Node's own start
// is not counted), and prints one JSON array of [total, create] pairs in
// milliseconds (create: until Sandbox.create() returned). bench/e2b_linux_test.go (BenchmarkE2BCreateToFirstCommand) runs
// it with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set and
// PADDOCK_BENCH_N iterations; each sandbox is killed untimed. One untimed
// iteration first warms the process up (module code, the first
// connections), as the Go SDK's client is warm after its first create.
import { performance } from "node:perf_hooks";
import { Sandbox } from "e2b";

const n = Number(process.env.PADDOCK_BENCH_N || "1");
const out = [];
for (let i = -1; i < n; i++) {
  const t0 = performance.now();
  const sbx = await Sandbox.create({ timeoutMs: 600_000 });
  const tc = performance.now();
  const r = await sbx.commands.run("true");
  const t1 = performance.now();
  if (r.exitCode !== 0) throw new Error(`true exited ${r.exitCode}`);
  if (i >= 0) out.push([t1 - t0, tc - t0]);
  await sbx.kill();
}
console.log(JSON.stringify(out));
