// Module hooks (node:module register): every import of "node:test" but
// test.mjs's own resolves to test.mjs.
const shim = new URL("./test.mjs", import.meta.url).href;

export async function resolve(specifier, context, next) {
  if (specifier === "node:test" && context.parentURL !== shim) {
    return { url: shim, shortCircuit: true };
  }
  return next(specifier, context);
}
