// Browser harness for the timeline webview: builds dist/webview.js with esbuild, serves the real
/* global window, document, getComputedStyle */
// panel HTML (webview/panelHtml.ts) from 127.0.0.1 under the same CSP as VS Code, stubs
// acquireVsCodeApi() and the theme variables, and drives Debian's chromium via playwright-core.
// Used by test/webview/timeline.test.mjs and bench/timeline.bench.mjs.
import * as esbuild from 'esbuild';
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

export const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
export const artifacts = path.join(root, 'test/artifacts');

const THEMES = {
  dark: {
    cls: 'vscode-dark',
    vars: {
      'editor-background': '#1e1e1e', 'foreground': '#cccccc', 'descriptionForeground': '#9d9d9d',
      'focusBorder': '#007fd4', 'charts-red': '#f14c4c', 'charts-blue': '#3794ff', 'charts-yellow': '#cca700',
      'charts-orange': '#d18616', 'charts-green': '#89d185', 'charts-purple': '#b180d7',
      'charts-lines': 'rgba(204, 204, 204, 0.5)', 'charts-foreground': '#cccccc', 'textLink-foreground': '#3794ff',
      'button-background': '#0e639c', 'button-foreground': '#ffffff', 'button-hoverBackground': '#1177bb',
      'button-secondaryBackground': '#3a3d41', 'button-secondaryForeground': '#cccccc',
      'button-secondaryHoverBackground': '#45494e', 'panel-border': 'rgba(128, 128, 128, 0.35)',
      'font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif', 'font-size': '13px',
      'editor-font-family': '"Droid Sans Mono", monospace',
    },
  },
  light: {
    cls: 'vscode-light',
    vars: {
      'editor-background': '#ffffff', 'foreground': '#616161', 'descriptionForeground': '#717171',
      'focusBorder': '#0090f1', 'charts-red': '#e51400', 'charts-blue': '#1a85ff', 'charts-yellow': '#bf8803',
      'charts-orange': '#d18616', 'charts-green': '#388a34', 'charts-purple': '#652d90',
      'charts-lines': 'rgba(97, 97, 97, 0.5)', 'charts-foreground': '#616161', 'textLink-foreground': '#006ab1',
      'button-background': '#007acc', 'button-foreground': '#ffffff', 'button-hoverBackground': '#0062a3',
      'button-secondaryBackground': '#5f6a79', 'button-secondaryForeground': '#ffffff',
      'button-secondaryHoverBackground': '#4c5561', 'panel-border': 'rgba(128, 128, 128, 0.35)',
      'font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif', 'font-size': '13px',
      'editor-font-family': '"Droid Sans Mono", monospace',
    },
  },
  hc: {
    cls: 'vscode-high-contrast',
    vars: {
      'editor-background': '#000000', 'foreground': '#ffffff', 'descriptionForeground': '#ffffff',
      'focusBorder': '#f38518', 'contrastBorder': '#6fc3df', 'charts-red': '#f14c4c', 'charts-blue': '#3794ff',
      'charts-yellow': '#ffd700', 'charts-orange': '#ff8c00', 'charts-green': '#89d185', 'charts-purple': '#b180d7',
      'charts-lines': 'rgba(255, 255, 255, 0.5)', 'charts-foreground': '#ffffff', 'textLink-foreground': '#21a6ff',
      'button-background': '#000000', 'button-foreground': '#ffffff', 'button-border': '#6fc3df',
      'button-secondaryBackground': '#000000', 'button-secondaryForeground': '#ffffff', 'panel-border': '#6fc3df',
      'font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif', 'font-size': '13px',
      'editor-font-family': '"Droid Sans Mono", monospace',
    },
  },
};

// Stub of the VS Code webview API. State lives in sessionStorage so a reload plays the part of
// the panel being hidden and shown again. CSP violations are recorded for the tests.
const HARNESS_JS = `
window.__posted = [];
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(e.violatedDirective + ' ' + e.blockedURI);
});
window.acquireVsCodeApi = (() => {
  let taken = false;
  return () => {
    if (taken) throw new Error('acquireVsCodeApi called twice');
    taken = true;
    return {
      postMessage: (m) => { window.__posted.push(JSON.parse(JSON.stringify(m))); },
      getState: () => { const s = sessionStorage.getItem('vscodeState'); return s ? JSON.parse(s) : undefined; },
      setState: (s) => { sessionStorage.setItem('vscodeState', JSON.stringify(s)); return s; },
    };
  };
})();
`;

