// Runs inside the VS Code extension host (extensionTestsPath), started by test/vscode/e2e.test.mjs.
// Starts two debug sessions through the real extension and checks the DAP traffic while the outer
// test drives the workbench UI (clicks, quick picks, the Breakpoints view) through the browser:
// the touch demo in the direct mode, then demo/bin/postcopy in observe mode with a forgotten page.
// Resolving run() makes the host exit with code 0, rejecting makes it exit with 1.
/* eslint-disable @typescript-eslint/no-require-imports */
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const vscode = require('vscode');

const EXTENSION_ID = 'uffd-debug.uffd-debug';
const DEBUG_TYPE = 'uffd';
const LAUNCH_NAME = 'uffd: touch demo';
const OBSERVE_NAME = 'uffd: observe postcopy'; // launch.json written by the outer test
const STEP_TIMEOUT_MS = 60_000;
const UI_TIMEOUT_MS = 180_000; // the outer test drives the UI meanwhile

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
      if (m.type === 'request') return `request ${m.command}`;
      return m.type;
    });
    return last.length ? last.join(' | ') : '(nothing)';
  }
}

const isEvent = (name) => (m) => m.type === 'event' && m.event === name;
const isRequest = (command) => (m) => m.type === 'request' && m.command === command;

/** The outer test creates $E2E_DIR/NAME when it is done with a part of the UI. */
function outerDone(name, timeoutMs) {
  const file = path.join(process.env.E2E_DIR, name);
  return waitFor(`${file} (the outer test)`, () => fs.existsSync(file), { timeoutMs, intervalMs: 250 });
}

