// node:test, except that the tests named in PADDOCK_NODE_SKIP are skipped
// with its reason: a JSON object from a test's full name (its ancestors'
// names and its own, joined by " > ") to the reason. Node 20's
// --test-name-pattern cannot skip a subtest of a test that runs, and e2e
// runs the compat suites unchanged on runtimes that lack what some of
// their checks need (the kubernetes runtime: snapshots).
import * as nodeTest from "node:test";

const skips = JSON.parse(process.env.PADDOCK_NODE_SKIP || "{}");

// withSkip returns a test's arguments (those of test or t.test) with its
// body's subtests made skippable, or its body dropped and the test
// skipped when its full name, prefix + its name, is in skips.
function withSkip(prefix, args) {
  args = [...args];
  const name = typeof args[0] === "string" ? args[0] : "";
  const reason = skips[prefix + name];
  if (name !== "" && reason !== undefined) {
    const opts = typeof args[1] === "object" && args[1] !== null ? args[1] : {};
    return [name, { ...opts, skip: reason }, () => {}];
  }
  const i = args.findIndex((a) => typeof a === "function");
  if (i >= 0) args[i] = skippableSubtests(args[i], `${prefix}${name} > `);
  return args;
}

function skippableSubtests(fn, prefix) {
  return function (t, ...rest) {
    const sub = t.test.bind(t);
    t.test = (...args) => sub(...withSkip(prefix, args));
    return fn.call(this, t, ...rest);
  };
}

export * from "node:test";
export function test(...args) {
  return nodeTest.test(...withSkip("", args));
}
export default test;
