// Loaded by `node --import` ahead of a Node test suite that e2e runs
// unchanged: the suite's "node:test" becomes ./test.mjs, which skips the
// tests named in PADDOCK_NODE_SKIP (see there).
import { register } from "node:module";

register("./hooks.mjs", import.meta.url);