async function run() {
  const disposables = [];
  try {
    log('suite started');
    if (!process.env.E2E_DIR) throw new Error('E2E_DIR is not set in the extension host environment');
    const extension = await waitFor(`extension ${EXTENSION_ID} to be registered`, () => vscode.extensions.getExtension(EXTENSION_ID));
    await extension.activate();
    if (!extension.isActive) throw new Error(`extension ${EXTENSION_ID} did not become active`);
    log(`extension ${EXTENSION_ID} active (from ${extension.extensionPath})`);

    const folder = vscode.workspace.workspaceFolders?.[0];
    if (!folder) throw new Error('no workspace folder is open; the outer test opens one with ?folder=');

    // Both directions: what VS Code asks the adapter (requests) and what it answers (responses,
    // events), one record per session.
    const adapter = new AdapterMessages();
    const observed = new AdapterMessages();
    const trackerFor = (sink, name) => ({
      onWillReceiveMessage: (message) => sink.add(message),
      onDidSendMessage: (message) => {
        sink.add(message);
        // What the Call Stack view was given, for a failure's log.
        if (message.type === 'response' && message.command === 'stackTrace') {
          const frames = message.body?.stackFrames ?? [];
          log(`${name}: stackTrace: ${frames.length} of ${message.body?.totalFrames} frames: ${frames.slice(0, 3).map((f) => `${f.name}${f.source?.name ? ` @${f.source.name}:${f.line}` : ''}`).join(' < ')}`);
        }
      },
      onError: (error) => log(`${name}: adapter error: ${error?.message ?? error}`),
      onExit: (code, signal) => log(`${name}: adapter exited: code ${code} signal ${signal}`),
    });
    disposables.push(vscode.debug.registerDebugAdapterTrackerFactory(DEBUG_TYPE, {
      createDebugAdapterTracker: (session) => trackerFor(session.name === OBSERVE_NAME ? observed : adapter, session.name),
    }));

    const started = await Promise.race([
      vscode.debug.startDebugging(folder, LAUNCH_NAME),
      new Promise((_, reject) => setTimeout(() => reject(new Error(
        `vscode.debug.startDebugging did not return within ${STEP_TIMEOUT_MS / 1000} s; adapter sent: ${adapter.summary()}`)), STEP_TIMEOUT_MS)),
    ]);
    if (started !== true) throw new Error(`vscode.debug.startDebugging(folder, '${LAUNCH_NAME}') returned ${started}`);
    log(`debugging started: ${LAUNCH_NAME}`);

    const stopped = await adapter.waitFor("a 'stopped' event with reason 'page fault'",
      (m) => isEvent('stopped')(m) && m.body?.reason === 'page fault');
    log(`stopped on page fault: ${JSON.stringify(stopped.body)}`);

    // The outer test screenshots the paused UI and clicks the held fault in the timeline panel:
    // the panel asks for its thread (uffd/selectThread), and the adapter shows that thread's stop
    // again (reason 'page fault'; the steps that follow stop with reason 'step').
    await outerDone('screenshot.done', STEP_TIMEOUT_MS * 2);
    const select = await adapter.waitFor('a uffd/selectThread request after the click in the timeline',
      (m) => isRequest('uffd/selectThread')(m) && m.arguments?.tid === stopped.body.threadId, 10_000);
    const afterSelect = adapter.messages.indexOf(select);
    const reselected = await adapter.waitFor('a second page-fault stop on the same thread after the click in the timeline',
      (m) => isEvent('stopped')(m) && m.body?.reason === 'page fault' && m.body?.threadId === stopped.body.threadId &&
        adapter.messages.indexOf(m) > afterSelect, 10_000);
    log(`timeline click selected thread ${reselected.body.threadId}; the outer test now steps to the touching line`);

    // The outer test steps from the UI to the fault on the TOUCH line, inspects it, resolves it
    // with "Resolve Page…" (a byte pattern) and the program runs to its end.
    const resolve = await adapter.waitFor('a uffd/resolve request from "Resolve Page…"', isRequest('uffd/resolve'), UI_TIMEOUT_MS);
    log(`resolve requested from the UI: ${JSON.stringify(resolve.arguments)}`);
    const answer = await adapter.waitFor('the answer to uffd/resolve',
      (m) => m.type === 'response' && m.request_seq === resolve.seq);
    if (!answer.success) throw new Error(`uffd/resolve failed: ${answer.message}`);
    log(`resolved: ${JSON.stringify(answer.body)}`);

    const exited = await adapter.waitFor("an 'exited' event after the resolve", isEvent('exited'));
    if (exited.body?.exitCode !== 0) {
      throw new Error(`the demo exited with code ${exited.body?.exitCode}, expected 0; adapter sent: ${adapter.summary()}`);
    }
    await adapter.waitFor("a 'terminated' event", isEvent('terminated'), 10_000);
    const output = adapter.messages.filter(isEvent('output')).map((m) => m.body?.output ?? '').join('');
    const checksum = /checksum ([0-9a-f]+) touched (\d+)/.exec(output);
    if (!checksum) throw new Error(`the demo printed no checksum; its output: ${output}`);
    log(`demo exited with code 0: ${checksum[0]}`);
    fs.writeFileSync(path.join(process.env.E2E_DIR, 'dap.json'), JSON.stringify({
      resolve: resolve.arguments, resolved: answer.body, checksum: checksum[1], touched: Number(checksum[2]),
      stops: adapter.messages.filter(isEvent('stopped')).length,
    }));

    // The outer test has read the UI of the first session.
    await outerDone('ui.done', UI_TIMEOUT_MS);
    log('direct-mode session checked');

    await observeSession(folder, observed);
    // Stay up until the outer test has read the UI: the host exits when run() ends.
    await outerDone('observe.done', UI_TIMEOUT_MS);
    log('suite passed');
  } catch (error) {
    log(`FAILED: ${error?.stack ?? error}`);
    throw error;
  } finally {
    for (const disposable of disposables) disposable.dispose();
  }
}

/**
 * Observe mode: demo/bin/postcopy runs its own userfaultfd handler, which forgets one page. The
 * outer test enables "Fault waiting too long" (condition 300ms) in the Breakpoints view while the
 * program runs; the adapter shows the worker blocked on the forgotten page, the outer test reads
 * the Call Stack and the timeline, and continues; the demo's watchdog ends the run (exit 3).
 */
