// Timeline webview bench: one run in Debian's chromium (software rendering), printing
//   - first draw of 1,000,000 faults (delivery of the batches until the frame is painted; median of
//     3 fresh panels),
//   - zoom and pan step frame times at that size (median of several),
//   - live append cost per 5,000-event batch at 100k and 1M faults,
//   - a shapes-mode frame (pan step) with about 5k, 15k and 20k faults in view, next to the drawing
//     the panel did before marks were stamped from sprites (a Path2D per kind and colour step, filled
//     once each), replayed in the bench page on the same canvas for the same marks,
// and the same figures for a naive chart.js scatter of 100,000 points (pointRadius 0, animation
// off) in the same browser, with the ratios. Targets: 1M first draw < 1 s, zoom/pan < 50 ms.
// Run: node bench/timeline.bench.mjs [--faults N] [--shapes: only the 100k panel and its shapes-mode frames]
/* global window, document, performance, requestAnimationFrame, MessageEvent, MessageChannel, WheelEvent, PointerEvent, Path2D */
import * as esbuild from 'esbuild';
import { loadavg } from 'node:os';

import { encoderScript, genSession, launchBrowser, openPanel, root, startServer } from '../test/webview/harness.mjs';

const argN = process.argv.indexOf('--faults');
const N = argN > 0 ? Number(process.argv[argN + 1]) : 1_000_000;
const shapesOnly = process.argv.includes('--shapes');
const BATCH = 5000;
const REPS = 7;
const FIRST_REPS = 3;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${x.toFixed(1)} ms`;

const load = () => loadavg().map((x) => x.toFixed(2)).join(' ');
console.log(`load average at start: ${load()} (2 cores; other work on the machine skews absolute times, ratios less)`);
const server = await startServer();
const browser = await launchBrowser();
const results = {};

/**
 * Shapes mode: zooms the panel (100,000 faults in `page`, the generated events in window.__events)
 * until about 5k, 15k and 20k faults are in view, then times pan steps there (pointermove → painted,
 * median of SHAPE_REPS), and the same marks drawn as the panel drew them before sprites: one Path2D
 * per (kind, colour step) with an arc, rect or triangle per fault, held rings and resolution lines,
 * on the chart's canvas in a frame of its own (without the axes, so the baseline is if anything
 * cheaper than the panel's frame was).
 */
async function shapesFrames(page) {
  const SHAPE_REPS = 9;
  const out = [];
  await page.evaluate(() => {
    const painted = () => window.__timeline.frame();
    const box = () => document.getElementById('chart-box');
    window.__shapes = {
      async wheelAtCentre(deltaY) {
        const r = box().getBoundingClientRect();
        const a = window.__timeline.stats().chartArea;
        box().dispatchEvent(new WheelEvent('wheel', { deltaY, clientX: r.left + (a.left + a.right) / 2,
          clientY: r.top + (a.top + a.bottom) / 2, bubbles: true, cancelable: true }));
        await painted();
        return window.__timeline.stats().drawn;
      },
      async pan(dx) {
        const r = box().getBoundingClientRect();
        const a = window.__timeline.stats().chartArea;
        const x = r.left + (a.left + a.right) / 2;
        const y = r.top + (a.top + a.bottom) / 2;
        const ev = (type, cx) => new PointerEvent(type, { clientX: cx, clientY: y, button: 0, pointerId: 1,
          bubbles: true, isPrimary: true });
        box().dispatchEvent(ev('pointerdown', x));
        const t0 = performance.now();
        box().dispatchEvent(ev('pointermove', x + dx));
        await painted();
        const total = performance.now() - t0;
        box().dispatchEvent(ev('pointerup', x + dx));
        await painted();
        const s = window.__timeline.stats();
        return { total, cost: s.timings.frameMs, faults: s.timings.binMs, visible: s.drawn.visible, mode: s.drawn.mode };
      },
      /** The marks in view as the old drawing needs them, from the generated events and pixelOf(). */
      marks() {
        const s = window.__timeline.stats();
        const a = s.chartArea;
        const cv = document.getElementById('chart');
        const b = cv.getBoundingClientRect();
        const resolvedAt = new Map();
        for (const e of window.__events) if (e.event === 'resolved') resolvedAt.set(e.seq, e);
        const sx = (a.right - a.left) / (s.view.x1 - s.view.x0);
        const kinds = { missing: 0, wp: 1, minor: 2 };
        const marks = [];
        for (const e of window.__events) {
          if (e.event !== 'fault' || e.t < s.view.x0 || e.t > s.view.x1) continue;
          const p = window.__timeline.pixelOf(e.seq);
          const x = p.x - b.left;
          const y = p.y - b.top;
          if (!(y >= a.top && y <= a.bottom)) continue;
          const r = resolvedAt.get(e.seq);
          const lat = e.held ? (r ? r.latencyNs : NaN) : e.latencyNs;
          marks.push({ x, y, k: kinds[e.kind], lat, held: e.held && !r,
            xr: e.held && r ? a.left + (r.t - s.view.x0) * sx : NaN });
        }
        return marks;
      },
      /**
       * One frame of the old drawing of `marks` on the chart's canvas: ms until painted, and its cost
       * measured as the panel measures its own (frame start to the first task after it).
       */
      async oldFrame(marks) {
        const cv = document.getElementById('chart');
        const ctx = cv.getContext('2d');
        const a = window.__timeline.stats().chartArea;
        const latencyIndex = (ns) => Math.max(0, Math.min(255, Math.round((Math.log10(Math.max(ns, 1)) - 3) / 4 * 255)));
        const t0 = performance.now();
        let cost = 0;
        const ch = new MessageChannel();
        await new Promise((done) => requestAnimationFrame(() => {
          const f0 = performance.now();
          ch.port1.onmessage = () => { cost = performance.now() - f0; };
          ctx.save();
          ctx.beginPath();
          ctx.rect(a.left, a.top, a.right - a.left, a.bottom - a.top);
          ctx.clip();
          ctx.clearRect(a.left, a.top, a.right - a.left, a.bottom - a.top);
          const STEPS = 16;
          const paths = [];
          for (let k = 0; k < 3 * (STEPS + 1); k++) paths.push(new Path2D());
          const heldRing = new Path2D();
          const resLines = new Path2D();
          const rad = 3.5;
          for (const m of marks) {
            const { x, y, k } = m;
            const step = Number.isNaN(m.lat) ? STEPS : Math.min(STEPS - 1, Math.floor(latencyIndex(m.lat) / 256 * STEPS));
            const p = paths[k * (STEPS + 1) + step];
            if (k === 0) { p.moveTo(x + rad, y); p.arc(x, y, rad, 0, Math.PI * 2); }
            else if (k === 1) p.rect(x - rad + 0.5, y - rad + 0.5, 2 * rad - 1, 2 * rad - 1);
            else { p.moveTo(x, y - rad - 0.5); p.lineTo(x + rad + 0.5, y + rad - 0.5); p.lineTo(x - rad - 0.5, y + rad - 0.5); p.closePath(); }
            if (m.held) {
              heldRing.moveTo(x + rad + 2.5, y);
              heldRing.arc(x, y, rad + 2.5, 0, Math.PI * 2);
            } else if (!Number.isNaN(m.xr)) {
              resLines.moveTo(x + rad, y);
              resLines.lineTo(m.xr, y);
              resLines.moveTo(m.xr, y - rad - 1.5);
              resLines.lineTo(m.xr, y + rad + 1.5);
            }
          }
          ctx.lineWidth = 1.5;
          ctx.strokeStyle = 'rgba(204,204,204,0.8)';
          ctx.stroke(resLines);
          for (let k = 0; k < 3; k++) {
            for (let s = 0; s <= STEPS; s++) {
              ctx.fillStyle = s === STEPS ? '#b180d7' : `hsl(${220 - s * 14}, 80%, 55%)`;
              ctx.fill(paths[k * (STEPS + 1) + s]);
            }
          }
          ctx.strokeStyle = '#b180d7';
          ctx.stroke(heldRing);
          ctx.restore();
          ch.port2.postMessage(null);
          requestAnimationFrame(done);
        }));
        return { total: performance.now() - t0, cost };
      },
    };
  });
  // The view fits all 100,000 faults (image mode); zoom in at the centre to each target in turn.
  for (const target of [5000, 15000, 19500]) {
    let d = await page.evaluate(() => window.__timeline.stats().drawn);
    for (let k = 0; k < 6 && Math.abs(d.visible - target) > target * 0.03; k++) {
      let delta = Math.log(target / d.visible) / 0.002;
      while (Math.abs(delta) > 1) {
        const step = Math.max(-300, Math.min(300, delta));
        d = await page.evaluate((s) => window.__shapes.wheelAtCentre(s), step);
        delta -= step;
      }
    }
    const pans = [];
    for (let k = 0; k < SHAPE_REPS; k++) pans.push(await page.evaluate((dx) => window.__shapes.pan(dx), k % 2 ? -60 : 60));
    const modes = [...new Set(pans.map((x) => x.mode))].join('/');
    const vis = pans.map((x) => x.visible);
    const marks = await page.evaluateHandle(() => window.__shapes.marks());
    const olds = [];
    for (let k = 0; k < SHAPE_REPS; k++) olds.push(await page.evaluate((m) => window.__shapes.oldFrame(m), marks));
    const nMarks = await marks.evaluate((m) => m.length);
    await marks.dispose();
    const r = { target, visible: median(vis), marks: nMarks, mode: modes, frame: median(pans.map((x) => x.total)),
      cost: median(pans.map((x) => x.cost)), faultsJs: median(pans.map((x) => x.faults)),
      old: median(olds.map((x) => x.total)), oldCost: median(olds.map((x) => x.cost)) };
    out.push(r);
    console.log(`  shapes mode, ${Math.min(...vis).toLocaleString()}–${Math.max(...vis).toLocaleString()} faults in view ` +
      `(mode ${modes}), median of ${SHAPE_REPS}:\n` +
      `    pan step (pointermove → painted) ${ms(r.frame)}, frame cost ${ms(r.cost)} (faults plugin JS ${ms(r.faultsJs)})\n` +
      `    old path-per-colour drawing of the same ${nMarks.toLocaleString()} marks, without axes: ${ms(r.old)}, ` +
      `frame cost ${ms(r.oldCost)}; old ÷ panel frame cost ${(r.oldCost / r.cost).toFixed(1)}×`);
  }
  return out;
}

/** The panel at N faults: first draw, zoom and pan steps, live appends. */
async function millionPanel() {
  // ---------------------------------------------------------------- our panel
  /** A fresh panel with the session waiting in it as JSON batches, and the bench's in-page helpers. */
  async function loadedPanel() {
    const p = await openPanel(browser.context, server.origin, 'dark');
    const page = p.page;
    // The events wait as JSON text of the adapter's 5,000-event batches (its own encoder), parsed as
    // they are delivered, as VS Code deserializes each postMessage.
    await page.evaluate(encoderScript);
    await page.evaluate(`{ const ev = (${genSession.toString()})(${N}, 5);
      window.__chunks = window.__uffdEncode.encodeTimeline(ev, ${BATCH}).map((b) => JSON.stringify(b)); }`);
    // In-page helpers. Delivery is a MessageEvent dispatched on window, the path VS Code's
    // postMessage ends in, without the structured clone (which happens outside the panel).
    await page.evaluate(() => {
      const painted = () => window.__timeline.frame();
      window.__bench = {
        async deliverAll() {
          const t0 = performance.now();
          let parse = 0;
          for (const c of window.__chunks) {
            const p0 = performance.now();
            const batch = JSON.parse(c);
            parse += performance.now() - p0;
            window.dispatchEvent(new MessageEvent('message', { data: { type: 'events', batch } }));
          }
          const t1 = performance.now();
          await painted();
          const t2 = performance.now();
          return { total: t2 - t0, parse, ingest: t1 - t0 - parse, draw: t2 - t1,
            render: window.__timeline.stats().timings.renderMs };
        },
        async reset() {
          window.dispatchEvent(new MessageEvent('message', { data: { type: 'reset' } }));
          await painted();
        },
        async wheel(deltaY) {
          const box = document.getElementById('chart-box');
          const r = box.getBoundingClientRect();
          const a = window.__timeline.stats().chartArea;
          const t0 = performance.now();
          box.dispatchEvent(new WheelEvent('wheel', { deltaY, clientX: r.left + (a.left + a.right) / 2,
            clientY: r.top + (a.top + a.bottom) / 2, bubbles: true, cancelable: true }));
          await painted();
          return { total: performance.now() - t0, render: window.__timeline.stats().timings.renderMs };
        },
        async pan(dx) {
          const box = document.getElementById('chart-box');
          const r = box.getBoundingClientRect();
          const a = window.__timeline.stats().chartArea;
          const x = r.left + (a.left + a.right) / 2;
          const y = r.top + (a.top + a.bottom) / 2;
          const ev = (type, cx) => new PointerEvent(type, { clientX: cx, clientY: y, button: 0, pointerId: 1,
            bubbles: true, isPrimary: true });
          box.dispatchEvent(ev('pointerdown', x));
          const t0 = performance.now();
          box.dispatchEvent(ev('pointermove', x + dx));
          await painted();
          const total = performance.now() - t0;
          box.dispatchEvent(ev('pointerup', x + dx));
          await painted();
          return { total, render: window.__timeline.stats().timings.renderMs };
        },
      };
    });

    return { p, page };
  }

  // First draw of N faults delivered as 5,000-event batches, in a fresh panel each time (a user
  // waits for a cold one): median of FIRST_REPS, to see past the load other work puts on the machine.
  const firsts = [];
  let p;
  let page;
  for (let k = 0; k < FIRST_REPS; k++) {
    if (page) await page.close();
    ({ p, page } = await loadedPanel());
    firsts.push(await page.evaluate(() => window.__bench.deliverAll()));
  }
  const byTotal = [...firsts].sort((a, b) => a.draw + a.ingest - b.draw - b.ingest);
  const first = byTotal[Math.floor(byTotal.length / 2)];
  console.log(`first draws incl. validate+store: ${firsts.map((f) => ms(f.draw + f.ingest)).join(', ')}; the median run:`);
  const s1 = await p.stats();
  results.firstDraw = first;
  results.mode = s1.drawn.mode;
  console.log(`timeline, ${s1.events.toLocaleString()} faults, ${s1.lanes.length} lanes`);
  console.log(`  load: JSON.parse of the batches (VS Code's deserialization) ${ms(first.parse)}, ` +
    `validate+store ${ms(first.ingest)}`);
  console.log(`  first draw, stored → painted         ${ms(first.draw)}  (bin+draw JS ${ms(first.render)}, ` +
    `faults plugin ${ms(s1.timings.binMs)}, mode ${s1.drawn.mode})`);
  console.log(`  first draw incl. validate+store      ${ms(first.draw + first.ingest)}  ` +
    `(incl. JSON.parse too: ${ms(first.total)})`);

  // Zoom steps: in 4, out 4, alternating so the view stays comparable; then pans.
  const zooms = [];
  for (let k = 0; k < REPS; k++) zooms.push(await page.evaluate((d) => window.__bench.wheel(d), k % 2 ? 240 : -240));
  const pans = [];
  for (let k = 0; k < REPS; k++) pans.push(await page.evaluate((d) => window.__bench.pan(d), k % 2 ? -80 : 80));
  results.zoom = median(zooms.map((z) => z.total));
  results.pan = median(pans.map((z) => z.total));
  console.log(`  zoom step (wheel → painted)       ${ms(results.zoom)} median of ${REPS} ` +
    `(JS ${ms(median(zooms.map((z) => z.render)))}, faults ${ms((await p.stats()).timings.binMs)})`);
  console.log(`  pan step (pointermove → painted)  ${ms(results.pan)} median of ${REPS} ` +
    `(JS ${ms(median(pans.map((z) => z.render)))})`);

  // Live appends: reset, then 5,000-event batches; sample five batches after 100k and at the end.
  await page.evaluate(() => window.__bench.reset());
  const live = await page.evaluate(async ({ BATCH, N }) => {
    const samples = { 100000: [], [N]: [] };
    let i = 0;
    let faults = 0;
    for (const c of window.__chunks) {
      const batch = JSON.parse(c);
      i += BATCH;
      faults += batch.seq.length;
      const near = [100000, N].find((m) => faults > m - 5 * BATCH && faults <= m);
      if (near !== undefined) {
        const t0 = performance.now();
        window.dispatchEvent(new MessageEvent('message', { data: { type: 'events', batch } }));
        const ingest = performance.now() - t0;
        await window.__timeline.frame();
        samples[near].push({ ingest, render: window.__timeline.stats().timings.renderMs });
      } else {
        window.dispatchEvent(new MessageEvent('message', { data: { type: 'events', batch } }));
        if ((i / BATCH) % 20 === 0) await new Promise((r) => requestAnimationFrame(r));
      }
    }
    return samples;
  }, { BATCH, N });
  for (const [at, xs] of Object.entries(live)) {
    if (!xs.length) continue;
    const ing = median(xs.map((x) => x.ingest));
    const ren = median(xs.map((x) => x.render));
    results[`live${at}`] = ing + ren;
    console.log(`  live append at ${Number(at).toLocaleString()} faults   ${ms(ing + ren)} per ${BATCH}-event batch ` +
      `(ingest ${ms(ing)}, bin+draw ${ms(ren)}; live draws at most 2/s, fewer when a frame costs more)`);
  }
  const heap = await page.evaluate(() => performance.memory?.usedJSHeapSize ?? 0);
  if (heap) console.log(`  JS heap (store + the bench's JSON chunks)  ${(heap / 2 ** 20).toFixed(0)} MiB`);
  if (p.problems.length) console.log('  problems:', p.problems);
  await page.close();
}

