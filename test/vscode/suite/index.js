// Runs inside the VS Code extension host (extensionTestsPath), started by test/vscode/e2e.test.mjs.
// Drives one debug session of the demo through the real extension and checks the DAP traffic.
// Resolving run() makes the host exit with code 0, rejecting makes it exit with 1.
/* eslint-disable @typescript-eslint/no-require-imports */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const vscode = require('vscode');

const EXTENSION_ID = 'uffd-debug.uffd-debug';
const DEBUG_TYPE = 'uffd';
const LAUNCH_NAME = 'uffd: touch demo';
const STEP_TIMEOUT_MS = 60_000;

// The outer test reads this file to say how far the suite got.
function log(line) {
  const text = `[suite ${new Date().toISOString()}] ${line}`;
  console.log(text);
  if (process.env.E2E_DIR) fs.appendFileSync(path.join(process.env.E2E_DIR, 'suite.log'), text + '\n');
}

/** Polls check() every intervalMs until it returns something truthy; rejects after timeoutMs. */
async function waitFor(what, check, { timeoutMs = STEP_TIMEOUT_MS, intervalMs = 200 } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value) return value;
    if (Date.now() >= deadline) throw new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Records every message the uffd debug adapter sends, and lets callers wait for a matching one. */
class AdapterMessages {
  constructor() {
    this.messages = [];
    this.waiters = new Set();
  }

  add(message) {
    this.messages.push(message);
    for (const waiter of this.waiters) {
      if (waiter.match(message)) waiter.resolve(message);
    }
  }

  /** Resolves with the first message (already seen or still to come) for which match() is true. */
  waitFor(what, match, timeoutMs = STEP_TIMEOUT_MS) {
    const seen = this.messages.find(match);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const waiter = {
        match,
        resolve: (message) => {
          clearTimeout(timer);
          this.waiters.delete(waiter);
          resolve(message);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(waiter);
        reject(new Error(`timed out after ${timeoutMs / 1000} s waiting for ${what}; adapter sent: ${this.summary()}`));
      }, timeoutMs);
      this.waiters.add(waiter);
    });
  }

  summary() {
    const last = this.messages.slice(-30).map((m) => {
      if (m.type === 'event') return `event ${m.event}${m.body ? ' ' + JSON.stringify(m.body).slice(0, 200) : ''}`;
      if (m.type === 'response') return `response ${m.command} ${m.success ? 'ok' : 'FAILED: ' + (m.message ?? '')}`;
      return m.type;
    });
    return last.length ? last.join(' | ') : '(nothing)';
  }
}

const isEvent = (name) => (m) => m.type === 'event' && m.event === name;

async function run() {
  const disposables = [];
  try {
    log('suite started');
    const extension = await waitFor(`extension ${EXTENSION_ID} to be registered`, () => vscode.extensions.getExtension(EXTENSION_ID));
    await extension.activate();
    if (!extension.isActive) throw new Error(`extension ${EXTENSION_ID} did not become active`);
    log(`extension ${EXTENSION_ID} active (from ${extension.extensionPath})`);

    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new Error('no workspace folder is open; the outer test opens one with ?folder=');

    const adapter = new AdapterMessages();
    disposables.push(vscode.debug.registerDebugAdapterTrackerFactory(DEBUG_TYPE, {
      createDebugAdapterTracker: () => ({
        onDidSendMessage: (message) => adapter.add(message),
        onError: (error) => log(`adapter error: ${error?.message ?? error}`),
        onExit: (code, signal) => log(`adapter exited: code ${code} signal ${signal}`),
      }),
    }));

    const started = await vscode.debug.startDebugging(folder, LAUNCH_NAME);
    if (started !== true) throw new Error(`vscode.debug.startDebugging(folder, '${LAUNCH_NAME}') returned ${started}`);
    log(`debugging started: ${LAUNCH_NAME}`);

    const stopped = await adapter.waitFor("a 'stopped' event with reason 'page fault'",
      (m) => isEvent('stopped')(m) && m.body?.reason === 'page fault');
    log(`stopped on page fault: ${JSON.stringify(stopped.body)}`);

    // The outer test screenshots the paused UI, then creates this file.
    const screenshotDone = path.join(process.env.E2E_DIR ?? '', 'screenshot.done');
    if (!process.env.E2E_DIR) throw new Error('E2E_DIR is not set in the extension host environment');
    await waitFor(`${screenshotDone} (the outer test's screenshot)`, () => fs.existsSync(screenshotDone));
    log('screenshot done; continuing');

    // The outer test clicked the held fault in the timeline panel: the panel asked for its thread
    // (uffd/selectThread), and the adapter showed that thread's stop again.
    const stoppedCount = adapter.messages.filter(isEvent('stopped')).length;
    const reselected = await adapter.waitFor('a second stop on the same thread after the click in the timeline',
      (m) => isEvent('stopped')(m) && m.body?.threadId === stopped.body.threadId &&
        adapter.messages.filter(isEvent('stopped')).indexOf(m) >= 1, 30_000);
    log(`timeline click selected thread ${reselected.body.threadId} (${stoppedCount} stops seen)`);

    await vscode.commands.executeCommand('workbench.action.debug.continue');
    const ended = await adapter.waitFor("an 'exited' or 'terminated' event after continue",
      (m) => isEvent('exited')(m) || isEvent('terminated')(m));
    log(`session ended with event ${ended.event}`);

    // 'exited' carries the exit code; adapters send it before 'terminated', but allow it to trail a little.
    const exited = await adapter.waitFor("an 'exited' event", isEvent('exited'), 10_000);
    if (exited.body?.exitCode !== 0) {
      throw new Error(`the demo exited with code ${exited.body?.exitCode}, expected 0; adapter sent: ${adapter.summary()}`);
    }
    log('demo exited with code 0; suite passed');
  } catch (error) {
    log(`FAILED: ${error?.stack ?? error}`);
    throw error;
  } finally {
    for (const disposable of disposables) disposable.dispose();
  }
}

module.exports = { run };