let built = false;
let panelHtml;
/** webview/messages.ts and panelHtml.ts as the extension sees them (no DOM), the adapter's encodeTimeline, the panel's
 * FaultStore and its exports/imports (webview/exchange.ts). */
export let nodeSide;
/**
 * The adapter's batch encoder for pages: `page.evaluate(encoderScript)` defines
 * `window.__uffdEncode.encodeTimeline(events, per)`, for sessions generated in the page.
 */
export let encoderScript;

/** `events` messages for a list of events, as the adapter batches them (`per` events each). */
export function eventMessages(events, per = 5000) {
  return nodeSide.encodeTimeline(events, per).map((batch) => ({ type: 'events', batch }));
}

/** Builds dist/webview.js (the same options as scripts/build.mjs) and loads panelHtml.ts. */
export async function buildWebview() {
  if (built) return;
  await esbuild.build({
    entryPoints: [path.join(root, 'webview/main.ts')], outfile: path.join(root, 'dist/webview.js'), bundle: true,
    platform: 'browser', target: 'chrome120', format: 'iife', sourcemap: true, logLevel: 'warning',
  });
  const tmp = mkdtempSync(path.join(tmpdir(), 'uffd-webview-'));
  const out = path.join(tmp, 'node.mjs');
  await esbuild.build({ stdin: { contents: "export { panelHtml } from './webview/panelHtml'; " +
    "export * from './webview/messages'; export { encodeTimeline } from './server/core/batcher'; " +
    "export { FaultStore } from './webview/store'; " +
    "export { exportCsv, exportTrace, importCsv, importTrace } from './webview/exchange';", resolveDir: root,
  loader: 'ts' }, outfile: out, bundle: true, platform: 'node', format: 'esm', logLevel: 'warning' });
  const enc = await esbuild.build({ stdin: { contents: "export { encodeTimeline } from './server/core/batcher';",
    resolveDir: root, loader: 'ts' }, bundle: true, write: false, platform: 'browser', format: 'iife',
  globalName: 'window.__uffdEncode', logLevel: 'warning' });
  encoderScript = enc.outputFiles[0].text;
  nodeSide = await import(pathToFileURL(out).href);
  panelHtml = nodeSide.panelHtml;
  rmSync(tmp, { recursive: true, force: true });
  built = true;
}

/** Serves the panel on 127.0.0.1; `/?theme=dark|light|hc`. */
export async function startServer() {
  await buildWebview();
  const files = {
    '/dist/webview.js': ['dist/webview.js', 'text/javascript'],
    '/dist/webview.js.map': ['dist/webview.js.map', 'application/json'],
    '/media/timeline.css': ['media/timeline.css', 'text/css'],
  };
  let origin = '';
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/' || url.pathname === '/index.html') {
      const theme = THEMES[url.searchParams.get('theme') ?? 'dark'] ?? THEMES.dark;
      const nonce = 'n' + Math.random().toString(36).slice(2);
      let html = panelHtml({ cspSource: origin, nonce, scriptUri: `${origin}/dist/webview.js`,
        styleUri: `${origin}/media/timeline.css` });
      const themeName = Object.keys(THEMES).find((k) => THEMES[k] === theme);
      html = html.replace('<link rel="stylesheet"',
        `<link rel="stylesheet" href="${origin}/theme-${themeName}.css">\n` +
        `<script nonce="${nonce}" src="${origin}/harness.js"></script>\n<link rel="stylesheet"`);
      html = html.replace('<body>', `<body class="${theme.cls}">`);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' });
      res.end(html);
      return;
    }
    if (url.pathname === '/harness.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(HARNESS_JS);
      return;
    }
    const m = /^\/theme-(\w+)\.css$/.exec(url.pathname);
    if (m && THEMES[m[1]]) {
      const vars = Object.entries(THEMES[m[1]].vars).map(([k, v]) => `  --vscode-${k}: ${v};`).join('\n');
      res.writeHead(200, { 'content-type': 'text/css' });
      res.end(`html {\n${vars}\n}\n`);
      return;
    }
    if (url.pathname === '/favicon.ico') {
      res.writeHead(204);
      res.end();
      return;
    }
    const f = files[url.pathname];
    if (!f) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': f[1], 'cache-control': 'no-store' });
    res.end(readFileSync(path.join(root, f[0])));
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  origin = `http://127.0.0.1:${server.address().port}`;
  return { origin, close: () => new Promise((resolve) => server.close(resolve)) };
}

