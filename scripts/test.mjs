// `npm test`: type-check, lint, build (native helper, demos, bundles), then every test file in
// one run of node's test runner, so the output ends with the runner's summary.
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
process.chdir(root);

function step(name, cmd, args) {
  process.stdout.write(`== ${name}\n`);
  execFileSync(cmd, args, { stdio: 'inherit' });
}

function testFiles(dir) {
  const out = [];
  for (const e of readdirSync(dir)) {
    const p = path.join(dir, e);
    if (statSync(p).isDirectory()) out.push(...testFiles(p));
    else if (/\.test\.(ts|mjs)$/.test(e)) out.push(p);
  }
  return out.sort();
}

try {
  step('type-check', 'npx', ['tsc', '--noEmit', '-p', '.']);
  step('lint', 'npx', ['eslint', '--no-error-on-unmatched-pattern', 'extension', 'server', 'webview', 'test', 'scripts', 'bench']);
  step('build', 'node', ['scripts/build.mjs']);
} catch {
  process.exit(1);
}

// Selecting a subset: `npm test -- test/unit` runs only the files under the given paths.
const only = process.argv.slice(2);
const files = testFiles('test').filter((f) => only.length === 0 || only.some((o) => f.startsWith(path.normalize(o))));
process.stdout.write(`== tests (${files.length} files)\n`);
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', '--test-reporter=spec', ...files], { stdio: 'inherit' });
process.exit(r.status ?? 1);
