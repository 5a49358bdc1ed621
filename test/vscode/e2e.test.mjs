// End-to-end test in a real VS Code: code-server serves the workbench, Debian's chromium renders it
// (through playwright-core), and the extension under development runs in a real extension host.
// The suite inside the host (test/vscode/suite/index.js) starts a debug session of the demo; this
// side waits for the paused UI, screenshots it, and tells the suite to go on through $E2E_DIR.
/* global window, document */  // page.evaluate callbacks run in the browser
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { ensureCodeServer } from '../../scripts/install-code-server.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The extension to load; override to run the harness against another build (or a stub).
const extensionPath = path.resolve(process.env.UFFD_E2E_EXTENSION_PATH ?? repoRoot);
const suitePath = path.join(repoRoot, 'test', 'vscode', 'suite', 'index.js');
const artifactsDir = path.join(repoRoot, 'test', 'artifacts');
const CHROMIUM = '/usr/bin/chromium';

const LAUNCH_NAME = 'uffd: touch demo';
const HEALTH_TIMEOUT_MS = 60_000;
const PAUSED_UI_TIMEOUT_MS = 120_000; // workbench 6-10 s, activation 11-19 s on 2 cores, then the session
const SUITE_TIMEOUT_MS = 150_000;
const TEST_TIMEOUT_MS = 420_000;
const SETUP_TIMEOUT_MS = 600_000; // a first install of code-server takes 70-90 s, a build more

// Expected in this offline setup: vsda is not shipped (404s) and the extension gallery is unreachable.
const HARMLESS_CONSOLE_ERRORS = /status of 404|ERR_NAME_NOT_RESOLVED|ENOTFOUND/;