export async function launchBrowser() {
  const userDataDir = mkdtempSync(path.join(tmpdir(), 'uffd-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 1400, height: 900 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run'],
  });
  return {
    context,
    async close() {
      await context.close();
      rmSync(userDataDir, { recursive: true, force: true });
    },
  };
}

/** Opens the panel; records console errors, page errors and CSP reports in `problems`. */
export async function openPanel(context, origin, theme = 'dark') {
  const page = await context.newPage();
  const problems = [];
  const warnings = [];
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console error: ${m.text()}`);
    if (m.type() === 'warning') warnings.push(m.text());
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  await page.goto(`${origin}/?theme=${theme}`);
  await page.waitForFunction(() => window.__timeline !== undefined, null, { timeout: 10000 });
  return {
    page, problems, warnings,
    async cspViolations() { return page.evaluate(() => window.__csp); },
    async posted() { return page.evaluate(() => window.__posted); },
    async send(msg) { await page.evaluate((m) => window.postMessage(m, '*'), msg); },
    async frame() { await page.evaluate(() => window.__timeline.frame()); },
    async stats() { return page.evaluate(() => window.__timeline.stats()); },
  };
}

export function ensureArtifacts() {
  mkdirSync(artifacts, { recursive: true });
}

/**
 * A plausible session, deterministic by seed: 3 regions with faults plus one without, 4 threads,
 * missing/wp/minor faults with ZEROPAGE/COPY/WRITEPROTECT/CONTINUE resolutions, ~2% held (half
 * resolved later by a `resolved` event), a fork, an MADV_REMOVE and an munmap. Self-contained (no
 * closure) so it can also run inside the page: `page.evaluate(\`(${genSession})(n)\`)`.
 */
export function genSession(n, seed = 1) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const hex = (x) => '0x' + x.toString(16);
  const regions = [
    { start: 0x555555559000, end: 0x555555559000 + 1024 * 4096, via: 'brk', name: '[heap]' },
    { start: 0x7ffff7a00000, end: 0x7ffff7a00000 + 4096 * 4096, via: 'mmap', name: 'anon mmap 16 MiB' },
    { start: 0x7ffffffde000, end: 0x7ffffffde000 + 33 * 4096, via: 'exec', name: '[stack]' },
    { start: 0x7ffff0000000, end: 0x7ffff0000000 + 256 * 4096, via: 'mmap', name: 'unused arena' },
  ];
  const events = regions.map((r) => ({ event: 'region', action: 'add',
    region: { start: hex(r.start), end: hex(r.end), via: r.via, name: r.name } }));
  const later = [];
  const tids = [4242, 4243, 4244, 4245];
  let t = 1_000_000_000_000;
  const weights = [0.45, 0.4, 0.15];
  const heldEvery = Math.max(3, Math.round(n / Math.max(1, Math.min(n * 0.02, 5000))));
  for (let seq = 1; seq <= n; seq++) {
    t += Math.floor(-Math.log(1 - rnd()) * 20000) + 1;
    while (later.length && later[0].t <= t) events.push(later.shift());
    const u = rnd();
    const ri = u < weights[0] ? 0 : u < weights[0] + weights[1] ? 1 : 2;
    const r = regions[ri];
    const pages = (r.end - r.start) / 4096;
    // Sequential sweeps with some random touches, as a program's first pass over memory looks.
    const p = rnd() < 0.7 ? (seq * 7 + ri * 13) % pages : Math.floor(rnd() * pages);
    const page = r.start + p * 4096;
    const addr = page + Math.floor(rnd() * 4096);
    const k = rnd();
    const kind = k < 0.8 ? 'missing' : k < 0.92 ? 'wp' : 'minor';
    const access = kind === 'wp' ? 'write' : rnd() < 0.55 ? 'write' : 'read';
    const tid = tids[Math.floor(rnd() * tids.length)];
    const held = seq % heldEvery === 0;
    const ioctl = kind === 'wp' ? 'UFFDIO_WRITEPROTECT' : kind === 'minor' ? 'UFFDIO_CONTINUE'
      : access === 'read' ? 'UFFDIO_ZEROPAGE' : 'UFFDIO_COPY';
    const latencyNs = Math.round(Math.exp(Math.log(3000) + rnd() * 3.5 + (rnd() < 0.05 ? 4 : 0)));
    const f = { event: 'fault', seq, t, addr: hex(addr), page: hex(page), access, kind, tid, held };
    if (seq > n / 3 && seq % 50 === 0) f.pid = 4300; // the followed child after the fork
    if (!held) {
      f.ioctl = ioctl;
      f.latencyNs = latencyNs;
    } else if ((seq / heldEvery) % 2 === 0) {
      const lat = latencyNs * 200;
      later.push({ event: 'resolved', seq, t: t + lat, page: hex(page), ioctl, latencyNs: lat });
      later.sort((a, b) => a.t - b.t);
    }
    events.push(f);
    if (seq === Math.floor(n / 3)) events.push({ event: 'nc', what: 'fork', t: t + 1, pid: 4300 });
    if (seq === Math.floor(n / 2)) {
      events.push({ event: 'region', action: 'remove', region: { start: hex(regions[3].start),
        end: hex(regions[3].start + 16 * 4096), via: 'unmap', name: regions[3].name } });
    }
    if (seq === Math.floor((2 * n) / 3)) {
      events.push({ event: 'nc', what: 'remove', t: t + 1, start: hex(regions[1].start),
        end: hex(regions[1].start + 64 * 4096) });
    }
  }
  return events;
}

/**
 * An observe-mode session as the adapter forwards it (server/core/observeDebug.ts): one region
 * registered by the program's handler (via 'observe'), faults read by the handler (not held, no
 * latency), each placed later by the handler (`resolved` with UFFDIO_COPY), except the faults on
 * page `forget` (the demo's --forget K): never resolved, the first named by a `stuck` event.
 */
export function genObserveSession(n, { forget = Math.floor(n / 2), seed = 5, waitedMs = 312 } = {}) {
  let s = seed >>> 0 || 1;
  const rnd = () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296;
  };
  const hex = (x) => '0x' + x.toString(16);
  const start = 0x7f1234500000;
  const events = [{ event: 'region', action: 'add',
    region: { start: hex(start), end: hex(start + n * 4096), via: 'observe', name: 'userfaultfd 1 (missing)' } }];
  const tids = [5001, 5002, 5003, 5004];
  const later = [];
  let t = 2_000_000_000_000;
  let stuckFault = null;
  for (let seq = 1; seq <= n; seq++) {
    t += Math.floor(-Math.log(1 - rnd()) * 30000) + 1;
    while (later.length && later[0].t <= t) events.push(later.shift());
    // Workers sweep their quarter of the region; the handler reads each fault as it comes.
    const tid = tids[seq % tids.length];
    const p = (seq - 1) % n;
    const page = start + p * 4096;
    const f = { event: 'fault', seq, t, addr: hex(page + Math.floor(rnd() * 4096)), page: hex(page),
      access: rnd() < 0.5 ? 'write' : 'read', kind: 'missing', tid, held: false };
    events.push(f);
    if (p === forget) {
      stuckFault = f;
      later.push({ event: 'stuck', seq, t: t + waitedMs * 1e6, page: f.page, tid, waitedNs: waitedMs * 1e6 + 1234 });
    } else {
      const lat = Math.round(Math.exp(Math.log(20000) + rnd() * 2.5)); // 20-250 µs: request, transfer, UFFDIO_COPY
      later.push({ event: 'resolved', seq, t: t + lat, page: f.page, ioctl: 'UFFDIO_COPY', latencyNs: lat });
    }
    later.sort((a, b) => a.t - b.t);
  }
  events.push(...later);
  return { events, stuckFault };
}