/** The panel at 100,000 faults: first draw, then the shapes-mode frames. */
async function panel100k() {
  // ---------------------------------------------------------------- our panel at 100k, for the ratio
  const q = await openPanel(browser.context, server.origin, 'dark');
  await q.page.evaluate(encoderScript);
  await q.page.evaluate(`{ const ev = (${genSession.toString()})(100000, 5);
    window.__events = ev;
    window.__chunks = window.__uffdEncode.encodeTimeline(ev, ${BATCH}).map((b) => JSON.stringify(b)); }`);
  const first100k = await q.page.evaluate(async () => {
    const batches = window.__chunks.map((c) => JSON.parse(c));
    const t0 = performance.now();
    for (const batch of batches) window.dispatchEvent(new MessageEvent('message', { data: { type: 'events', batch } }));
    const t1 = performance.now();
    await window.__timeline.frame();
    return { draw: performance.now() - t1, withStore: performance.now() - t0 };
  });
  console.log(`timeline, 100,000 faults: first draw stored → painted ${ms(first100k.draw)}, ` +
    `incl. validate+store ${ms(first100k.withStore)}`);
  results.shapes = await shapesFrames(q.page);
  await q.page.close();
  return first100k;
}

/** A plain chart.js scatter of 100,000 points, and the ratios to the panel's figures. */
async function scatterBaseline(first100k) {
  // ---------------------------------------------------------------- baseline
  const bundle = await esbuild.build({ stdin: { contents: "import Chart from 'chart.js/auto'; window.Chart = Chart;",
    resolveDir: root }, bundle: true, write: false, format: 'iife', platform: 'browser', logLevel: 'warning' });
  const b = await browser.context.newPage();
  await b.setViewportSize({ width: 1400, height: 900 });
  await b.setContent('<!DOCTYPE html><html><body style="margin:0"><div style="width:1400px;height:600px">' +
    '<canvas id="c"></canvas></div></body></html>');
  await b.addScriptTag({ content: bundle.outputFiles[0].text });
  const base = await b.evaluate(async (reps) => {
    const n = 100000;
    let s = 12345;
    const rnd = () => { s = (s * 1103515245 + 12345) & 0x7fffffff; return s / 0x7fffffff; };
    const data = [];
    let t = 0;
    for (let i = 0; i < n; i++) { t += rnd() * 40; data.push({ x: t, y: Math.floor(rnd() * 4) + rnd() }); }
    const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    const t0 = performance.now();
    const chart = new window.Chart(document.getElementById('c'), {
      type: 'scatter', data: { datasets: [{ data, pointRadius: 0 }] },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: false } } },
    });
    await frame();
    const first = performance.now() - t0;
    const zooms = [];
    const pans = [];
    let lo = 0;
    let hi = t;
    for (let k = 0; k < reps; k++) {
      const span = (hi - lo) * (k % 2 ? 1.25 : 0.8);
      const mid = (lo + hi) / 2;
      lo = mid - span / 2; hi = mid + span / 2;
      const z0 = performance.now();
      chart.options.scales.x.min = lo; chart.options.scales.x.max = hi;
      chart.update('none');
      await frame();
      zooms.push(performance.now() - z0);
    }
    for (let k = 0; k < reps; k++) {
      const d = (hi - lo) * 0.06 * (k % 2 ? -1 : 1);
      lo += d; hi += d;
      const p0 = performance.now();
      chart.options.scales.x.min = lo; chart.options.scales.x.max = hi;
      chart.update('none');
      await frame();
      pans.push(performance.now() - p0);
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    return { first, zoom: med(zooms), pan: med(pans) };
  }, REPS);
  await b.close();
  console.log('baseline: chart.js scatter, 100,000 points, pointRadius 0, animation off');
  console.log(`  first draw ${ms(base.first)}, zoom step ${ms(base.zoom)}, pan step ${ms(base.pan)}`);
  const r = (a, c) => `${(a / c).toFixed(1)}×`;
  console.log('ratios (baseline ÷ timeline; higher is better for the timeline)');
  console.log(`  first draw (data in memory → painted): baseline 100k ÷ timeline 100k ${r(base.first, first100k.draw)}, ` +
    `÷ timeline ${N.toLocaleString()} ${r(base.first, results.firstDraw.draw)}`);
  console.log(`  first draw incl. the timeline's validate+store: baseline 100k ÷ timeline 100k ` +
    `${r(base.first, first100k.withStore)}, ÷ timeline ${N.toLocaleString()} ` +
    `${r(base.first, results.firstDraw.draw + results.firstDraw.ingest)}`);
  console.log(`  zoom step: baseline 100k vs timeline ${N.toLocaleString()} ${r(base.zoom, results.zoom)}`);
  console.log(`  pan step:  baseline 100k vs timeline ${N.toLocaleString()} ${r(base.pan, results.pan)}`);
  console.log(`load average at end: ${load()}`);
  const ok = (c) => (c ? 'met' : 'MISSED');
  console.log(`targets: first draw < 1 s ${ok(results.firstDraw.draw < 1000)} ` +
    `(with validate+store ${ok(results.firstDraw.draw + results.firstDraw.ingest < 1000)}), zoom < 50 ms ${ok(results.zoom < 50)}, ` +
    `pan < 50 ms ${ok(results.pan < 50)}`);
}

try {
  if (!shapesOnly) await millionPanel();
  const first100k = await panel100k();
  if (!shapesOnly) await scatterBaseline(first100k);
} finally {
  await browser.close();
  await server.close();
}

