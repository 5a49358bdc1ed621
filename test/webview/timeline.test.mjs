// The timeline webview in Debian's chromium: the real bundle and panel HTML under the panel's
// CSP, fed recorded-style event batches through window.postMessage like VS Code does.
/* global window, document, getComputedStyle, Event */
import { after, before, describe, it } from 'node:test';
import * as assert from 'node:assert/strict';
import * as path from 'node:path';
import {
  artifacts, encoderScript, ensureArtifacts, eventMessages, genObserveSession, genSession, launchBrowser, markPixels, nodeSide,
  openPanel, rampColour, redPixelsAround, startServer, themeRgb,
} from './harness.mjs';

const session = genSession(3000, 7);
const faults = session.filter((e) => e.event === 'fault');
const resolvedSeqs = new Set(session.filter((e) => e.event === 'resolved').map((e) => e.seq));
const pendingHeld = faults.filter((f) => f.held && !resolvedSeqs.has(f.seq));
// Observe mode (the program's own handler): 512 faults, page 200 forgotten by the handler.
const observed = genObserveSession(512, { forget: 200 });
const observedFaults = observed.events.filter((e) => e.event === 'fault');
// Four faults far apart in a 16-page region, one of each kind and a held one: marks to probe pixel by pixel.
const probeFaults = [['missing', 3000], ['wp', 2e5], ['minor', 5e6], ['missing', null]].map(([kind, latencyNs], k) => {
  const page = 0x7f0000000000 + (2 + 4 * k) * 4096;
  const f = { event: 'fault', seq: k + 1, t: 1e12 + k * 1e6, addr: `0x${(page + 8).toString(16)}`, page: `0x${page.toString(16)}`,
    access: kind === 'wp' ? 'write' : 'read', kind, tid: 77, held: latencyNs === null };
  return latencyNs === null ? f : { ...f, ioctl: kind === 'wp' ? 'UFFDIO_WRITEPROTECT' : 'UFFDIO_ZEROPAGE', latencyNs };
});
const probeSession = [{ event: 'region', action: 'add',
  region: { start: '0x7f0000000000', end: '0x7f0000010000', via: 'mmap', name: 'probe' } }, ...probeFaults];

let server;
let browser;

before(async () => {
  ensureArtifacts();
  server = await startServer();
  browser = await launchBrowser();
}, { timeout: 120000 });

after(async () => {
  await browser?.close();
  await server?.close();
});

async function feed(p, events, size = 700) {
  for (const m of eventMessages(events, size)) await p.send(m);
  await settle(p);
}

/** Waits until the panel has drawn every change it has received (live draws are throttled). */
async function settle(p) {
  await p.page.waitForFunction(() => {
    const s = window.__timeline.stats();
    return s.drawnVersion === s.version;
  }, null, { timeout: 10000 });
  await p.frame();
}

async function clean(p) {
  assert.deepEqual(await p.cspViolations(), [], 'CSP violations');
  assert.deepEqual(p.problems, [], 'console errors');
  // Every message the panel posted passes the validator the extension uses.
  for (const m of await p.posted()) assert.equal(nodeSide.fromPanelProblem(m), null, JSON.stringify(m).slice(0, 200));
}

/** Saturated (latency-coloured) pixels of the main chart per band, read back from the canvas. */
async function saturatedPerBand(p) {
  return p.page.evaluate(() => {
    const s = window.__timeline.stats();
    const cv = document.getElementById('chart');
    const ctx = cv.getContext('2d');
    const dpr = cv.width / cv.getBoundingClientRect().width;
    const a = s.chartArea;
    // Fork/remap/remove/unmap lines cross every band: leave their colour out.
    const probe = document.createElement('canvas').getContext('2d');
    probe.fillStyle = getComputedStyle(document.documentElement).getPropertyValue('--vscode-charts-orange').trim();
    probe.fillRect(0, 0, 1, 1);
    const nc = probe.getImageData(0, 0, 1, 1).data;
    const out = [];
    const nb = s.lanes.length;
    for (let b = 0; b < nb; b++) {
      const yTop = a.top + ((b - s.view.y0) / (s.view.y1 - s.view.y0)) * (a.bottom - a.top);
      const yBot = a.top + ((b + 1 - s.view.y0) / (s.view.y1 - s.view.y0)) * (a.bottom - a.top);
      const y0 = Math.max(a.top, yTop) + 8; // marks near a band edge overlap it by up to 7 px
      const y1 = Math.min(a.bottom, yBot) - 8;
      if (y1 <= y0) { out.push(0); continue; }
      const img = ctx.getImageData(Math.round(a.left * dpr), Math.round(y0 * dpr),
        Math.round((a.right - a.left) * dpr), Math.round((y1 - y0) * dpr)).data;
      let n = 0;
      for (let k = 0; k < img.length; k += 4) {
        const mx = Math.max(img[k], img[k + 1], img[k + 2]);
        const mn = Math.min(img[k], img[k + 1], img[k + 2]);
        const dnc = Math.abs(img[k] - nc[0]) + Math.abs(img[k + 1] - nc[1]) + Math.abs(img[k + 2] - nc[2]);
        if (img[k + 3] > 200 && mx - mn > 60 && dnc > 40) n++;
      }
      out.push(n);
    }
    return out;
  });
}