/** Pixels of the theme's red (--vscode-charts-red) within 12 px of fault seq's mark in the panel's chart;
 * `target`: the panel's page, or its frame inside VS Code. */
export async function redPixelsAround(target, seq) {
  const red = await themeRgb(target, '--vscode-charts-red');
  return target.evaluate(([q, red]) => {
    const cv = document.getElementById('chart');
    const box = cv.getBoundingClientRect();
    const dpr = cv.width / box.width;
    const at = window.__timeline.pixelOf(q);
    const R = 12;
    const img = cv.getContext('2d').getImageData(Math.round((at.x - box.left - R) * dpr), Math.round((at.y - box.top - R) * dpr),
      Math.round(2 * R * dpr), Math.round(2 * R * dpr)).data;
    let n = 0;
    for (let k = 0; k < img.length; k += 4) {
      if (img[k + 3] > 200 && Math.abs(img[k] - red[0]) + Math.abs(img[k + 1] - red[1]) + Math.abs(img[k + 2] - red[2]) < 40) n++;
    }
    return n;
  }, [seq, red]);
}

/**
 * The chart's device pixels within R CSS px of fault seq's mark: `px(dx, dy)` is [r, g, b, a] of the
 * pixel dx, dy device pixels from the one holding the mark's centre; `dpr` is the canvas's.
 */
