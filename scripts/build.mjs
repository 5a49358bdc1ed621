// One build: native helper and demos (make), then the esbuild bundles.
// --production minifies; --watch rebuilds the bundles on change.
import { execFileSync } from 'node:child_process';
import * as esbuild from 'esbuild';

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

execFileSync('make', ['-s', '-C', 'server/native'], { stdio: 'inherit' });
execFileSync('make', ['-s', '-C', 'server/observe'], { stdio: 'inherit' });
execFileSync('make', ['-s', '-C', 'demo'], { stdio: 'inherit' });

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  sourcemap: !production,
  minify: production,
  logLevel: 'warning',
};

const builds = [
  { ...common, entryPoints: ['extension/extension.ts'], outfile: 'dist/extension.js', external: ['vscode'] },
  { ...common, entryPoints: ['server/adapter/main.ts'], outfile: 'dist/adapter.js' },
  { ...common, entryPoints: ['server/cli/main.ts'], outfile: 'dist/cli.js', banner: { js: '#!/usr/bin/env node' } },
  { ...common, platform: 'browser', target: 'chrome120', format: 'iife', entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js' },
];

if (watch) {
  for (const b of builds) await (await esbuild.context(b)).watch();
} else {
  await Promise.all(builds.map((b) => esbuild.build(b)));
}