function firstLine(text) {
  return text.split('\n')[0].replace(/%c\s*\S+\s+color: #\w+\s*/, '').slice(0, 400);
}

/** Keeps the last lines of a stream of text. */
class LineTail {
  constructor(limit) {
    this.limit = limit;
    this.lines = [];
    this.partial = '';
  }

  push(prefix, chunk) {
    const parts = (this.partial + chunk).split('\n');
    this.partial = parts.pop();
    for (const line of parts) {
      if (this.lines.at(-1) !== prefix + line) this.lines.push(prefix + line); // repeats say nothing new
    }
    if (this.lines.length > this.limit) this.lines.splice(0, this.lines.length - this.limit);
  }

  text() {
    return [...this.lines, this.partial].filter(Boolean).join('\n');
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function httpStatus(url) {
  return new Promise((resolve) => {
    const request = http.get(url, { timeout: 2_000 }, (response) => {
      response.resume();
      resolve(response.statusCode);
    });
    request.on('timeout', () => request.destroy());
    request.on('error', () => resolve(0));
  });
}

/** Resolves with value after ms; the timer never keeps the process alive. */
function delay(ms, value) {
  return new Promise((resolve) => setTimeout(resolve, ms, value).unref());
}

/** Rejects after ms with a message; the timer never keeps the process alive. */
function timeout(ms, what) {
  return new Promise((_, reject) => {
    setTimeout(() => reject(new Error(`timed out after ${ms / 1000} s waiting for ${what}`)), ms).unref();
  });
}

async function waitForHealthy(baseUrl, serverExited) {
  const deadline = Date.now() + HEALTH_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (serverExited.value) throw new Error(`code-server exited early (${serverExited.value})`);
    if ((await httpStatus(`${baseUrl}/healthz`)) === 200) return;
    await delay(250);
  }
  throw new Error(`code-server did not answer ${baseUrl}/healthz within ${HEALTH_TIMEOUT_MS / 1000} s`);
}

function ensureExtensionBuilt() {
  if (extensionPath !== repoRoot || existsSync(path.join(repoRoot, 'dist', 'extension.js'))) return;
  const result = spawnSync('npm', ['run', 'build'], { cwd: repoRoot, encoding: 'utf8', timeout: 300_000 });
  if (result.status !== 0) {
    throw new Error(`npm run build failed (${result.error?.message ?? `exit ${result.status}`}):\n${`${result.stdout}${result.stderr}`.split('\n').slice(-30).join('\n')}`);
  }
}

function writeWorkspace(e2eDir) {
  const dirs = {
    workspace: path.join(e2eDir, 'workspace'),
    userData: path.join(e2eDir, 'user-data'),
    extensions: path.join(e2eDir, 'extensions'),
    browserProfile: path.join(e2eDir, 'browser-profile'),
  };
  for (const dir of Object.values(dirs)) mkdirSync(dir, { recursive: true });
  mkdirSync(path.join(dirs.workspace, '.vscode'));
  writeFileSync(path.join(dirs.workspace, '.vscode', 'launch.json'), JSON.stringify({
    version: '0.2.0',
    configurations: [{
      type: 'uffd',
      request: 'launch',
      name: LAUNCH_NAME,
      program: path.join(repoRoot, 'demo', 'bin', 'touch'),
      args: ['--pages', '64'],
      stopOnFirstFault: true,
    }],
  }, null, 2));
  mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  writeFileSync(path.join(dirs.userData, 'User', 'settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none',
    'telemetry.telemetryLevel': 'off',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
  }, null, 2));
  return dirs;
}

// code-server runs in its own process group, so a Ctrl-C or kill of this process would not reach
// it: end the groups still running, and remove the temp dirs, when this process exits or is told to stop.
const liveGroups = new Set();
const liveTempDirs = new Set();
function cleanUpLeftovers() {
  for (const pid of liveGroups) {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  liveGroups.clear();
  for (const dir of liveTempDirs) rmSync(dir, { recursive: true, force: true });
  liveTempDirs.clear();
}
process.once('exit', cleanUpLeftovers);
for (const [signal, number] of [['SIGINT', 2], ['SIGTERM', 15], ['SIGHUP', 1]]) {
  process.once(signal, () => process.exit(128 + number));
}

function startCodeServer(entry, { port, e2eDir, dirs }) {
  const configFile = path.join(e2eDir, 'code-server.yaml');
  writeFileSync(configFile, `bind-addr: 127.0.0.1:${port}\nauth: none\ncert: false\n`);
  const env = { ...process.env, E2E_DIR: e2eDir };
  delete env.NODE_TEST_CONTEXT; // set by `node --test` for this file; not meant for code-server's processes
  const child = spawn(process.execPath, [
    entry,
    '--config', configFile,
    '--user-data-dir', dirs.userData,
    '--extensions-dir', dirs.extensions,
    '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust',
    dirs.workspace,
  ], {
    // The extension host inherits this environment: the suite finds $E2E_DIR there.
    env,
    detached: true, // its own process group, so cleanup can end the extension host and helpers too
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid !== undefined) liveGroups.add(child.pid);
  const tail = new LineTail(50);
  child.stdout.setEncoding('utf8').on('data', (chunk) => tail.push('', chunk));
  child.stderr.setEncoding('utf8').on('data', (chunk) => tail.push('[stderr] ', chunk));
  const exited = { value: null };
  child.once('exit', (code, signal) => { exited.value = signal ? `signal ${signal}` : `exit code ${code}`; });
  return { child, tail, exited };
}

async function stopCodeServer({ child, exited }) {
  if (child.pid === undefined) return;
  const signalGroup = (signal) => {
    try {
      process.kill(-child.pid, signal);
    } catch (error) {
      if (error.code !== 'ESRCH') throw error;
    }
  };
  if (!exited.value) {
    const gone = once(child, 'exit');
    signalGroup('SIGTERM');
    if (!(await Promise.race([gone.then(() => true), delay(5_000, false)]))) {
      signalGroup('SIGKILL');
      await Promise.race([gone, delay(5_000)]);
    }
  }
  // Also after a clean exit: the group's other members (extension host, adapter, helper) may outlive it.
  signalGroup('SIGKILL');
  liveGroups.delete(child.pid);
}

/** The frame of the timeline webview: the one that has the panel's test hook. */
async function timelineFrame(page, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const f of page.frames()) {
      const has = await f.evaluate(() => typeof window.__timeline === 'object').catch(() => false);
      if (has) return f;
    }
    await delay(250);
  }
  throw new Error(`no timeline webview appeared within ${timeoutMs / 1000} s`);
}

function workbenchUrl(baseUrl, port, workspace) {
  const remote = (file) => `vscode-remote://127.0.0.1:${port}${file}`;
  const payload = [
    ['extensionDevelopmentPath', remote(extensionPath)],
    ['extensionTestsPath', remote(suitePath)],
  ];
  return `${baseUrl}/?folder=${encodeURIComponent(workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
}

function readIfExists(file) {
  return existsSync(file) ? readFileSync(file, 'utf8').trim() : '(none)';
}

let entry;
before(() => {
  entry = ensureCodeServer();
  ensureExtensionBuilt();
  mkdirSync(artifactsDir, { recursive: true });
  for (const stale of ['vscode-stopped-on-fault.png', 'vscode-failure.png', 'vscode-suite.log']) {
    rmSync(path.join(artifactsDir, stale), { force: true });
  }
}, { timeout: SETUP_TIMEOUT_MS });

test('real VS Code: the debugger pauses on a page fault, shows it, and runs the demo to exit 0', { timeout: TEST_TIMEOUT_MS }, async (t) => {
  // If the runner gives up on this test, stop waiting so the cleanup below still runs.
  const cancelled = new Promise((_, reject) => {
    t.signal.addEventListener('abort', () => reject(new Error('the test runner cancelled the test (timeout)')), { once: true });
  });
  cancelled.catch(() => {});

  const e2eDir = mkdtempSync(path.join(os.tmpdir(), 'uffd-e2e-'));
  liveTempDirs.add(e2eDir);
  const dirs = writeWorkspace(e2eDir);
  const port = await freePort();
  const baseUrl = `http://127.0.0.1:${port}`;
  const server = startCodeServer(entry, { port, e2eDir, dirs });
  const pageLog = new LineTail(30);
  let context;
  let page;
  try {
    await waitForHealthy(baseUrl, server.exited);

    context = await chromium.launchPersistentContext(dirs.browserProfile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 900 },
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
        '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    let reportExit;
    const suiteExit = new Promise((resolve) => { reportExit = resolve; });
    // The extension host reports the suite's result through this function in the page.
    await context.exposeFunction('codeAutomationExit', (code) => reportExit(code));
    page = context.pages()[0] ?? await context.newPage();
    page.on('console', (message) => {
      if (message.type() === 'error' && !HARMLESS_CONSOLE_ERRORS.test(message.text())) pageLog.push('', `[console.error] ${firstLine(message.text())}\n`);
    });
    page.on('pageerror', (error) => pageLog.push('', `[pageerror] ${firstLine(error.message)}\n`));
    await page.goto(workbenchUrl(baseUrl, port, dirs.workspace));

    // Whichever comes first: the paused UI, or the suite ending (a failure, or it never waited for us).
    const suiteEndedEarly = suiteExit.then((code) => { throw new Error(`the suite exited with code ${code} before the UI showed "Paused on page fault"`); });
    const pausedUi = (async () => {
      await page.getByText('Paused on page fault').first().waitFor({ state: 'visible', timeout: PAUSED_UI_TIMEOUT_MS });
      await page.locator('.debug-toolbar').first().waitFor({ state: 'visible', timeout: 30_000 });
      // At least one row (thread or frame) in the call stack, so the screenshot shows where it stopped.
      await page.locator('.debug-call-stack .monaco-list-row').first().waitFor({ state: 'visible', timeout: 30_000 });
      // The Variables view shows the held fault: its scopes, expanded, with the faulting address.
      const variables = page.locator('.debug-variables');
      await variables.getByText('Fault', { exact: true }).first().waitFor({ state: 'visible', timeout: 30_000 });
      await variables.getByText('VMA', { exact: true }).first().waitFor({ state: 'visible', timeout: 30_000 });
      await variables.getByText(/^0x[0-9a-f]+$/).first().waitFor({ state: 'visible', timeout: 30_000 });
    })();
    await Promise.race([pausedUi, suiteEndedEarly, cancelled]);
    await page.screenshot({ path: path.join(artifactsDir, 'vscode-stopped-on-fault.png') });

    // The fault timeline opened with the session and shows the held fault; a click on it selects
    // its thread in the debugger (the suite inside checks the adapter's answer).
    const heldSeq = Number(/page fault #(\d+)/.exec(await page.locator('.debug-call-stack').innerText())?.[1]);
    assert.ok(heldSeq > 0, 'the call stack names the held fault');
    const panel = await Promise.race([timelineFrame(page, 60_000), cancelled]);
    // A stop opens a source editor, which may cover the panel: bring its tab to the front.
    await page.locator('.tab', { hasText: 'Faults: uffd: touch demo' }).first().click({ timeout: 30_000 });
    await panel.waitForFunction((seq) => window.__timeline.stats().pending >= 1 &&
      window.__timeline.pixelOf(seq) !== null, heldSeq, { timeout: 30_000 });
    const stats = await panel.evaluate(() => window.__timeline.stats());
    assert.ok(stats.events >= 1 && stats.lanes.length >= 1, `the panel shows faults in lanes: ${JSON.stringify(stats.kinds)}`);
    const at = await panel.evaluate((seq) => {
      const p = window.__timeline.pixelOf(seq);
      const r = document.getElementById('chart').getBoundingClientRect();
      return { x: p.x - r.left, y: p.y - r.top };
    }, heldSeq);
    await panel.locator('#chart').click({ position: at });
    await panel.waitForFunction((seq) => window.__timeline.stats().selected === seq, heldSeq, { timeout: 10_000 });
    await page.screenshot({ path: path.join(artifactsDir, 'vscode-timeline.png') });
    writeFileSync(path.join(e2eDir, 'screenshot.done'), `${new Date().toISOString()}\n`);

    const code = await Promise.race([suiteExit, cancelled, timeout(SUITE_TIMEOUT_MS, 'codeAutomationExit from the extension host')]);
    assert.equal(code, 0, `the suite in the extension host exited with code ${code}`);
  } catch (error) {
    if (page) {
      await page.screenshot({ path: path.join(artifactsDir, 'vscode-failure.png'), timeout: 10_000 }).catch(() => {});
    }
    assert.fail([
      `${error.message}`,
      `--- suite log ($E2E_DIR/suite.log) ---`, readIfExists(path.join(e2eDir, 'suite.log')),
      `--- page console errors (without the expected offline ones) ---`, pageLog.text() || '(none)',
      `--- last 50 lines of code-server output ---`, server.tail.text() || '(none)',
      `screenshot: ${path.relative(repoRoot, path.join(artifactsDir, 'vscode-failure.png'))}`,
    ].join('\n'));
  } finally {
    if (context) await Promise.race([context.close(), delay(10_000)]).catch(() => {});
    await stopCodeServer(server);
    // Kept for CI: how far the suite inside the extension host got.
    writeFileSync(path.join(artifactsDir, 'vscode-suite.log'), readIfExists(path.join(e2eDir, 'suite.log')) + '\n');
    rmSync(e2eDir, { recursive: true, force: true });
    liveTempDirs.delete(e2eDir);
  }
});