describe('timeline messages (shared with the extension)', () => {
  it('accepts the protocol and rejects malformed messages with a reason', () => {
    const { toPanelProblem, fromPanelProblem, eventProblem } = nodeSide;
    for (const e of session) assert.equal(eventProblem(e), null, JSON.stringify(e));
    const [batch] = nodeSide.encodeTimeline(session.slice(0, 10));
    assert.equal(toPanelProblem({ type: 'events', batch }), null);
    // A batch is checked column by column: any bad column or fault drops it, with the reason.
    const bad = (change) => toPanelProblem({ type: 'events', batch: { ...batch, ...change } });
    assert.match(bad({ v: 2 }), /version 2.*reload/);
    assert.match(bad({ page: batch.page.slice(1) }), /page is not an array of \d+ numbers/);
    assert.match(bad({ page: batch.page.map((x, k) => (k === 2 ? -1e15 : x)) }), /fault 2 .*page -1000000000000000/);
    assert.match(bad({ t: batch.t.map((x, k) => (k === 3 ? String(x) : x)) }), /fault 3 has a field out of range/);
    assert.match(bad({ flags: batch.flags.map(() => 12) }), /fault 0 .*flags 12/);
    assert.match(bad({ ioctl: batch.ioctl.map(() => batch.ioctls.length) }), /fault 0 .*ioctl/);
    assert.match(bad({ off: batch.off.map(() => 2 ** 33) }), /fault 0 .*off/);
    assert.match(bad({ lat: batch.lat.map(() => null) }), /fault 0 .*lat null/);
    assert.match(bad({ ioctls: ['UFFDIO_COPY'] }), /ioctls/);
    assert.match(bad({ otherAt: [batch.seq.length + 1] }), /other/);
    assert.match(toPanelProblem({ type: 'events', batch: session.slice(0, 10) }), /list of events, not a batch of columns/);
    assert.equal(toPanelProblem({ type: 'reset' }), null);
    assert.equal(toPanelProblem({ type: 'visibility', visible: false }), null);
    assert.match(toPanelProblem({ type: 'visibility', visible: 'no' }), /visibility/);
    assert.equal(toPanelProblem({ type: 'import', format: 'csv', text: '' }), null);
    assert.match(toPanelProblem({ type: 'import', format: 'pdf', text: '' }), /format/);
    assert.match(toPanelProblem({ type: 'nope' }), /unknown type/);
    assert.match(toPanelProblem(null), /not an object/);
    assert.equal(fromPanelProblem({ type: 'selectThread', tid: 1, seq: 2 }), null);
    assert.match(fromPanelProblem({ type: 'reveal', seq: 2 }), /tid/);
    assert.match(fromPanelProblem({ type: 'export', format: 'trace' }), /text/);
    assert.match(eventProblem({ ...faults[0], addr: '0xZZ' }), /hex/);
    assert.match(eventProblem({ ...faults[0], kind: 'major' }), /kind/);
    assert.equal(eventProblem({ event: 'nc', what: 'fork' }), null);
    const stuck = observed.events.find((e) => e.event === 'stuck');
    assert.equal(eventProblem(stuck), null, 'a stuck event (observe mode) is a timeline event');
    assert.match(eventProblem({ ...stuck, waitedNs: -1 }), /stuck needs/);
    assert.match(eventProblem({ ...stuck, page: 'page 7' }), /stuck needs .*hex page/);
    assert.match(eventProblem({ ...stuck, seq: undefined }), /stuck needs/);
    assert.match(eventProblem({ event: 'nc', what: 'exec' }), /what/);
    const html = nodeSide.panelHtml({ cspSource: 'vscode-resource:', nonce: 'abc', scriptUri: 's.js', styleUri: 's.css' });
    assert.match(html, /default-src 'none'; img-src vscode-resource: data:; style-src vscode-resource:; script-src 'nonce-abc'; font-src vscode-resource:/);
    assert.doesNotMatch(html, /style=/, 'no inline styles');
    assert.equal((html.match(/<script/g) ?? []).length, 1);
  });
});

