// The CLI's self-contained HTML report, opened from disk in Debian's chromium: the same panel,
// fed from the file itself, under its own CSP, with nothing loaded from anywhere else.
/* global window */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { artifacts, ensureArtifacts, launchBrowser, root } from './harness.mjs';

describe('uffd-debug run --report', { timeout: 180_000 }, () => {
  let browser;
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-report-'));
  before(async () => {
    ensureArtifacts();
    browser = await launchBrowser();
  });
  after(async () => {
    await browser?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('writes one HTML file that shows every fault of the run', async () => {
    const report = path.join(dir, 'report.html');
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'cli.js'), 'run', '--quiet', '--report', report, '--',
      path.join(root, 'demo', 'bin', 'touch'), '--pages', '500', '--threads', '2', '--pattern', 'random'],
    { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    const faults = Number(/^faults: (\d+)/m.exec(r.stderr)[1]);
    assert.match(r.stderr, new RegExp(`timeline report \\(\\d+ events\\) written to ${report}`));
    const html = readFileSync(report, 'utf8');
    assert.match(html, /<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'nonce-[^']+'; script-src 'nonce-[^']+'">/);
    assert.doesNotMatch(html, /<(script|link)[^>]+(src|href)=/i, 'nothing is loaded from outside the file');

    const page = await browser.context.newPage();
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(e.message));
    await page.goto(`file://${report}`);
    await page.waitForFunction((n) => window.__timeline?.stats().events === n, faults, { timeout: 30_000 });
    const s = await page.evaluate(() => window.__timeline.stats());
    const demoLane = s.lanes.find((l) => l.pages === 500);
    assert.ok(demoLane, `a lane for the demo's 500-page region: ${JSON.stringify(s.lanes.map((l) => l.pages))}`);
    assert.equal(demoLane.faults, 500);
    assert.equal(s.pending, 0, 'nothing was held');
    assert.equal(Object.values(s.blocked).length, 3, 'blocked time for the main thread and both workers');
    await page.evaluate(() => window.__timeline.frame());
    await page.screenshot({ path: path.join(artifacts, 'report.png') });
    assert.deepEqual(problems, [], 'no console errors or CSP violations');
    await page.close();
  });
});