export async function markPixels(target, seq, R = 12) {
  const { dpr, half, data } = await target.evaluate(([q, R]) => {
    const cv = document.getElementById('chart');
    const box = cv.getBoundingClientRect();
    const dpr = cv.width / box.width;
    const at = window.__timeline.pixelOf(q);
    const half = Math.ceil(R * dpr);
    const cx = Math.floor((at.x - box.left) * dpr);
    const cy = Math.floor((at.y - box.top) * dpr);
    const img = cv.getContext('2d').getImageData(cx - half, cy - half, 2 * half + 1, 2 * half + 1).data;
    return { dpr, half, data: Array.from(img) };
  }, [seq, R]);
  const w = 2 * half + 1;
  return {
    dpr, half,
    px(dx, dy) {
      const k = ((dy + half) * w + dx + half) * 4;
      return data.slice(k, k + 4);
    },
  };
}

/** The RGB of a theme colour variable (e.g. '--vscode-charts-purple') as the page has it now. */
export function themeRgb(target, name) {
  return target.evaluate((v) => {
    const g = document.createElement('canvas').getContext('2d');
    g.fillStyle = getComputedStyle(document.documentElement).getPropertyValue(v).trim();
    g.fillRect(0, 0, 1, 1);
    return Array.from(g.getImageData(0, 0, 1, 1).data.slice(0, 3));
  }, name);
}

/**
 * The colour the panel gives a latency (ns) in shapes mode, from the theme's chart colours as the
 * page has them: the 16-step scale of webview/theme.ts's ramp (blue → green → yellow → orange →
 * red, log scale from 1 µs to 10 ms), each step drawn in the ramp colour at its middle.
 */
export async function rampColour(target, latencyNs) {
  const stops = [];
  for (const c of ['blue', 'green', 'yellow', 'orange', 'red']) stops.push(await themeRgb(target, `--vscode-charts-${c}`));
  const index = Math.max(0, Math.min(255, Math.round((Math.log10(Math.max(latencyNs, 1)) - 3) / 4 * 255)));
  const step = Math.min(15, Math.floor((index / 256) * 16));
  const x = (Math.round(((step + 0.5) / 16) * 255) / 255) * 4;
  const k = Math.min(3, Math.floor(x));
  return stops[k].map((c, j) => Math.round(c + (stops[k + 1][j] - c) * (x - k)));
}