describe('timeline batches (adapter → panel)', () => {
  it('store the same faults, resolutions, regions and nc events as the events themselves', () => {
    const { FaultStore, encodeTimeline, toPanelProblem } = nodeSide;
    const direct = new FaultStore();
    direct.append(session);
    for (const per of [1, 97, 5000]) {
      const viaBatches = new FaultStore();
      for (const batch of encodeTimeline(session, per)) {
        assert.equal(toPanelProblem({ type: 'events', batch }), null);
        const r = viaBatches.ingestBatch(batch);
        assert.equal(r.dropped, 0, r.firstProblem);
      }
      assert.equal(viaBatches.n, faults.length);
      for (let i = 0; i < direct.n; i++) {
        assert.deepEqual(viaBatches.faultEvent(i), direct.faultEvent(i), `fault ${i}, ${per} per batch`);
        assert.deepEqual(viaBatches.resolvedEvent(i), direct.resolvedEvent(i), `resolution of fault ${i}`);
      }
      assert.deepEqual(viaBatches.regionEvents(), direct.regionEvents());
      assert.deepEqual(viaBatches.nc.map((m) => m.ev), direct.nc.map((m) => m.ev));
      assert.deepEqual(viaBatches.pageStateCounts(), direct.pageStateCounts());
      assert.deepEqual([...viaBatches.hist], [...direct.hist]);
      assert.deepEqual(viaBatches.blocked, direct.blocked);
      assert.deepEqual(viaBatches.pending, direct.pending);
    }
    // Each fault as the helper sent it: fields the batch does not carry (pageSize) aside.
    const store = new FaultStore();
    for (const batch of encodeTimeline(session)) store.ingestBatch(batch);
    const sent = faults.map(({ pageSize: _p, ...f }) => f);
    const back = Array.from({ length: store.n }, (_, i) => store.faultEvent(i)).sort((x, y) => x.seq - y.seq);
    assert.deepEqual(back.map((f) => ({ ...f, ioctl: f.held ? undefined : f.ioctl })),
      sent.map((f) => ({ ...f, ioctl: f.held ? undefined : f.ioctl })).sort((x, y) => x.seq - y.seq));
  });
});

describe('timeline batches of an observe session (the program\'s own handler)', () => {
  it('store the handler\'s resolutions as latencies and the stuck fault, and export/import them losslessly', () => {
    const { FaultStore, encodeTimeline, toPanelProblem } = nodeSide;
    const st = new FaultStore();
    for (const batch of encodeTimeline(observed.events, 100)) {
      assert.equal(toPanelProblem({ type: 'events', batch }), null);
      const r = st.ingestBatch(batch);
      assert.equal(r.dropped, 0, `nothing dropped: ${r.firstProblem}`);
    }
    assert.equal(st.n, 512);
    const k = st.indexOfSeq(observed.stuckFault.seq);
    assert.deepEqual([...st.stuck.keys()], [observed.stuckFault.seq], 'the stuck fault is kept, by seq');
    assert.equal(st.stuckOf(k).resolved, false);
    assert.equal(st.stuckOpen, 1);
    assert.ok(Number.isNaN(st.lat[k]) && Number.isNaN(st.resolvedT(k)), 'the stuck fault has no resolution');
    // Every other fault: the handler's UFFDIO_COPY, with its latency and the time it came.
    let resolved = 0;
    for (let i = 0; i < st.n; i++) {
      if (i === k) continue;
      assert.equal(st.ioctlNames[st.ioctl[i]], 'UFFDIO_COPY');
      assert.ok(st.lat[i] > 0 && st.resolvedT(i) === st.t[i] + st.lat[i], `fault ${i} resolved with its latency`);
      assert.equal(st.stuckOf(i), undefined);
      resolved++;
    }
    assert.equal([...st.hist].reduce((a, b) => a + b, 0), resolved, 'latency histogram of the handler\'s resolutions');
    assert.deepEqual({ pending: st.pageStateCounts().pending, copied: st.pageStateCounts().copied }, { pending: 1, copied: 511 },
      'the forgotten page waits, every other page was copied in');
    // A resolution arriving later ends the stuck state (the fault stays named).
    const late = new FaultStore();
    late.append([...observed.events, { event: 'resolved', seq: observed.stuckFault.seq, t: observed.stuckFault.t + 9e8,
      page: observed.stuckFault.page, ioctl: 'UFFDIO_COPY', latencyNs: 9e8 }]);
    assert.equal(late.stuckOf(late.indexOfSeq(observed.stuckFault.seq)).resolved, true);
    assert.equal(late.stuckOpen, 0);
    // Exports keep the stuck fault and the resolutions.
    const { exportCsv, exportTrace, importCsv, importTrace } = nodeSide;
    for (const [name, text, read] of [['csv', exportCsv(st), importCsv], ['trace', exportTrace(st), importTrace]]) {
      const back = new FaultStore();
      back.append(read(text).events);
      assert.deepEqual([...back.stuck.values()], [...st.stuck.values()], `${name}: the stuck fault comes back`);
      for (let i = 0; i < st.n; i++) {
        assert.deepEqual(back.faultEvent(i), st.faultEvent(i), `${name}: fault ${i}`);
        assert.deepEqual(back.resolvedEvent(i), st.resolvedEvent(i), `${name}: resolution of fault ${i}`);
      }
      assert.equal(name === 'csv' ? exportCsv(back) : exportTrace(back), text, `${name}: export → import → export is identical`);
    }
  });
});