async function observeSession(folder, observed) {
  const started = await Promise.race([
    vscode.debug.startDebugging(folder, OBSERVE_NAME),
    new Promise((_, reject) => setTimeout(() => reject(new Error(
      `vscode.debug.startDebugging did not return within ${STEP_TIMEOUT_MS / 1000} s; adapter sent: ${observed.summary()}`)), STEP_TIMEOUT_MS)),
  ]);
  if (started !== true) throw new Error(`vscode.debug.startDebugging(folder, '${OBSERVE_NAME}') returned ${started}`);
  log(`debugging started: ${OBSERVE_NAME}`);
  fs.writeFileSync(path.join(process.env.E2E_DIR, 'observe.started'), `${new Date().toISOString()}\n`);

  // VS Code sends the filter the outer test enabled, with the condition typed into the view.
  const set = await observed.waitFor('setExceptionBreakpoints with the "Fault waiting too long" filter (from the Breakpoints view)',
    (m) => isRequest('setExceptionBreakpoints')(m) && (m.arguments?.filterOptions ?? []).some((f) => f.filterId === 'waitTooLong') ||
      isRequest('setExceptionBreakpoints')(m) && (m.arguments?.filters ?? []).includes('waitTooLong'), UI_TIMEOUT_MS);
  const option = (set.arguments.filterOptions ?? []).find((f) => f.filterId === 'waitTooLong');
  log(`filters from the Breakpoints view: ${JSON.stringify(set.arguments)}`);
  if (option?.condition !== '300ms') throw new Error(`the filter's condition is ${JSON.stringify(option?.condition)}, the outer test typed 300ms`);
  const answer = await observed.waitFor('the answer to setExceptionBreakpoints', (m) => m.type === 'response' && m.request_seq === set.seq);
  if (!answer.success || !answer.body.breakpoints.every((b) => b.verified)) throw new Error(`filters refused: ${JSON.stringify(answer.body)}`);

  const stopped = await observed.waitFor("a 'stopped' event with reason 'wait too long'",
    (m) => isEvent('stopped')(m) && m.body?.reason === 'wait too long');
  log(`stopped: ${JSON.stringify(stopped.body)}`);
  const m = /fault on page (0x[0-9a-f]+) has waited (\d+) ms/.exec(stopped.body.description ?? '');
  if (!m || Number(m[2]) < 300) throw new Error(`the stop names no fault waiting 300 ms or more: ${stopped.body.description}`);
  const page = m[1];
  // The stuck fault reached the timeline (uffd/events) naming the same page, before the stop.
  const hasStuck = (e) => isEvent('uffd/events')(e) && (e.body?.batch?.other ?? []).some((o) => o.event === 'stuck');
  await observed.waitFor('a stuck event in the timeline batches (uffd/events)', hasStuck, 10_000);
  const stuck = observed.messages.filter(isEvent('uffd/events')).flatMap((e) => e.body?.batch?.other ?? [])
    .filter((o) => o.event === 'stuck');
  if (stuck.length !== 1 || stuck[0].page !== page) throw new Error(`timeline stuck events: ${JSON.stringify(stuck)}, the stop named ${page}`);
  // Its stack is the worker's own, in demo/postcopy.c.
  const session = vscode.debug.activeDebugSession;
  if (session?.name !== OBSERVE_NAME) throw new Error(`the active debug session is ${session?.name}, not ${OBSERVE_NAME}`);
  const st = await session.customRequest('stackTrace', { threadId: stopped.body.threadId });
  const worker = st.stackFrames.find((f) => f.name === 'worker' && f.source?.name === 'postcopy.c');
  if (!worker) throw new Error(`no worker frame in postcopy.c: ${st.stackFrames.map((f) => f.name).join(' | ')}`);

  // The outer test continues from the toolbar; the program's watchdog gives up on the page.
  const exited = await observed.waitFor("an 'exited' event after Continue", isEvent('exited'), UI_TIMEOUT_MS);
  if (exited.body?.exitCode !== 3) throw new Error(`postcopy exited with ${exited.body?.exitCode}, expected its watchdog's 3; adapter sent: ${observed.summary()}`);
  await observed.waitFor("a 'terminated' event", isEvent('terminated'), 10_000);
  const output = observed.messages.filter(isEvent('output')).map((x) => x.body?.output ?? '').join('');
  if (!output.includes(`stuck fault: page ${page}`)) throw new Error(`the summary does not name the stuck fault ${page}: ${output.slice(-2000)}`);
  const pageNo = Number(/watchdog: fault unresolved on page (\d+)/.exec(output)?.[1]);
  log(`observe session ended: exit 3, stuck page ${page} (the demo's page ${pageNo})`);
  fs.writeFileSync(path.join(process.env.E2E_DIR, 'observe.json'), JSON.stringify({
    page, waitedMs: Number(m[2]), threadId: stopped.body.threadId, worker: { line: worker.line, path: worker.source.path },
    condition: option.condition, exitCode: exited.body.exitCode, demoPage: pageNo,
  }));
}

module.exports = { run };
