// End-to-end test in a real VS Code: code-server serves the workbench, Debian's chromium renders it
// (through playwright-core), and the extension under development runs in a real extension host.
// The suite inside the host (test/vscode/suite/index.js) starts a debug session of the demo and
// checks the DAP traffic; this side drives and reads the workbench like a user: the paused UI and
// the timeline click, Step Over to the program's touching line (Call Stack, editor), the VMA and
// Registers scopes, "Resolve Page…" with a byte pattern, and the program's end in the Debug
// Console. Then a second session in observe mode: demo/bin/postcopy runs its own handler, which
// forgets a page; "Fault waiting too long" is enabled with a condition in the Breakpoints view, the
// Call Stack shows the blocked worker in postcopy.c, the timeline rings the stuck fault, and
// Continue lets the demo's watchdog end the run. The two sides meet through files in $E2E_DIR.
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
import { redPixelsAround } from '../webview/harness.mjs';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
// The extension to load; override to run the harness against another build (or a stub).
const extensionPath = path.resolve(process.env.UFFD_E2E_EXTENSION_PATH ?? repoRoot);
const suitePath = path.join(repoRoot, 'test', 'vscode', 'suite', 'index.js');
const artifactsDir = path.join(repoRoot, 'test', 'artifacts');
const CHROMIUM = '/usr/bin/chromium';

