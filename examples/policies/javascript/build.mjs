// Builds policy.js into policy.wasm, a component of the `billstack:policy` world.
// Usage: node build.mjs [OUT.wasm]   (npm run build)
//
// It uses componentize-js's JavaScript API: `jco componentize` is a thin wrapper around the
// same call. Every optional engine feature is switched off, so the component imports nothing
// but what the world needs; the host's sandbox would refuse files, sockets, clocks and stdio
// anyway, and a plugin that asks for none of them loads and runs with the least overhead.
//
// package.json lists @bytecodealliance/preview2-shim itself: componentize-js 0.23.0 imports it
// at run time but declares it only as a development dependency, so `npm ci` from a lockfile
// would otherwise leave it out ("Cannot find package '@bytecodealliance/preview2-shim'").
import { componentize } from "@bytecodealliance/componentize-js";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, "policy.wasm"));

const { component } = await componentize({
  sourcePath: resolve(here, "policy.js"),
  witPath: resolve(here, "wit"),
  worldName: "policy",
  disableFeatures: ["random", "stdio", "clocks", "http", "fetch-event"],
});
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.log(`wrote ${out} (${(component.byteLength / 1048576).toFixed(1)} MiB)`);
