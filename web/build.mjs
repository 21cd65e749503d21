// Builds Slipway's web page into ../pkg/web/assets (or the directory given
// as the first argument): one minified script and one stylesheet with content
// hashes in their names, the favicon, and index.html naming them. The output
// is deterministic (no timestamps, no absolute paths, files written in sorted
// order), so pkg/web/bundle_test.go can compare it byte for byte with the
// committed copy.
//
//   npm ci && node build.mjs            # into ../pkg/web/assets
//   node build.mjs /tmp/out             # elsewhere (the staleness test)
import * as esbuild from "esbuild";
import { mkdir, readFile, readdir, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = path.resolve(process.argv[2] ?? path.join(here, "..", "pkg", "web", "assets"));

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: "src/main.js" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome100", "firefox100", "safari15"],
  charset: "utf8",
  legalComments: "eof",
  banner: {
    js: "/*! Slipway web page. Bundles CodeMirror 6 (@codemirror/*, MIT License, Copyright (C) 2018-2021 Marijn Haverbeke and others) and @lezer/highlight (MIT License). */",
  },
  entryNames: "[name]-[hash]",
  outdir: "out", // virtual: write is false, names are taken relative to it
  write: false,
  metafile: true,
  logLevel: "warning",
});

const files = new Map(); // name -> contents
for (const f of result.outputFiles) {
  files.set(path.basename(f.path), Buffer.from(f.contents));
}
const named = (ext) => {
  const hits = [...files.keys()].filter((n) => n.startsWith("app-") && n.endsWith(ext));
  if (hits.length !== 1) throw new Error(`want one app-*${ext} output, got ${hits.join(", ") || "none"}`);
  return hits[0];
};
const js = named(".js");
const css = named(".css");

let html = await readFile(path.join(here, "src", "index.html"), "utf8");
for (const [key, value] of [["{{APP_JS}}", js], ["{{APP_CSS}}", css]]) {
  if (!html.includes(key)) throw new Error(`src/index.html lacks ${key}`);
  html = html.replaceAll(key, value);
}
files.set("index.html", Buffer.from(html));
files.set("favicon.svg", await readFile(path.join(here, "src", "favicon.svg")));

// Replace the output directory's contents: stale hashed files must not linger.
await mkdir(outdir, { recursive: true });
for (const old of await readdir(outdir)) {
  await rm(path.join(outdir, old), { recursive: true, force: true });
}
for (const name of [...files.keys()].sort()) {
  await writeFile(path.join(outdir, name), files.get(name));
}
const sizes = [...files.keys()].sort().map((n) => `${n} ${files.get(n).length}`);
console.log(`built ${outdir}:\n  ${sizes.join("\n  ")}`);