const LAUNCH_NAME = 'uffd: touch demo';
const PAGES = 64;
const TOUCH_C = path.join(repoRoot, 'demo', 'touch.c');
const OBSERVE_NAME = 'uffd: observe postcopy';
const POSTCOPY_C = path.join(repoRoot, 'demo', 'postcopy.c');
const FORGET_PAGE = 40; // the handler never places this page; the demo's watchdog gives up after WATCHDOG_S
// The UI checks end 4-8 s after the session starts on a quiet machine, but took over 18 s in one
// CI run (the panel closes with the session, so a check still running then fails): room for 5x.
const WATCHDOG_S = 40;
const WAIT_CONDITION = '300ms'; // typed into the Breakpoints view for "Fault waiting too long"
const RESOLVE_PATTERN = 0x5a; // typed into "Resolve Page…"'s input box (its default is 0xaa)
const MAX_STEPS = 60; // Step Over presses from the first fault (in ld.so) to the first touch of the region
// What the VMA scope must decode for touch's anonymous region (rw-p, registered for missing faults).
const REGION_FLAGS = {
  rd: 'readable', wr: 'writeable', mr: 'may read', mw: 'may write', me: 'may execute',
  ac: 'area is accountable', um: 'userfaultfd missing tracking',
};
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
      args: ['--pages', String(PAGES)],
      stopOnFirstFault: true,
    }, {
      type: 'uffd',
      request: 'launch',
      name: OBSERVE_NAME,
      program: path.join(repoRoot, 'demo', 'bin', 'postcopy'),
      args: ['--pages', '128', '--threads', '2', '--no-push', '--forget', String(FORGET_PAGE), '--watchdog', String(WATCHDOG_S)],
      observe: true,
      stopOnFirstFault: false,
      stopOnWaitMs: 300, // a fault unresolved this long is reported stuck
    }],
  }, null, 2));
  mkdirSync(path.join(dirs.userData, 'User'), { recursive: true });
  writeFileSync(path.join(dirs.userData, 'User', 'settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none',
    'telemetry.telemetryLevel': 'off',
    'extensions.autoCheckUpdates': false,
    'extensions.autoUpdate': false,
    'workbench.tree.enableStickyScroll': false, // one row per element in the Variables and Call Stack trees
    'git.openRepositoryInParentFolders': 'never', // no "Git repositories were found" toast over the screenshots
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

// ---- Reading and driving the workbench: every check below is on what the DOM renders. ----

/** Polls check() (async, returns a truthy value when satisfied) until it does or ms pass. */
async function eventually(what, check, ms = 30_000, intervalMs = 200) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms / 1000} s waiting for ${what}${last ? ` (last error: ${last.message})` : ''}`);
    }
    await delay(intervalMs);
  }
}

/** The rows a workbench tree/list renders under root, in list order (it renders only what is in view). */
function listRows(page, root) {
  return page.evaluate((selector) => {
    const rows = [...document.querySelectorAll(`${selector} .monaco-list-row:not(.monaco-tree-sticky-row)`)];
    return rows.map((row) => ({
      index: Number(row.dataset.index),
      level: Number(row.getAttribute('aria-level') ?? 0),
      expanded: row.getAttribute('aria-expanded'),
      text: row.innerText.replace(/\s+/g, ' ').trim(),
      // Call Stack frame rows
      label: row.querySelector('.stack-frame .label')?.textContent?.trim() ?? null,
      file: row.querySelector('.stack-frame .file-name')?.textContent?.trim() ?? null,
      line: row.querySelector('.stack-frame .line-number')?.textContent?.trim() ?? null,
      // Variables rows
      scope: row.querySelector('.scope')?.textContent?.trim() ?? null,
      name: row.querySelector('.expression .name')?.textContent?.replace(/\s*[:=]\s*$/, '').trim() ?? null,
      value: row.querySelector('.expression .value')?.textContent?.trim() ?? null,
    })).sort((a, b) => a.index - b.index);
  }, root);
}

const callStackRows = (page) => listRows(page, '.debug-call-stack');
const variableRows = (page) => listRows(page, '.debug-variables');

/** The fault the Call Stack names in its label frame ("page fault #N: ..."). */
async function shownFaultSeq(page) {
  const rows = await callStackRows(page);
  const m = rows.map((r) => /page fault #(\d+)/.exec(r.text)).find(Boolean);
  return m ? Number(m[1]) : null;
}

/** A button of the floating debug toolbar, by its title. */
function toolbarButton(page, title) {
  return page.locator('.debug-toolbar').getByRole('button', { name: title });
}

/** Clicks a scope or variable row in the Variables view to expand (or collapse) it. */
async function setExpanded(page, name, expanded) {
  // The tree may re-render between reading a row and clicking it: read and click again until it holds.
  await eventually(`a '${name}' row in the Variables view to click`, async () => {
    const rows = await variableRows(page);
    const row = rows.find((r) => r.scope === name || r.name === name);
    if (!row) throw new Error(`no '${name}' row in the Variables view: ${rows.map((r) => r.text).join(' | ')}`);
    if ((row.expanded === 'true') === expanded) return true;
    await page.locator(`.debug-variables .monaco-list-row:not(.monaco-tree-sticky-row)[data-index="${row.index}"]`).click({ timeout: 2_000 });
    return true;
  }, 15_000, 300);
  await eventually(`'${name}' ${expanded ? 'expanded' : 'collapsed'} in the Variables view`, async () =>
    (await variableRows(page)).some((r) => (r.scope === name || r.name === name) && (r.expanded === 'true') === expanded), 15_000);
}

/** Scrolls the Variables view until a row satisfies match (it renders only the rows in view). */
async function findVariableRow(page, what, match, ms = 20_000, step = 120) {
  const list = page.locator('.debug-variables .monaco-list').first();
  return eventually(what, async () => {
    const rows = await variableRows(page);
    const row = rows.find(match);
    if (row) {
      await page.locator(`.debug-variables .monaco-list-row:not(.monaco-tree-sticky-row)[data-index="${row.index}"]`).scrollIntoViewIfNeeded();
      return row;
    }
    await list.hover();
    await page.mouse.wheel(0, step);
    return null;
  }, ms, 300);
}

/** 1-based line in file holding all of texts. */
function lineOf(file, ...texts) {
  const i = readFileSync(file, 'utf8').split('\n').findIndex((l) => texts.every((t) => l.includes(t)));
  assert.ok(i >= 0, `${texts.join(' … ')} in ${file}`);
  return i + 1;
}

/**
 * touch's checksum after page `pattern`-filled by hand: every page p holds (p & 0xff) | 1 in its
 * first byte (written by the program after the resolve), the resolved page also `pattern` in its
 * 4095 other bytes.
 */
function touchChecksum(pages, pattern) {
  let sum = 0;
  for (let p = 0; p < pages; p++) sum += (p & 0xff) | 1;
  return (sum + 4095 * pattern).toString(16);
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

/**
 * From the first stop (in the dynamic loader): Step Over from the debug toolbar until the Call
 * Stack shows the program's own touching line, check the Call Stack, the editor, the VMA and
 * Registers scopes, then "Resolve Page…" from the toolbar with a byte pattern, and see the
 * program run to its end with the checksum that pattern gives.
 */
async function driveToResolve(page, e2eDir) {
  const touchLine = lineOf(TOUCH_C, 'region[p * PAGE] = ', '/* TOUCH */');
  const callLine = lineOf(TOUCH_C, 'toucher(&shares[0]);');
  const atTouch = (rows) => rows.find((r) => r.label === 'toucher' && r.file === 'touch.c');

  // 1. Step Over (resolve this fault, stop on the next one) until the faulting frame is touch.c's.
  let steps = 0;
  for (;;) {
    const seq = await eventually('the Call Stack to name the held fault', () => shownFaultSeq(page), 30_000);
    // The rest of the stack arrives a moment after the top: give it that moment.
    const rows = await eventually(`the frames of fault #${seq}`, async () => {
      const r = await callStackRows(page);
      return r.filter((x) => x.label !== null).length >= 2 ? r : null;
    }, 10_000).catch(() => callStackRows(page));
    if (atTouch(rows)) break;
    assert.ok(steps < MAX_STEPS, `no stop on touch.c's TOUCH line after ${steps} steps; the Call Stack shows: ${rows.map((r) => r.text).join(' | ')}`);
    await toolbarButton(page, /^Step Over/).click({ timeout: 30_000 });
    steps++;
    await eventually(`a new stop after Step Over #${steps} (from fault #${seq})`, async () => {
      const now = await shownFaultSeq(page);
      return now !== null && now > seq;
    }, 30_000);
  }

  // The Call Stack: the label, the faulting frame at the TOUCH line, main at its call, libc as a
  // module frame (frames without source are subtle: VS Code folds them under "Show N More Stack Frames").
  await eventually('main in the Call Stack', async () => (await callStackRows(page)).some((x) => x.label === 'main'), 15_000);
  const more = page.locator('.debug-call-stack .monaco-list-row', { hasText: /Show \d+ More Stack Frames?/ }).first();
  if (await more.isVisible()) await more.click();
  const rows = await eventually('the libc frames of the touching fault', async () => {
    const r = await callStackRows(page);
    return r.some((x) => /\(libc\.so\.6\)$/.test(x.label ?? '')) ? r : null;
  }, 15_000);
  const frames = rows.filter((r) => r.label !== null);
  const labelRow = rows.find((r) => /^page fault #\d+: missing write at 0x[0-9a-f]+/.test(r.text));
  assert.ok(labelRow, `the Call Stack names the fault: ${rows.map((r) => r.text).join(' | ')}`);
  const top = frames.find((r) => !/^page fault #/.test(r.label));
  assert.equal(top.label, 'toucher', `the first real frame is the touching function: ${frames.map((r) => r.text).join(' | ')}`);
  assert.equal(top.file, 'touch.c');
  assert.match(top.line, new RegExp(`^${touchLine}(:\\d+)?$`), `the faulting frame is at the /* TOUCH */ line ${touchLine}`);
  const main = frames.find((r) => r.label === 'main');
  assert.equal(main.file, 'touch.c');
  assert.match(main.line, new RegExp(`^${callLine}(:\\d+)?$`), `main's frame is at its call of toucher (line ${callLine})`);
  const libc = frames.find((r) => /\(libc\.so\.6\)$/.test(r.label));
  assert.ok(frames.indexOf(main) < frames.indexOf(libc), 'main before its caller in libc');

  // The editor: touch.c open at that line, with the stopped-line decoration on it.
  const editor = await eventually('touch.c in the active editor with the top-stack-frame decoration', async () => {
    const state = await page.evaluate(() => {
      const group = document.querySelector('.editor-group-container.active');
      const tab = group?.querySelector('.tab.active')?.textContent?.trim() ?? null;
      const ed = group?.querySelector('.monaco-editor');
      const deco = ed?.querySelector('.view-overlays .debug-top-stack-frame-line');
      if (!ed || !deco) return { tab };
      const top = deco.parentElement.getBoundingClientRect().top;
      const number = [...ed.querySelectorAll('.margin .line-numbers')]
        .find((n) => Math.abs(n.parentElement.getBoundingClientRect().top - top) < 2)?.textContent?.trim();
      const glyph = !!ed.querySelector('.margin .codicon-debug-stackframe');
      const status = [...document.querySelectorAll('.statusbar-item')].map((i) => i.textContent.trim()).find((t) => /^Ln \d+/.test(t)) ?? null;
      return { tab, number: Number(number), glyph, status };
    });
    return state.tab?.startsWith('touch.c') && state.number === touchLine ? state : null;
  }, 20_000);
  assert.ok(editor.glyph, 'the glyph margin shows the stack-frame arrow');
  assert.match(editor.status ?? '', new RegExp(`^Ln ${touchLine},`), 'the cursor is on the faulting line');
  await page.mouse.move(900, 500); // no toolbar tooltip in the picture
  await delay(500); // let the views settle for the picture
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-callstack-source.png') });

  // 2. The Variables view: the VMA scope with VmFlags decoded, one row per code with its meaning.
  await setExpanded(page, 'Fault', false);
  await setExpanded(page, 'VMA', true);
  const vmflags = await findVariableRow(page, 'the VmFlags row of the VMA scope', (r) => r.name === 'VmFlags');
  for (const code of Object.keys(REGION_FLAGS)) {
    assert.match(vmflags.value, new RegExp(`\\b${code}\\b`), `VmFlags lists ${code}`);
  }
  await setExpanded(page, 'VmFlags', true);
  for (const [code, meaning] of Object.entries(REGION_FLAGS)) {
    const row = await findVariableRow(page, `the decoded VmFlags row '${code}'`, (r) => r.name === code && r.level >= 3);
    assert.equal(row.value, meaning, `${code} is explained`);
  }
  const modes = await findVariableRow(page, "the VMA's 'userfaultfd modes' row", (r) => r.name === 'userfaultfd modes');
  assert.match(modes.value, /missing/, 'the region is registered for missing faults (um)');
  await page.locator('.debug-variables .monaco-list-row', { hasText: 'VmFlags' }).first().scrollIntoViewIfNeeded();
  await page.mouse.move(900, 500); // no hover over a variable in the picture
  await delay(500);
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-vma-scope.png') });

  // The Registers scope shows rip.
  await setExpanded(page, 'VMA', false);
  await setExpanded(page, 'Registers', true);
  const rip = await findVariableRow(page, "the Registers scope's rip", (r) => r.name === 'rip');
  assert.match(rip.value, /^0x[0-9a-f]+/, `rip is an address: ${rip.value}`);
  // Back to the Fault scope alone for the next picture: the view's Collapse All, then Fault.
  await page.locator('.pane-header', { hasText: 'Variables' }).hover();
  await page.locator('.pane-header', { hasText: 'Variables' }).getByRole('button', { name: 'Collapse All' }).click({ timeout: 10_000 });
  await setExpanded(page, 'Fault', true);

  // 3. "Resolve Page…" from the debug toolbar; a byte pattern from its quick pick and input box.
  await toolbarButton(page, /Resolve Page/).click({ timeout: 30_000 });
  const quick = page.locator('.quick-input-widget');
  await quick.getByText('Resolve the page this thread faulted on').waitFor({ state: 'visible', timeout: 30_000 });
  // What the kernel accepts for a missing fault on anonymous memory; not UFFDIO_CONTINUE (minor
  // faults) nor un-protect (write-protect faults).
  for (const way of ['Default', 'Zero page', 'Fill with a byte pattern…', 'Copy from a file…', 'Poison', 'Wake only', 'Apply to a range of pages…']) {
    await quick.locator('.monaco-list-row', { hasText: way }).first().waitFor({ state: 'visible', timeout: 10_000 });
  }
  const offered = await quick.locator('.monaco-list-row .label-name').allTextContents();
  for (const absent of ['Continue', 'Un-protect']) {
    assert.ok(!offered.some((label) => label.trim() === absent), `'${absent}' is not offered for a missing fault: ${offered.join(' | ')}`);
  }
  // Down to the byte pattern with the keyboard, as a user would, then Enter.
  const input = quick.locator('input.input').first();
  const focusedWay = () => quick.locator('.monaco-list-row.focused .label-name').first().textContent({ timeout: 5_000 }).catch(() => '');
  for (let i = 0; i < 12 && !(await focusedWay()).includes('Fill with a byte pattern'); i++) await input.press('ArrowDown');
  assert.match(await focusedWay(), /Fill with a byte pattern/, 'the byte pattern is the active item');
  await page.mouse.move(900, 700);
  await delay(300);
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-resolve-page.png') });
  await input.press('Enter');
  await quick.getByText(/Byte value to fill the page with/).waitFor({ state: 'visible', timeout: 15_000 });
  assert.equal(await input.inputValue(), '0xaa', 'the input box offers a default pattern');
  await input.fill(`0x${RESOLVE_PATTERN.toString(16)}`);
  await input.press('Enter');
  await quick.waitFor({ state: 'hidden', timeout: 15_000 });
  await eventually('the status bar to say the page was resolved', async () =>
    /uffd-debug: page 0x[0-9a-f]+ resolved with UFFDIO_COPY/.test(await page.locator('.statusbar').innerText()), 10_000, 100);

  // The thread runs on from the filled page; nothing else is held, so the program runs to its
  // end (should another stop appear, Continue from the toolbar). The Debug Console shows its output.
  const checksum = touchChecksum(PAGES, RESOLVE_PATTERN);
  await eventually('the session to end with the checksum in the Debug Console', async () => {
    const repl = await page.locator('.repl').first().innerText().catch(() => '');
    if (repl.includes(`checksum ${checksum} touched ${PAGES}`) && repl.includes('exited with code 0') &&
      !(await page.locator('.debug-toolbar').first().isVisible())) return true;
    const cont = toolbarButton(page, /^Continue/);
    if (await cont.isVisible() && await cont.isEnabled()) await cont.click({ timeout: 5_000 }).catch(() => {});
    return false;
  }, 60_000, 500);
  const repl = await page.locator('.repl').first().innerText();
  assert.match(repl, /region 0x[0-9a-f]+ pages 64/, 'the program\'s first output line is in the Debug Console');
  // A normal end raises no error (VS Code calls the closing of the adapter's stdout a "read error").
  await delay(1_500);
  const toasts = await page.evaluate(() => document.querySelector('.notifications-toasts')?.innerText ?? '');
  assert.doesNotMatch(toasts, /uffd-debug:/, `no uffd-debug notification at the end: ${toasts}`);
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-resolved-exit.png') });
  writeFileSync(path.join(e2eDir, 'steps.txt'), `${steps}\n`);
}

/** The timeline webview frame of the observe session: the one whose panel holds a stuck fault. */
async function stuckTimelineFrame(page, timeoutMs) {
  return eventually('a timeline webview showing a stuck fault', async () => {
    for (const f of page.frames()) {
      const n = await f.evaluate(() => (typeof window.__timeline === 'object' ? window.__timeline.stats().stuck.length : 0)).catch(() => 0);
      if (n > 0) return f;
    }
    return null;
  }, timeoutMs, 250);
}

/**
 * The observe session (started by the suite): while postcopy hangs on its forgotten page, enable
 * "Fault waiting too long" in the Breakpoints view with a condition typed into the view; the stop
 * shows the blocked worker's frames in postcopy.c; the timeline rings the stuck fault and names it
 * on selection; Continue from the toolbar, and the demo's watchdog ends the run with the summary
 * naming the stuck page. Returns what the UI showed.
 */
async function driveObserve(page, e2eDir) {
  await eventually('the suite to start the observe session', () => existsSync(path.join(e2eDir, 'observe.started')), 60_000, 250);
  const t0 = Date.now();
  await page.locator('.debug-toolbar').first().waitFor({ state: 'visible', timeout: 30_000 });
  // The Breakpoints view lists the observe-mode filters the adapter announced.
  const header = page.locator('.pane-header', { hasText: 'Breakpoints' }).first();
  await header.waitFor({ state: 'visible', timeout: 30_000 });
  if ((await header.getAttribute('aria-expanded')) === 'false') await header.click();
  const row = page.locator('.debug-breakpoints .monaco-list-row', { hasText: 'Fault waiting too long' }).first();
  // The list renders only the rows in view: scroll down to it.
  const list = page.locator('.debug-breakpoints .monaco-list').first();
  await eventually('"Fault waiting too long" in the Breakpoints view', async () => {
    if (await row.isVisible()) return true;
    await list.hover();
    await page.mouse.wheel(0, 60);
    const shown = (await listRows(page, '.debug-breakpoints')).map((r) => r.text);
    throw new Error(`the view shows: ${shown.join(' | ')}`);
  }, 30_000, 300);
  await row.scrollIntoViewIfNeeded();
  // Its condition, from the row's context menu, typed into the view's input.
  await row.click({ button: 'right' });
  const menuItem = page.locator('.monaco-menu .action-menu-item', { hasText: /Edit Condition/ }).first();
  await menuItem.waitFor({ state: 'visible', timeout: 10_000 });
  await menuItem.hover();
  await page.keyboard.press('Enter');
  const input = page.locator('.debug-breakpoints .monaco-list-row input:not([type="checkbox"]), .debug-breakpoints .monaco-list-row textarea').first();
  await input.waitFor({ state: 'visible', timeout: 10_000 });
  await input.fill(WAIT_CONDITION);
  await input.press('Enter');
  const box = row.locator('input[type="checkbox"]');
  if (!(await box.isChecked())) await box.click();
  assert.ok(await box.isChecked(), '"Fault waiting too long" is enabled');

  // The stop: the worker blocked on the forgotten page, its own frames in postcopy.c.
  const workerFirst = lineOf(POSTCOPY_C, 'static void *worker(void *arg)');
  const rows = await eventually('the Call Stack to show the worker stopped in postcopy.c', async () => {
    const r = await callStackRows(page);
    return r.some((x) => x.label === 'worker' && x.file === 'postcopy.c') && r.some((x) => /has waited \d+ ms/.test(x.text)) ? r : null;
  }, 60_000);
  const label = rows.map((r) => /fault on page (0x[0-9a-f]+) has waited (\d+) ms/.exec(r.text)).find(Boolean);
  assert.ok(label && Number(label[2]) >= 300, `the Call Stack says how long the fault has waited: ${rows.map((r) => r.text).join(' | ')}`);
  const stuckPage = label[1];
  const stopAfterMs = Date.now() - t0;
  assert.ok(rows.some((r) => /pc-worker-\d/.test(r.text)), `the stopped thread is a worker: ${rows.map((r) => r.text).join(' | ')}`);
  const worker = rows.find((x) => x.label === 'worker' && x.file === 'postcopy.c');
  const line = Number(/^(\d+)/.exec(worker.line ?? '')?.[1]);
  assert.ok(line > workerFirst && line < workerFirst + 15, `the worker frame is inside worker() (from line ${workerFirst}): ${worker.line}`);
  await eventually('postcopy.c in the active editor', async () =>
    (await page.locator('.editor-group-container.active .tab.active').first().textContent().catch(() => ''))?.trim().startsWith('postcopy.c'), 20_000);

  // The timeline: the stuck fault drawn with its ring, named when selected.
  await page.locator('.tab', { hasText: `Faults: ${OBSERVE_NAME}` }).first().click({ timeout: 30_000 });
  // The panel's group takes the editor area (the Call Stack stays in view) for a readable picture.
  // Best effort: a key press can land in the webview's frame instead of the workbench.
  try {
    await page.locator('.tab', { hasText: `Faults: ${OBSERVE_NAME}` }).first().focus();
    await page.keyboard.press('F1');
    const palette = page.locator('.quick-input-widget input').first();
    await palette.waitFor({ state: 'visible', timeout: 5_000 });
    await palette.fill('>View: Toggle Maximize Editor Group');
    await page.locator('.quick-input-widget .monaco-list-row', { hasText: 'Toggle Maximize Editor Group' }).first().waitFor({ state: 'visible', timeout: 10_000 });
    await palette.press('Enter');
  } catch {
    await page.keyboard.press('Escape').catch(() => {});
  }
  const panel = await stuckTimelineFrame(page, 30_000);
  await delay(500);
  await panel.evaluate(() => window.__timeline.frame());
  await panel.waitForFunction(() => {
    const s = window.__timeline.stats();
    return s.drawn.stuck >= 1 && s.drawnVersion === s.version;
  }, null, { timeout: 30_000 });
  const stats = await panel.evaluate(() => window.__timeline.stats());
  assert.deepEqual(stats.stuck.map((x) => [x.page, x.resolved]), [[stuckPage, false]], 'the panel holds the stuck fault the stop names');
  assert.ok(stats.lanes.some((l) => l.via === 'observe'), `the handler's registered range is a lane: ${JSON.stringify(stats.lanes)}`);
  assert.ok(stats.events >= 2 && stats.drawn.resolutions >= 1, `faults and the handler's resolutions drawn: ${JSON.stringify(stats.drawn)}`);
  assert.ok(stats.histogram.reduce((a, b) => a + b, 0) >= 1, 'the handler\'s latencies are in the histogram');
  const stuckSeq = stats.stuck[0].seq;
  const red = await redPixelsAround(panel, stuckSeq);
  assert.ok(red > 40, `a red ring around the stuck fault: ${red} pixels of the theme's red`);
  await panel.locator('#chart-box').press('s');
  await panel.waitForFunction((q) => window.__timeline.stats().selected === q, stuckSeq, { timeout: 10_000 });
  const details = await panel.locator('#details').innerText();
  assert.match(details, /stuck\s+read by the handler, never resolved, waited \d+ ms/, details);
  assert.match(details, new RegExp(stuckPage), 'the details name the page');
  assert.match(await panel.locator('#rates').innerText(), /stuck 1/);
  await page.mouse.move(900, 980);
  await delay(500);
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-observe-stuck.png') });

  // Continue: the worker still waits for its handler; the demo's watchdog gives up (exit 3) and
  // the summary names the stuck page. The session ends without an error notification.
  const checkedMs = Date.now() - t0;
  await toolbarButton(page, /^Continue/).click({ timeout: 30_000 });
  const t1 = Date.now();
  await eventually("the observe session to end with the summary's stuck fault in the Debug Console", async () => {
    const repl = await page.locator('.repl').first().innerText().catch(() => '');
    return repl.includes(`stuck fault: page ${stuckPage}`) && repl.includes('exited with code 3') &&
      !(await page.locator('.debug-toolbar').first().isVisible());
  }, (WATCHDOG_S + 30) * 1000, 500);
  const endedAfterMs = Date.now() - t1;
  await delay(1_500);
  const toasts = await page.evaluate(() => document.querySelector('.notifications-toasts')?.innerText ?? '');
  assert.doesNotMatch(toasts, /uffd-debug:|observe mode/, `no uffd-debug notification during or at the end of the observe session: ${toasts}`);
  assert.equal(await page.locator('.tab', { hasText: `Faults: ${OBSERVE_NAME}` }).count(), 0, 'the timeline closed with its session');
  await page.screenshot({ path: path.join(artifactsDir, 'vscode-observe-exit.png') });
  return { page: stuckPage, seq: stuckSeq, stopAfterMs, checkedMs, endedAfterMs };
}

let entry;
before(() => {
  entry = ensureCodeServer();
  ensureExtensionBuilt();
  mkdirSync(artifactsDir, { recursive: true });
  for (const stale of ['vscode-stopped-on-fault.png', 'vscode-timeline.png', 'vscode-callstack-source.png',
    'vscode-vma-scope.png', 'vscode-resolve-page.png', 'vscode-resolved-exit.png', 'vscode-observe-stuck.png',
    'vscode-observe-exit.png', 'vscode-failure.png', 'vscode-suite.log']) {
    rmSync(path.join(artifactsDir, stale), { force: true });
  }
}, { timeout: SETUP_TIMEOUT_MS });

test('real VS Code: pauses on a page fault, steps to its source line, shows the VMA, resolves the page from the UI, the demo exits 0; ' +
  'observe mode: a forgotten page stops on "Fault waiting too long", the worker in the Call Stack, the stuck fault ringed in the timeline', { timeout: TEST_TIMEOUT_MS }, async (t) => {
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
      viewport: { width: 1400, height: 1000 },
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

    // The rest runs while the suite waits: stop it waiting if it fails meanwhile.
    const suiteFailed = suiteExit.then((code) => { throw new Error(`the suite exited with code ${code} while the UI was being driven`); });
    suiteFailed.catch(() => {});
    await Promise.race([driveToResolve(page, e2eDir), suiteFailed, cancelled]);
    writeFileSync(path.join(e2eDir, 'ui.done'), `${new Date().toISOString()}\n`);
    const observedUi = await Promise.race([driveObserve(page, e2eDir), suiteFailed, cancelled]);
    writeFileSync(path.join(e2eDir, 'observe.done'), `${new Date().toISOString()}\n`);

    const code = await Promise.race([suiteExit, cancelled, timeout(SUITE_TIMEOUT_MS, 'codeAutomationExit from the extension host')]);
    assert.equal(code, 0, `the suite in the extension host exited with code ${code}`);
    // What the suite saw on the wire agrees with what the UI showed.
    const dap = JSON.parse(readFileSync(path.join(e2eDir, 'dap.json'), 'utf8'));
    assert.equal(dap.resolve.how, 'copy', 'the byte pattern resolves with UFFDIO_COPY');
    assert.equal(dap.resolve.pattern, RESOLVE_PATTERN, 'the pattern typed into the input box was sent');
    assert.equal(dap.checksum, touchChecksum(PAGES, RESOLVE_PATTERN));
    const obs = JSON.parse(readFileSync(path.join(e2eDir, 'observe.json'), 'utf8'));
    assert.equal(obs.condition, WAIT_CONDITION, 'the condition typed into the Breakpoints view was sent');
    assert.equal(obs.page, observedUi.page, 'the UI and the adapter name the same stuck page');
    assert.equal(obs.demoPage, FORGET_PAGE, "the demo's watchdog names the forgotten page");
    assert.ok(obs.worker.path.endsWith(POSTCOPY_C), `the worker frame's source is demo/postcopy.c: ${obs.worker.path}`);
    console.log(`observe session: stopped ${observedUi.stopAfterMs} ms after the session started, UI checked in ` +
      `${observedUi.checkedMs} ms, ended ${observedUi.endedAfterMs} ms after Continue (the demo's watchdog: ${WATCHDOG_S} s)`);
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
