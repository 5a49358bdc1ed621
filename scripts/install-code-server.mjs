#!/usr/bin/env node
// Installs code-server (a real VS Code served to a browser) into <repo>/.cache/code-server for the
// end-to-end tests. Idempotent: a finished install is recognised by its version and a marker file.
// Needs the apt packages libkrb5-dev (kerberos module build), ripgrep (given to @vscode/ripgrep
// instead of its download), make, g++ and python3 (node-gyp builds node-pty, kerberos, spdlog),
// and, to run the tests, chromium.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

// 4.100.3 (VS Code 1.100.3) is the newest release that runs on Node 20.
export const CODE_SERVER_VERSION = '4.100.3';
// What code-server's @vscode/ripgrep postinstall looks for in its cache before downloading.
const RIPGREP_PACKAGE_VERSION = '1.15.11';
const RIPGREP_ASSET = 'ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz';
const SYSTEM_RG = '/usr/bin/rg';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const installDir = path.join(repoRoot, '.cache', 'code-server');
export const codeServerEntry = path.join(installDir, 'node_modules', 'code-server', 'out', 'node', 'entry.js');
const packageJsonPath = path.join(installDir, 'node_modules', 'code-server', 'package.json');
const markerPath = path.join(installDir, `installed-${CODE_SERVER_VERSION}`);

function installedVersion() {
  if (!existsSync(codeServerEntry) || !existsSync(markerPath) || !existsSync(packageJsonPath)) return null;
  try {
    return JSON.parse(readFileSync(packageJsonPath, 'utf8')).version;
  } catch {
    return null;
  }
}

function run(command, args, options) {
  const result = spawnSync(command, args, { encoding: 'utf8', ...options });
  if (result.error) throw new Error(`${command} ${args.join(' ')}: ${result.error.message}`);
  if (result.status !== 0) {
    const output = `${result.stdout ?? ''}${result.stderr ?? ''}`.split('\n').slice(-40).join('\n');
    throw new Error(`${command} ${args.join(' ')} exited with ${result.status}:\n${output}`);
  }
  return result;
}

/** Installs code-server unless the right version is already there; returns the path of its entry script. */
export function ensureCodeServer({ log = (line) => console.log(line) } = {}) {
  const version = installedVersion();
  if (version === CODE_SERVER_VERSION) return codeServerEntry;

  if (!existsSync(SYSTEM_RG)) {
    throw new Error(`${SYSTEM_RG} is missing: install the Debian packages ripgrep, libkrb5-dev and chromium (apt-get install ripgrep libkrb5-dev chromium)`);
  }
  log(`install-code-server: installing code-server@${CODE_SERVER_VERSION} into ${path.relative(repoRoot, installDir)} (about 90 s)`);
  const started = Date.now();
  rmSync(installDir, { recursive: true, force: true });
  mkdirSync(installDir, { recursive: true });
  // A package.json of its own keeps npm from treating the repository as the project.
  writeFileSync(path.join(installDir, 'package.json'), JSON.stringify({ name: 'code-server-tools', private: true }, null, 2) + '\n');

  // A private TMPDIR: the ripgrep cache lives there and nothing leaks into the shared /tmp.
  const tmpDir = path.join(installDir, 'tmp');
  const ripgrepCache = path.join(tmpDir, `vscode-ripgrep-cache-${RIPGREP_PACKAGE_VERSION}`);
  mkdirSync(ripgrepCache, { recursive: true });
  run('tar', ['-czf', path.join(ripgrepCache, RIPGREP_ASSET), '-C', path.dirname(SYSTEM_RG), path.basename(SYSTEM_RG)]);

  run('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error', `code-server@${CODE_SERVER_VERSION}`], {
    cwd: installDir,
    env: {
      ...process.env,
      TMPDIR: tmpDir,
      // As root npm skips lifecycle scripts without unsafe-perm; node-pty's build runs `npx node-gyp`.
      npm_config_unsafe_perm: 'true',
      npm_config_yes: 'true',
      // node-gyp builds against local headers (no download); the nodejs package ships them in /usr.
      ...(!process.env.npm_config_nodedir && existsSync('/usr/include/node/node_api.h') ? { npm_config_nodedir: '/usr' } : {}),
    },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (!existsSync(codeServerEntry)) throw new Error(`npm install finished but ${codeServerEntry} is missing`);
  rmSync(tmpDir, { recursive: true, force: true });
  writeFileSync(markerPath, `${new Date().toISOString()}\n`);
  log(`install-code-server: done in ${Math.round((Date.now() - started) / 1000)} s`);
  return codeServerEntry;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  try {
    const entry = ensureCodeServer();
    console.log(`install-code-server: code-server ${CODE_SERVER_VERSION} ready at ${path.relative(repoRoot, entry)}`);
  } catch (error) {
    console.error(`install-code-server: ${error.message}`);
    process.exit(1);
  }
}