describe('timeline webview', { timeout: 180000 }, () => {
  it('draws lanes per region, marks per kind, page map, histogram and blocked time from live batches', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    assert.deepEqual((await p.posted())[0], { type: 'ready' });
    await feed(p, session);
    const s = await p.stats();
    assert.equal(s.events, faults.length);
    assert.deepEqual(s.lanes.map((l) => l.name), ['[heap]', 'unused arena', 'anon mmap 16 MiB', '[stack]']);
    const byKind = (k) => faults.filter((f) => f.kind === k).length;
    assert.equal(s.drawn.visible, faults.length, 'fitted view shows every fault');
    assert.deepEqual([s.drawn.missing, s.drawn.wp, s.drawn.minor], [byKind('missing'), byKind('wp'), byKind('minor')]);
    assert.equal(s.drawn.mode, 'shapes');
    assert.equal(s.drawn.nc, 2, 'fork and remove are drawn');
    assert.equal(s.drawn.resolutions, resolvedSeqs.size);
    assert.equal(s.drawn.held, pendingHeld.length);
    assert.equal(s.pending, pendingHeld.length);
    for (const st of ['untouched', 'pending', 'zero', 'copied', 'written', 'evicted']) {
      assert.ok(s.pageStates[st] > 0, `page map has ${st} pages: ${JSON.stringify(s.pageStates)}`);
    }
    const total = Object.values(s.pageStates).reduce((a, b) => a + b, 0);
    assert.equal(total, 1024 + 256 + 4096 + 33, 'one cell per page of every region');
    const withLatency = faults.length - pendingHeld.length;
    assert.equal(s.histogram.reduce((a, b) => a + b, 0), withLatency, 'histogram counts every resolved fault');
    assert.deepEqual(Object.keys(s.blocked).sort(), ['4242', '4243', '4244', '4245']);
    // Pixels: marks in the three bands with faults, none in the unused region's band.
    const px = await saturatedPerBand(p);
    assert.ok(px[0] > 500 && px[2] > 500 && px[3] > 500, `marks drawn in the fault bands: ${px}`);
    assert.equal(px[1], 0, `nothing drawn in the band of a region without faults: ${px}`);
    const rates = await p.page.textContent('#rates');
    assert.match(rates, /missing [\d,]+ · wp [\d,]+ · minor [\d,]+/);
    assert.match(rates, new RegExp(`pending ${pendingHeld.length}`));
    await p.page.screenshot({ path: path.join(artifacts, 'webview-dark.png') });
    await clean(p);
    await p.page.close();
  });

  it('zooms with the wheel, pans by dragging and shows the window in the overview', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await feed(p, session);
    const before = await p.stats();
    const a = before.chartArea;
    const box = await p.page.locator('#chart').boundingBox();
    const cx = box.x + (a.left + a.right) / 2;
    const cy = box.y + (a.top + a.bottom) / 2;
    await p.page.mouse.move(cx, cy);
    for (let k = 0; k < 4; k++) await p.page.mouse.wheel(0, -300);
    await settle(p);
    const zoomed = await p.stats();
    const spanBefore = before.view.x1 - before.view.x0;
    const spanZoomed = zoomed.view.x1 - zoomed.view.x0;
    assert.ok(spanZoomed < spanBefore / 3, `x zoomed in: ${spanBefore} → ${spanZoomed}`);
    assert.ok(zoomed.drawn.visible < before.drawn.visible, 'fewer faults in view');
    assert.equal(zoomed.view.mode, 'fixed');
    // Shift+wheel zooms the lanes.
    await p.page.keyboard.down('Shift');
    await p.page.mouse.wheel(0, -300);
    await p.page.keyboard.up('Shift');
    await settle(p);
    const yz = await p.stats();
    assert.ok(yz.view.y1 - yz.view.y0 < 4, 'y zoomed in');
    // Drag right by 200 px: the window moves back in time by 200 px worth.
    await p.page.mouse.move(cx, cy);
    await p.page.mouse.down();
    await p.page.mouse.move(cx + 100, cy, { steps: 4 });
    await p.page.mouse.move(cx + 200, cy, { steps: 4 });
    await p.page.mouse.up();
    await settle(p);
    const panned = await p.stats();
    const expect = (200 / (a.right - a.left)) * spanZoomed;
    assert.ok(Math.abs((yz.view.x0 - panned.view.x0) - expect) < expect * 0.05, 'panned by the drag distance');
    await p.page.screenshot({ path: path.join(artifacts, 'webview-zoomed.png') });
    // Double-click fits the whole session again.
    await p.page.mouse.dblclick(cx, cy);
    await settle(p);
    assert.equal((await p.stats()).drawn.visible, faults.length);
    await clean(p);
    await p.page.close();
  });

  it('selects by click (held fault → selectThread), moves with arrows, reveals with Enter, Step/Continue', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await feed(p, session);
    // Zoom into the held fault so no other mark overlaps it.
    const target = pendingHeld[0];
    const pos = await p.page.evaluate((seq) => window.__timeline.pixelOf(seq), target.seq);
    await p.page.mouse.move(pos.x, pos.y);
    for (let k = 0; k < 6; k++) await p.page.mouse.wheel(0, -400);
    await settle(p);
    const at = await p.page.evaluate((seq) => window.__timeline.pixelOf(seq), target.seq);
    await p.page.mouse.click(at.x, at.y);
    await settle(p);
    let s = await p.stats();
    assert.equal(s.selected, target.seq, 'the clicked fault is selected');
    assert.deepEqual((await p.posted()).at(-1), { type: 'selectThread', tid: target.tid, seq: target.seq });
    const details = await p.page.textContent('#details');
    for (const want of [target.addr, target.page, `tid ${target.tid}`, '[heap]|anon mmap 16 MiB|\\[stack\\]',
      target.kind, target.access, 'pending']) {
      assert.match(details, new RegExp(want.startsWith('0x') ? want : want), `details show ${want}`);
    }
    // Right arrow: the next fault in time order.
    const order = [...faults].sort((a, b) => a.t - b.t);
    const k = order.findIndex((f) => f.seq === target.seq);
    await p.page.keyboard.press('ArrowRight');
    await settle(p);
    s = await p.stats();
    assert.equal(s.selected, order[k + 1].seq);
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('ArrowLeft');
    await settle(p);
    assert.equal((await p.stats()).selected, order[k + 1].seq);
    await p.page.keyboard.press('Enter');
    assert.deepEqual((await p.posted()).at(-1), { type: 'reveal', seq: order[k + 1].seq, tid: order[k + 1].tid });
    await p.page.screenshot({ path: path.join(artifacts, 'webview-selected.png') });
    await p.page.click('#btn-step');
    assert.deepEqual((await p.posted()).at(-1), { type: 'step' });
    await p.page.click('#btn-continue');
    assert.deepEqual((await p.posted()).at(-1), { type: 'continue' });
    await clean(p);
    await p.page.close();
  });

  it('exports Chrome trace and CSV and imports either back losslessly', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await feed(p, session);
    const before = await p.stats();
    await p.page.click('#btn-export-trace');
    await p.page.click('#btn-export-csv');
    const posted = await p.posted();
    const trace = posted.find((m) => m.type === 'export' && m.format === 'trace').text;
    const csv = posted.find((m) => m.type === 'export' && m.format === 'csv').text;
    const doc = JSON.parse(trace);
    const xs = doc.traceEvents.filter((e) => e.ph === 'X');
    assert.equal(xs.length, faults.length, 'one complete event per fault');
    const f0 = faults[0];
    const x0 = xs.find((e) => e.args.seq === f0.seq);
    assert.equal(x0.ts, f0.t / 1000);
    assert.equal(x0.dur, f0.latencyNs / 1000);
    assert.equal(x0.tid, f0.tid);
    assert.equal(x0.args.addr, f0.addr);
    assert.equal(x0.args.kind, f0.kind);
    assert.equal(x0.args.ioctl, f0.ioctl);
    assert.equal(csv.split('\n').filter((l) => l.startsWith('fault,')).length, faults.length);
    assert.equal(xs.filter((e) => e.args.pid === 4300).length, faults.filter((f) => f.pid === 4300).length,
      'a followed child\'s faults keep their pid');
    assert.ok(doc.traceEvents.some((e) => e.cat === 'region' && e.args.action === 'remove'), 'the munmap is kept');
    const exportAfterImport = async (format, text) => {
      await p.send({ type: 'reset' });
      await p.send({ type: 'import', format, text });
      await settle(p);
      return p.page.evaluate(async () => {
        const n = window.__posted.length;
        document.getElementById('btn-export-trace').click();
        document.getElementById('btn-export-csv').click();
        const m = window.__posted.slice(n);
        return { trace: m[0].text, csv: m[1].text };
      });
    };
    for (const [format, text] of [['trace', trace], ['csv', csv]]) {
      const again = await exportAfterImport(format, text);
      assert.equal(again.trace, trace, `${format} import → trace export is identical`);
      assert.equal(again.csv, csv, `${format} import → CSV export is identical`);
      const s = await p.stats();
      for (const key of ['events', 'lanes', 'pageStates', 'histogram', 'blocked', 'kinds', 'pending', 'nc']) {
        assert.deepEqual(s[key], before[key], `${format} import restores ${key}`);
      }
    }
    // The file input path.
    await p.send({ type: 'reset' });
    await p.page.setInputFiles('#file-import', { name: 'session.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
    await p.page.waitForFunction((n) => window.__timeline.stats().events === n, faults.length);
    await clean(p);
    await p.page.close();
  });

  it('drops invalid messages and events with a warning, never throws', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await p.send({ type: 'bogus' });
    await p.send('events');
    await p.send({ type: 'events', batch: 'nope' });
    await p.send({ type: 'import', format: 'xml', text: '' });
    await p.send({ type: 'import', format: 'trace', text: '{not json' });
    // A bad fault drops its batch; bad other events are dropped one by one.
    const [good] = nodeSide.encodeTimeline([session[0], faults[0]]);
    await p.send({ type: 'events', batch: { ...good, tid: ['x'] } });
    await p.send({ type: 'events', batch: { ...good,
      other: [{ event: 'resolved', seq: 'x' }, { event: 'teleport' }, session[0], { event: 'exited', pid: 1 }],
      otherAt: [0, 0, 0, 1] } });
    await settle(p);
    const s = await p.stats();
    assert.equal(s.events, 1, 'the one valid fault is kept');
    assert.equal(s.lanes.length, 1, 'the valid region is kept');
    assert.ok(p.warnings.some((w) => /dropped message: events.batch.tid|dropped message: events.batch fault 0/.test(w)),
      `warned about the bad batch: ${p.warnings}`);
    assert.ok(p.warnings.some((w) => /dropped message/.test(w)), 'warned about dropped messages');
    assert.ok(p.warnings.some((w) => /dropped 2 invalid event/.test(w)), 'warned about dropped events');
    await clean(p);
    await p.page.close();
  });

  it('keeps events, zoom window and selection across hide/show (webview state)', async () => {
    const p = await openPanel(browser.context, server.origin, 'light');
    await feed(p, session);
    await p.page.focus('#chart-box');
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('ArrowRight');
    await p.page.keyboard.press('+');
    await settle(p);
    await p.page.waitForTimeout(400); // state is saved at most every 300 ms
    const s1 = await p.stats();
    await p.page.reload();
    await p.page.waitForFunction(() => window.__timeline !== undefined);
    await settle(p);
    const s2 = await p.stats();
    assert.equal(s2.events, s1.events);
    assert.equal(s2.selected, s1.selected);
    assert.deepEqual(s2.view, s1.view);
    assert.deepEqual(s2.pageStates, s1.pageStates);
    // The extension answers `ready` by re-sending the session: view and selection stay.
    await p.send({ type: 'reset' });
    await feed(p, session);
    const s3 = await p.stats();
    assert.equal(s3.events, s1.events);
    assert.equal(s3.selected, s1.selected);
    assert.deepEqual(s3.view, s1.view);
    await clean(p);
    await p.page.close();
  });

  it('observe mode: the handler\'s resolutions drawn as in the direct mode, the stuck fault ringed in red and named', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await feed(p, observed.events, 100);
    const s = await p.stats();
    const stuckSeq = observed.stuckFault.seq;
    assert.equal(s.events, 512);
    assert.deepEqual(s.lanes.map((l) => [l.name, l.via]), [['userfaultfd 1 (missing)', 'observe']]);
    assert.equal(s.drawn.visible, 512);
    assert.equal(s.drawn.resolutions, 511, 'a resolution line per fault the handler placed');
    assert.equal(s.drawn.stuck, 1, 'the stuck fault is drawn as stuck');
    assert.deepEqual(s.stuck.map((x) => [x.seq, x.page, x.resolved]), [[stuckSeq, observed.stuckFault.page, false]]);
    assert.equal(s.histogram.reduce((a, b) => a + b, 0), 511);
    assert.match(await p.page.textContent('#rates'), /stuck 1/);
    assert.match(await p.page.textContent('#legend'), /stuck/);
    // Pixels: the theme's red around the stuck fault, not around an ordinary one (latencies of
    // 20-250 µs are drawn blue to yellow).
    const redNear = (seq) => redPixelsAround(p.page, seq);
    const ordinary = observedFaults.find((f) => Math.abs(f.seq - stuckSeq) > 60).seq;
    const [onStuck, onOrdinary] = [await redNear(stuckSeq), await redNear(ordinary)];
    assert.ok(onStuck > 40, `a red ring around the stuck fault: ${onStuck} red pixels`);
    assert.equal(onOrdinary, 0, `no red around an ordinary fault: ${onOrdinary}`);
    // 's' selects the stuck fault; its details name it.
    await p.page.focus('#chart-box');
    await p.page.keyboard.press('s');
    await settle(p);
    assert.equal((await p.stats()).selected, stuckSeq);
    let details = await p.page.textContent('#details');
    assert.match(details, /stuck\s*read by the handler, never resolved, waited 312 ms/);
    assert.match(details, /not resolved \(yet\) by the handler/);
    assert.match(details, new RegExp(`tid ${observed.stuckFault.tid}`));
    // A click on the stuck fault selects it too (after selecting another one).
    await p.page.keyboard.press('ArrowRight');
    await settle(p);
    assert.notEqual((await p.stats()).selected, stuckSeq);
    const at = await p.page.evaluate((seq) => window.__timeline.pixelOf(seq), stuckSeq);
    await p.page.mouse.click(at.x, at.y);
    await settle(p);
    assert.equal((await p.stats()).selected, stuckSeq, 'clicked');
    details = await p.page.textContent('#details');
    assert.match(details, /waited 312 ms/);
    await p.page.mouse.move(10, 10);
    await p.page.screenshot({ path: path.join(artifacts, 'webview-stuck.png') });
    // An ordinary observed fault: the handler's ioctl, its latency and when it came.
    await p.page.keyboard.press('ArrowLeft');
    await settle(p);
    details = await p.page.textContent('#details');
    assert.doesNotMatch(details, /stuck/);
    assert.match(details, /UFFDIO_COPY/);
    assert.match(details, /resolved at/);
    assert.match(details, /latency\s*\d+(\.\d+)? µs/);
    // The handler resolves it after all: the ring turns dashed, the details say so.
    await p.send({ type: 'events', batch: nodeSide.encodeTimeline([{ event: 'resolved', seq: stuckSeq,
      t: observed.stuckFault.t + 5e8, page: observed.stuckFault.page, ioctl: 'UFFDIO_COPY', latencyNs: 5e8 }])[0] });
    await settle(p);
    const s2 = await p.stats();
    assert.deepEqual(s2.stuck.map((x) => x.resolved), [true]);
    assert.doesNotMatch(await p.page.textContent('#rates'), /stuck/);
    await p.page.keyboard.press('s');
    await settle(p);
    assert.match(await p.page.textContent('#details'), /stuck\s*read by the handler, waited 312 ms when reported, resolved later/);
    await clean(p);
    await p.page.close();
  });

  it('stores everything while hidden, draws nothing, and draws it all when shown again', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await p.frame();
    await p.send({ type: 'visibility', visible: false });
    const before = await p.stats();
    assert.equal(before.hidden, true);
    for (const m of eventMessages(session, 300)) await p.send(m);
    // A hidden panel schedules nothing: frame() returns at once, with every event stored.
    await p.frame();
    const hidden = await p.stats();
    assert.equal(hidden.events, faults.length, 'every fault reached the store');
    assert.equal(hidden.timings.renders, before.timings.renders, 'no chart frame while hidden');
    assert.equal(hidden.timings.sideRenders, before.timings.sideRenders, 'no side-panel frame while hidden');
    assert.notEqual(hidden.drawnVersion, hidden.version);
    await p.send({ type: 'visibility', visible: true });
    await settle(p);
    const shown = await p.stats();
    assert.equal(shown.hidden, false);
    assert.equal(shown.drawn.visible, faults.length, 'shown: every fault drawn');
    assert.equal(shown.drawn.held, pendingHeld.length);
    const px = await saturatedPerBand(p);
    assert.ok(px[0] > 50 && px[2] > 50 && px[3] > 50, `marks in the bands with faults: ${px}`);
    assert.ok(shown.timings.sideRenders > hidden.timings.sideRenders, 'side panels drawn on show');
    await clean(p);
    await p.page.close();
  });

  it('redraws a few times per second at most while faults stream in', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await p.frame();
    const big = genSession(40000, 11);
    const msgs = eventMessages(big, 1000);
    const before = await p.stats();
    const t0 = Date.now();
    // As the adapter sends them, only faster: a batch every 50 ms.
    for (const m of msgs) {
      await p.send(m);
      await new Promise((r) => setTimeout(r, 50));
    }
    const secs = (Date.now() - t0) / 1000;
    const s = await p.stats();
    assert.equal(s.events, 40000);
    const renders = s.timings.renders - before.timings.renders;
    const side = s.timings.sideRenders - before.timings.sideRenders;
    assert.ok(renders >= 2, `the view follows the data: ${renders} redraws in ${secs.toFixed(1)} s`);
    assert.ok(renders <= secs * 2 + 2, `at most 2 chart redraws a second: ${renders} in ${secs.toFixed(1)} s`);
    // Side panels follow every redraw while the session is small (< 5,000 faults), then once a second.
    assert.ok(side <= 5 + secs + 2, `side panels at most once a second: ${side} in ${secs.toFixed(1)} s`);
    await settle(p);
    assert.equal((await p.stats()).drawn.visible, 40000);
    await clean(p);
    await p.page.close();
  });

  it('draws each mark in the colour of its latency at its size, again after theme and device pixel ratio changes', async () => {
    const p = await openPanel(browser.context, server.origin, 'dark');
    await feed(p, probeSession);
    const s = await p.stats();
    assert.equal(s.drawn.mode, 'shapes');
    assert.deepEqual([s.drawn.visible, s.drawn.held], [4, 1]);
    // Device pixels a mark covers (CSS px² × dpr²): circle r 3.5, 6 px square, triangle 8 wide
    // 7 high; the held fault's ring (r 6, 1.5 wide) on top of its circle. How far from the centre
    // each reaches (CSS px): the circle's radius, the square's and triangle's corners, the ring's edge.
    const area = { missing: Math.PI * 3.5 ** 2, wp: 36, minor: 28 };
    const ring = 2 * Math.PI * 6 * 1.5;
    const reach = { missing: 3.5, wp: 3 * Math.SQRT2, minor: 5, held: 6.75 };
    const near = (px, want, tol) => px.slice(0, 3).every((c, j) => Math.abs(c - want[j]) <= tol);
    const check = async (label, dpr) => {
      for (const f of probeFaults) {
        const what = `${label}: seq ${f.seq} (${f.kind}${f.held ? ', held' : ''})`;
        const want = f.held ? await themeRgb(p.page, '--vscode-charts-purple') : await rampColour(p.page, f.latencyNs);
        const m = await markPixels(p.page, f.seq);
        assert.equal(m.dpr, dpr, `${what}: canvas at ${dpr} device px per CSS px`);
        // The pixel holding the centre is inside every mark; its neighbours inside a circle or square.
        const centre = f.kind === 'minor' ? [[0, 0]] : [[0, 0], [-1, 0], [1, 0], [0, -1], [0, 1]];
        for (const [dx, dy] of centre) {
          const px = m.px(dx, dy);
          assert.ok(px[3] === 255 && near(px, want, 3), `${what}: ${px} at the centre ${dx},${dy}, want ${want}`);
        }
        let inMark = 0;
        let outside = 0;
        for (let dy = -m.half; dy <= m.half; dy++) {
          for (let dx = -m.half; dx <= m.half; dx++) {
            const px = m.px(dx, dy);
            if (px[3] > 200 && near(px, want, 40)) inMark++;
            // Beyond the mark (and the held fault's ring) only the lane's grey shading and grid lines;
            // 1.5 px to spare for antialiasing and for where in the probed pixel the centre lies.
            const r = Math.hypot(dx, dy) / dpr;
            const saturated = px[3] > 100 && Math.max(...px.slice(0, 3)) - Math.min(...px.slice(0, 3)) > 40;
            if (r > reach[f.held ? 'held' : f.kind] + 1.5 && saturated) outside++;
          }
        }
        const expect = (area[f.kind] + (f.held ? ring : 0)) * dpr * dpr;
        assert.ok(inMark > expect * 0.65 && inMark < expect * 1.3, `${what}: ${inMark} px of its colour, want about ${expect.toFixed(0)}`);
        assert.equal(outside, 0, `${what}: ${outside} coloured px beyond the mark`);
        if (f.held) assert.ok(near(m.px(Math.round(6 * dpr), 0), want, 3), `${what}: ring at 6 px: ${m.px(Math.round(6 * dpr), 0)}`);
      }
    };
    await check('dark', 1);
    // New theme colours (VS Code sends {type:'theme'}): the marks are drawn in them.
    await p.page.evaluate(() => {
      const set = (name, v) => document.documentElement.style.setProperty(`--vscode-charts-${name}`, v);
      set('blue', '#ff00ff'); set('green', '#00ffff'); set('yellow', '#ffff00'); set('orange', '#ff8000'); set('red', '#ff0000');
      set('purple', '#00ff00');
    });
    await p.send({ type: 'theme' });
    await settle(p);
    await check('new theme', 1);
    // The window moves to a screen with 2 device pixels per CSS pixel: marks drawn for it, same size in CSS px.
    const cdp = await p.page.context().newCDPSession(p.page);
    await cdp.send('Emulation.setDeviceMetricsOverride', { width: 1400, height: 900, deviceScaleFactor: 2, mobile: false });
    await p.page.evaluate(() => window.dispatchEvent(new Event('resize'))); // as a browser does when the ratio changes
    await p.page.waitForFunction(() => {
      const cv = document.getElementById('chart');
      return cv.width === 2 * cv.getBoundingClientRect().width;
    }, null, { timeout: 10000 });
    await settle(p);
    await check('2 device px per CSS px', 2);
    await cdp.send('Emulation.clearDeviceMetricsOverride');
    await cdp.detach();
    await clean(p);
    await p.page.close();
  });

  it('is readable in light and high-contrast themes and with many faults (image mode)', async () => {
    for (const theme of ['light', 'hc']) {
      const p = await openPanel(browser.context, server.origin, theme);
      await feed(p, session);
      const px = await saturatedPerBand(p);
      assert.ok(px[0] > 500, `${theme}: marks drawn: ${px}`);
      await p.page.screenshot({ path: path.join(artifacts, `webview-${theme}.png`) });
      await clean(p);
      await p.page.close();
    }
    // A theme change (VS Code sends {type:'theme'}) re-reads the colours.
    const t = await openPanel(browser.context, server.origin, 'dark');
    await feed(t, session);
    const reds = () => t.page.evaluate(() => {
      const cv = document.getElementById('chart');
      const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      let n = 0;
      for (let k = 0; k < d.length; k += 4) if (d[k] > 200 && d[k + 1] < 40 && d[k + 2] < 40 && d[k + 3] > 200) n++;
      return n;
    });
    const before = await reds();
    await t.page.evaluate(() => {
      for (const c of ['blue', 'green', 'yellow', 'orange', 'red']) {
        document.documentElement.style.setProperty(`--vscode-charts-${c}`, '#ff0000');
      }
    });
    await t.send({ type: 'theme' });
    await settle(t);
    const afterTheme = await reds();
    assert.ok(afterTheme > before + 1000, `marks repainted in the new colours: ${before} → ${afterTheme}`);
    await clean(t);
    await t.page.close();

    // 100,000 faults, generated in the page (sending them over the devtools protocol is slow).
    const p = await openPanel(browser.context, server.origin, 'dark');
    await p.page.evaluate(encoderScript);
    await p.page.evaluate(`{ const ev = (${genSession.toString()})(100000, 3);
      for (const batch of window.__uffdEncode.encodeTimeline(ev, 20000)) window.postMessage({ type: 'events', batch }, '*'); }`);
    await p.page.waitForFunction(() => window.__timeline.stats().events === 100000, null, { timeout: 30000 });
    await settle(p);
    const s = await p.stats();
    assert.equal(s.drawn.mode, 'image');
    assert.equal(s.drawn.visible, 100000);
    const px = await saturatedPerBand(p);
    assert.ok(px[0] > 2000 && px[2] > 2000 && px[1] === 0, `image mode draws in the right bands: ${px}`);
    await p.page.screenshot({ path: path.join(artifacts, 'webview-100k.png') });
    await clean(p);
    await p.page.close();
  });
});
