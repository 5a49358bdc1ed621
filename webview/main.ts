// The fault timeline panel. chart.js draws axes and grid and nothing else; the faults are binned
// from the store's typed arrays into a grid the size of the chart area on every redraw and drawn
// by the `faults` plugin, as shapes when few are visible and as one image when many are
// (/work/shared/CHART-FACTS.md has the measurements behind this).
// chart.js ships ESM typings only while the repo's tsconfig reads webview/ as CommonJS (module
// Node16): TS1479 is expected; esbuild bundles the ESM build and the types still resolve.
import {
  BarController, BarElement, CategoryScale, Chart, LinearScale, PointElement, ScatterController, Title,
  type Plugin, type Scale, type Tick,
  // @ts-expect-error TS1479, see above
} from 'chart.js';
import { exportCsv, exportTrace, importCsv, importTrace } from './exchange';
import { toPanelProblem, type FromPanel, type TimelineBatch, type TimelineEvent, type ToPanel } from './messages';
import {
  FaultStore, FLAG_HELD, FLAG_RESOLVED, FLAG_WRITE, HIST_BUCKETS, KINDS, numToHex, PAGE_SIZE, PAGE_STATES,
} from './store';
import { css, latencyIndex, readPalette, type Palette } from './theme';

Chart.register(ScatterController, PointElement, LinearScale, BarController, BarElement, CategoryScale, Title);

interface VsCodeApi { postMessage(m: unknown): void; getState(): unknown; setState(s: unknown): void }
declare function acquireVsCodeApi(): VsCodeApi;

/**
 * Above this many faults in view, draw one image of binned cells instead of shapes. Shapes cost
 * about 0.4 µs each a frame: at 40k a pan step took 52 ms against the image's 33 ms
 * (bench/timeline.bench.mjs, README), past the 50 ms target.
 */
const SHAPES_MAX = 20000;
/** Binned cells are CELL×CELL device pixels so single faults stay visible. */
const CELL = 2;
/**
 * Redraws for arriving data (not for the user's zoom, pan or clicks, drawn at once) come at most
 * every LIVE_MIN_INTERVAL_MS, and further apart when a frame costs more than LIVE_COST_SHARE of
 * the time between them (never further than LIVE_MAX_INTERVAL_MS): the panel shares the CPU with
 * the debugged program, the helper and the adapter while faults stream. A frame's cost is taken
 * from its start to the first task after it, so the browser's paint and canvas raster count, not
 * only our JS (with software rendering they cost as much again).
 */
const LIVE_MIN_INTERVAL_MS = 500;
const LIVE_MAX_INTERVAL_MS = 1000;
const LIVE_COST_SHARE = 1 / 20;
/** Side panels (page map, histogram, threads, rates) redraw at most this often while data arrives,
 * less often when their JS costs more than LIVE_COST_SHARE of the time. */
const SIDE_MIN_INTERVAL_MS = 1000;
/** Sessions up to this size are kept in the webview state (as CSV) across hide/show. */
const SNAPSHOT_MAX = 5000;

const vscode = acquireVsCodeApi();
const store = new FaultStore();
let pal: Palette = readPalette();

type Mode = 'fit' | 'tail' | 'fixed';
const view = { x0: 0, x1: 1e9, y0: 0, y1: 1, mode: 'fit' as Mode };
let selected = -1; // index into the store
let seenTMax = 0;
let seenBands = 0;

const drawn = { missing: 0, wp: 0, minor: 0, resolutions: 0, nc: 0, held: 0, stuck: 0, visible: 0, mode: 'shapes' };
const timings = { ingestMs: 0, binMs: 0, renderMs: 0, frameMs: 0, renders: 0, sideRenders: 0 };

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

// ---------------------------------------------------------------- messages

function post(m: FromPanel): void {
  vscode.postMessage(m);
}

function warn(msg: string): void {
  console.warn(`uffd-debug timeline: ${msg}`);
}

/** Stores events (a batch from the extension, or a slice of an import) and schedules a draw. */
function ingest(batch: TimelineBatch | readonly unknown[]): void {
  const t0 = performance.now();
  const wasEmpty = store.n === 0;
  const r = Array.isArray(batch) ? store.ingest(batch) : store.ingestBatch(batch as TimelineBatch);
  if (r.dropped) warn(`dropped ${r.dropped} invalid event(s), first: ${r.firstProblem}`);
  timings.ingestMs = performance.now() - t0;
  if (restored?.sel !== undefined && selected < 0) {
    const i = store.indexOfSeq(restored.sel);
    if (i >= 0) { selected = i; showDetails(); }
  }
  followData();
  requestRender(wasEmpty);
}

/** Large imports are stored in slices with a yield between, so the panel keeps painting. */
const IMPORT_SLICE = 200000;
let importGen = 0;

function importText(format: 'trace' | 'csv', text: string): void {
  let events: TimelineEvent[];
  try {
    const r = format === 'trace' ? importTrace(text) : importCsv(text);
    if (r.dropped) warn(`import dropped ${r.dropped} invalid event(s)`);
    events = r.events;
  } catch (e) {
    warn(`import failed: ${(e as Error).message}`);
    status(`Import failed: ${(e as Error).message}`);
    return;
  }
  resetAll();
  const gen = ++importGen;
  let at = 0;
  const next = () => {
    if (gen !== importGen) return; // a newer import or a reset took over
    ingest(events.slice(at, at + IMPORT_SLICE));
    at += IMPORT_SLICE;
    if (at < events.length) {
      status(`Importing… ${Math.round((100 * at) / events.length)}%`);
      setTimeout(next, 0);
    } else {
      status(`Imported ${store.n.toLocaleString()} faults (${format}).`);
    }
  };
  next();
}

function resetAll(): void {
  importGen++;
  store.clear();
  selected = -1;
  // The extension answers `ready` with reset + the session's events: keep the restored view.
  if (!restored) view.mode = 'fit';
  seenTMax = 0;
  seenBands = 0;
  showDetails();
  requestRender(true);
}

window.addEventListener('message', (ev: MessageEvent) => {
  const m = ev.data as unknown;
  const p = toPanelProblem(m);
  if (p !== null) {
    warn(`dropped message: ${p}`);
    return;
  }
  const msg = m as ToPanel;
  switch (msg.type) {
    case 'events': ingest(msg.batch); break;
    case 'reset': resetAll(); break;
    case 'import': importText(msg.format, msg.text); break;
    case 'theme': applyTheme(); break;
    case 'visibility':
      hiddenByHost = !msg.visible;
      visibilityChanged();
      break;
  }
});

// ---------------------------------------------------------------- view

function fit(): void {
  const span = store.tMax - store.tMin;
  const pad = Math.max(span * 0.02, 1000);
  view.x0 = store.tMin - pad;
  view.x1 = store.tMax + pad;
  view.y0 = 0;
  view.y1 = Math.max(1, store.bands.length);
  view.mode = 'fit';
}

/** New data: a fitted view refits, a view showing the newest faults slides along with them. */
function followData(): void {
  const tMax = store.tMax;
  if (view.mode === 'fit') fit();
  else if (view.mode === 'tail' && tMax > seenTMax) {
    view.x0 += tMax - seenTMax;
    view.x1 += tMax - seenTMax;
  }
  if (view.mode !== 'fit' && seenBands && view.y1 >= seenBands - 1e-9 && store.bands.length > seenBands) {
    view.y1 = store.bands.length;
  }
  seenTMax = tMax;
  seenBands = store.bands.length;
}

function userMoved(): void {
  restored = null;
  view.mode = view.x1 >= store.tMax ? 'tail' : 'fixed';
  saveState();
}

function zoom(axis: 'x' | 'y', factor: number, at: number): void {
  if (axis === 'x') {
    const span = Math.max(1000, (view.x1 - view.x0) * factor);
    const f = (at - view.x0) / (view.x1 - view.x0);
    view.x0 = at - f * span;
    view.x1 = view.x0 + span;
  } else {
    const span = Math.min(Math.max(1e-6, (view.y1 - view.y0) * factor), Math.max(1, store.bands.length) + 1);
    const f = (at - view.y0) / (view.y1 - view.y0);
    view.y0 = at - f * span;
    view.y1 = view.y0 + span;
  }
  userMoved();
  requestRender(true);
}

// ---------------------------------------------------------------- rendering

let chart: Chart<'scatter'>;
let renderQueued = false;
/** A live redraw waiting for its turn (requestRender(false)). */
let liveTimer: ReturnType<typeof setTimeout> | null = null;
let lastRender = -Infinity;
let drawnVersion = -1;
let sideVersion = -1;
let lastSide = -Infinity;
/** Side panels waiting for their turn (their data changed since they were drawn). */
let sideTimer: ReturnType<typeof setTimeout> | null = null;
let sideQueued = false;
/** JS cost of the last side-panel redraw, ms. */
let sideCost = 0;
/** Smoothed cost of a frame (JS, paint and raster), ms. */
let frameCost = 0;
/** The extension said the panel is hidden (another editor tab in front), or the page is. */
let hiddenByHost = false;
const frameWaiters: (() => void)[] = [];

const isHidden = () => hiddenByHost || document.visibilityState === 'hidden';

/** Nothing scheduled: a hidden panel draws what it stored when it is shown again. */
function idle(): boolean {
  return !renderQueued && !liveTimer && !sideQueued && !sideTimer;
}

function requestRender(urgent: boolean): void {
  if (renderQueued || isHidden()) return;
  if (!urgent) {
    if (liveTimer) return;
    const interval = Math.min(LIVE_MAX_INTERVAL_MS, Math.max(LIVE_MIN_INTERVAL_MS, frameCost / LIVE_COST_SHARE));
    const wait = lastRender + interval - performance.now();
    if (wait > 0) {
      liveTimer = setTimeout(() => {
        liveTimer = null;
        requestRender(true);
      }, wait);
      return;
    }
  }
  // The user's action (or a live redraw whose turn came) takes the next frame.
  if (liveTimer) {
    clearTimeout(liveTimer);
    liveTimer = null;
  }
  renderQueued = true;
  requestAnimationFrame(render);
}

/**
 * Measures the frame begun at t0 (in a requestAnimationFrame callback): a task posted now runs
 * once the browser has painted and committed it, canvas raster included.
 */
const frameEnd = new MessageChannel();
let frameStart = -1;
frameEnd.port1.onmessage = () => {
  if (frameStart < 0) return;
  const ms = performance.now() - frameStart;
  frameStart = -1;
  timings.frameMs = ms;
  frameCost = frameCost ? 0.7 * frameCost + 0.3 * ms : ms;
  if (idle()) settled();
};

function measureFrame(t0: number): void {
  if (frameStart >= 0) return; // one at a time
  frameStart = t0;
  frameEnd.port2.postMessage(null);
}

function render(): void {
  renderQueued = false;
  if (isHidden()) {
    settled();
    return;
  }
  const t0 = performance.now();
  lastRender = t0;
  chart.options.scales!.x!.min = view.x0;
  chart.options.scales!.x!.max = view.x1;
  chart.options.scales!.y!.min = view.y0;
  chart.options.scales!.y!.max = view.y1;
  const unit = timeUnit(view.x1 - view.x0);
  (chart.options.scales!.x as { title: { text: string } }).title.text = `time since first fault (${unit.name})`;
  chart.update('none');
  drawOverview();
  drawnVersion = store.version;
  if (sideVersion !== store.version) drawSideWhenDue(t0);
  timings.renderMs = performance.now() - t0;
  timings.renders++;
  measureFrame(t0);
  if (idle()) settled();
}

/**
 * Side panels follow the data at most every SIDE_MIN_INTERVAL_MS (small sessions at once): with
 * the chart's next redraw, or in a frame of their own when no redraw of the chart is coming.
 */
function drawSideWhenDue(now: number): void {
  const wait = store.n < 5000 ? 0 : lastSide + Math.max(SIDE_MIN_INTERVAL_MS, sideCost / LIVE_COST_SHARE) - now;
  if (wait <= 0) {
    if (sideTimer) {
      clearTimeout(sideTimer);
      sideTimer = null;
    }
    drawSide();
  } else if (!sideTimer) {
    sideTimer = setTimeout(() => {
      sideTimer = null;
      // A redraw of the chart on its way draws them too: one frame (and one commit) for both.
      if (isHidden() || sideVersion === store.version || liveTimer || renderQueued) {
        if (idle()) settled();
        return;
      }
      sideQueued = true;
      requestAnimationFrame(() => {
        sideQueued = false;
        if (!isHidden() && sideVersion !== store.version) {
          const t0 = performance.now();
          drawSide();
          measureFrame(t0);
        }
        if (idle()) settled();
      });
    }, wait);
  }
}

function drawSide(): void {
  sideVersion = store.version;
  lastSide = performance.now();
  timings.sideRenders++;
  updateSide();
  sideCost = performance.now() - lastSide;
}

/** Everything received is drawn (or waits for the panel to be shown): wake frame() waiters. */
function settled(): void {
  if (!frameWaiters.length) return;
  const ws = frameWaiters.splice(0);
  requestAnimationFrame(() => ws.forEach((w) => w()));
}

/** Whether the panel was hidden when last looked at (a page may also start hidden). */
let hiddenNow = document.visibilityState === 'hidden';

/** Hidden: stop drawing (the store keeps taking events); shown again: draw what arrived meanwhile. */
function visibilityChanged(): void {
  const h = isHidden();
  if (h === hiddenNow) return;
  hiddenNow = h;
  if (!h) {
    requestRender(true);
    return;
  }
  if (liveTimer) clearTimeout(liveTimer);
  if (sideTimer) clearTimeout(sideTimer);
  liveTimer = sideTimer = null;
  settled();
}

function timeUnit(spanNs: number): { name: string; div: number } {
  if (spanNs < 2e6) return { name: 'µs', div: 1e3 };
  if (spanNs < 2e9) return { name: 'ms', div: 1e6 };
  return { name: 's', div: 1e9 };
}

function fmtNs(ns: number): string {
  if (!Number.isFinite(ns)) return '–';
  if (ns < 1e3) return `${ns.toFixed(0)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 2 : 1)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(ns < 1e7 ? 2 : 1)} ms`;
  return `${(ns / 1e9).toFixed(3)} s`;
}

/** A wait: whole ms from 1 ms up. */
function fmtWait(ns: number): string {
  return ns >= 1e6 ? `${Math.round(ns / 1e6).toLocaleString()} ms` : fmtNs(ns);
}

function fmtBytes(b: number): string {
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let k = 0;
  while (b >= 1024 && k < u.length - 1) { b /= 1024; k++; }
  return `${b % 1 ? b.toFixed(1) : b} ${u[k]}`;
}

function shortName(r: number): string {
  const g = store.regions[r];
  if (g.name) return g.name.length > 22 ? '…' + g.name.slice(-21) : g.name;
  return g.via;
}

/** x ticks at round steps of time since the first fault (chart.js would round absolute ns). */
function xTicks(scale: Scale): void {
  const span = scale.max - scale.min;
  const want = Math.max(2, Math.floor((scale.width || 800) / 110));
  const raw = span / want;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const t0 = store.tMin;
  const ticks: Tick[] = [];
  for (let k = Math.ceil((scale.min - t0) / step); t0 + k * step <= scale.max && ticks.length < 100; k++) {
    ticks.push({ value: t0 + k * step });
  }
  scale.ticks = ticks;
}

/** y ticks: band boundaries (grid lines), band centres (labels), page offsets when zoomed in. */
function yTicks(scale: Scale): void {
  const lo = Math.max(0, Math.floor(scale.min));
  const hi = Math.min(store.bands.length, Math.ceil(scale.max));
  const ticks: Tick[] = [];
  const span = scale.max - scale.min;
  // Two-line labels need ~26 px: with many regions in view, label every k-th band.
  const every = Math.max(1, Math.ceil(26 / Math.max(1e-6, (scale.height || 400) / span)));
  for (let b = lo; b <= hi; b++) {
    ticks.push({ value: b });
    if (b < hi && b % every === 0 && b + 0.5 >= scale.min && b + 0.5 <= scale.max) {
      ticks.push({ value: b + 0.5, major: true });
    }
  }
  if (span < 0.6 && store.bands.length) {
    const step = span / 5;
    for (let k = 1; k < 5; k++) {
      const v = scale.min + k * step;
      if (Math.abs(v - Math.floor(v) - 0.5) > step / 2) ticks.push({ value: v, label: 'offset' } as Tick);
    }
  }
  ticks.sort((a, b) => a.value - b.value);
  scale.ticks = ticks;
}

function yLabel(value: number, tick: Tick | undefined): string | string[] {
  const b = Math.floor(value);
  if (b < 0 || b >= store.bands.length) return '';
  const r = store.bands[b];
  const g = store.regions[r];
  if (tick && (tick as { label?: unknown }).label === 'offset') {
    const page = Math.floor((value - b) * g.pages);
    return `+0x${(page * PAGE_SIZE).toString(16)}`;
  }
  if (Math.abs(value - b - 0.5) > 1e-9) return '';
  return [shortName(r), `${g.startHex.replace(/^0x0*/, '0x')} ${fmtBytes(g.end - g.start)}`];
}

// Bin buffers: allocated once for the largest chart area seen (the area's width changes with
// the tick labels' width; reallocating each time would churn the heap).
let cellVal = new Float32Array(0);
let pixels = new Uint32Array(0);
let offscreen: HTMLCanvasElement | null = null;
let imageData: ImageData | null = null;

const PENDING_VAL = 3e30;
const RES_VAL = 2e30;

function ensureOffscreen(w: number, h: number): void {
  if (!offscreen || offscreen.width < w || offscreen.height < h) {
    const prev = offscreen;
    offscreen = document.createElement('canvas');
    offscreen.width = Math.max(w, prev?.width ?? 0);
    offscreen.height = Math.max(h, prev?.height ?? 0);
  }
}

function ensureBuffers(w: number, h: number): void {
  if (cellVal.length < w * h) cellVal = new Float32Array(w * h);
  ensureOffscreen(w, h);
  if (!imageData || imageData.width !== w || imageData.height !== h) {
    imageData = new ImageData(w, h);
    pixels = new Uint32Array(imageData.data.buffer);
  }
}

/** Latency colour steps of the marks in shapes mode; a further step is the pending colour. */
const STEPS = 16;
/** Sprites: a mark for each of 3 kinds × (STEPS + pending), then the held ring of each kind. */
const SPRITE_MARKS = 3 * (STEPS + 1);
const SPRITES = SPRITE_MARKS + 3;
/**
 * Where in its device pixel each kind's centre is put (0: the corner, 0.5: the middle), so its
 * edges fall on pixel edges where they can: the 7 px circle's at a middle, the 6 px square's and
 * the triangle's base at a corner. Held rings share their mark's centre.
 */
const PHASE = [0.5, 0, 0];
const MARK_RAD = 3.5;
const RING_RAD = MARK_RAD + 2.5;
const RING_WIDTH = 1.5;

/** The shape of a mark of kind k (missing, wp, minor) centred on (x, y). */
function markPath(k: number, x: number, y: number): Path2D {
  const p = new Path2D();
  const rad = MARK_RAD;
  if (k === 0) { p.moveTo(x + rad, y); p.arc(x, y, rad, 0, Math.PI * 2); }
  else if (k === 1) p.rect(x - rad + 0.5, y - rad + 0.5, 2 * rad - 1, 2 * rad - 1);
  else { p.moveTo(x, y - rad - 0.5); p.lineTo(x + rad + 0.5, y + rad - 0.5); p.lineTo(x - rad - 0.5, y + rad - 0.5); p.closePath(); }
  return p;
}

/**
 * The marks as the browser rasterised them, as lists of the pixels they cover: sprite s has the
 * pixels start[s] ≤ p < start[s + 1], at (dx[p], dy[p]) from the mark's pixel (the device pixel
 * whose corner or middle, by PHASE, is the mark's centre), coloured px[p] (ImageData's 32-bit
 * RGBA, alpha not premultiplied).
 */
interface MarkSprites {
  /** Device pixels per CSS pixel they were drawn for. */
  scale: number;
  /** The palette they were drawn in (readPalette() makes a new one on every theme change). */
  pal: Palette;
  start: Int32Array;
  dx: Int16Array;
  dy: Int16Array;
  px: Uint32Array;
  /** No pixel lies farther than this from the centre in x or y. */
  reach: number;
}

let sprites: MarkSprites | null = null;

/** The mark sprites for this palette and device pixel ratio, drawn again when either changes. */
function markSprites(scale: number): MarkSprites {
  if (sprites && sprites.pal === pal && sprites.scale === scale) return sprites;
  // Room for the held ring's stroke and its antialiased edge.
  const half = Math.ceil((RING_RAD + RING_WIDTH / 2) * scale) + 1;
  const size = 2 * half + 1;
  const cv = document.createElement('canvas');
  cv.width = size * SPRITES;
  cv.height = size;
  const g = cv.getContext('2d', { willReadFrequently: true })!;
  const at = (cell: number, k: number) =>
    g.setTransform(scale, 0, 0, scale, cell * size + half + PHASE[k], half + PHASE[k]);
  for (let k = 0; k < 3; k++) {
    for (let s = 0; s <= STEPS; s++) {
      at(k * (STEPS + 1) + s, k);
      g.fillStyle = s === STEPS ? css(pal.pending) : pal.ramp[Math.round((s + 0.5) / STEPS * 255)];
      g.fill(markPath(k, 0, 0));
    }
  }
  g.lineWidth = RING_WIDTH;
  g.strokeStyle = css(pal.pending);
  for (let k = 0; k < 3; k++) {
    at(SPRITE_MARKS + k, k);
    g.beginPath();
    g.arc(0, 0, RING_RAD, 0, Math.PI * 2);
    g.stroke();
  }
  const data = new Uint32Array(g.getImageData(0, 0, cv.width, size).data.buffer);
  const start = new Int32Array(SPRITES + 1);
  const dx: number[] = [];
  const dy: number[] = [];
  const px: number[] = [];
  for (let s = 0; s < SPRITES; s++) {
    start[s] = px.length;
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const v = data[y * cv.width + s * size + x];
        if (v >>> 24) { dx.push(x - half); dy.push(y - half); px.push(v); }
      }
    }
  }
  start[SPRITES] = px.length;
  sprites = { scale, pal, start, dx: Int16Array.from(dx), dy: Int16Array.from(dy), px: Uint32Array.from(px), reach: half };
  return sprites;
}

/**
 * Draws sprite s with its mark's pixel at (cx, cy) in a w × h layer (rows `stride` pixels
 * apart), source over what is there, in ImageData's not-premultiplied colours.
 */
function stamp(buf: Uint32Array, stride: number, w: number, h: number, sp: MarkSprites, s: number, cx: number,
  cy: number): void {
  const { dx, dy, px, reach } = sp;
  const inside = cx >= reach && cy >= reach && cx < w - reach && cy < h - reach;
  for (let p = sp.start[s], end = sp.start[s + 1]; p < end; p++) {
    const x = cx + dx[p];
    const y = cy + dy[p];
    if (!inside && (x < 0 || y < 0 || x >= w || y >= h)) continue;
    const o = y * stride + x;
    const c = px[p];
    const sa = c >>> 24;
    const d = buf[o];
    const da = d >>> 24;
    if (sa === 255 || da === 0) {
      buf[o] = c;
      continue;
    }
    // Weights ×255: the source's alpha, and what of the destination shows through it.
    const ws = sa * 255;
    const wd = da * (255 - sa);
    const wa = ws + wd;
    const r = (((c & 255) * ws + (d & 255) * wd) / wa + 0.5) | 0;
    const g = ((((c >>> 8) & 255) * ws + ((d >>> 8) & 255) * wd) / wa + 0.5) | 0;
    const b = ((((c >>> 16) & 255) * ws + ((d >>> 16) & 255) * wd) / wa + 0.5) | 0;
    buf[o] = ((Math.round(wa / 255) << 24) | (b << 16) | (g << 8) | r) >>> 0;
  }
}

/**
 * Adds an axis-aligned rectangle (device pixels) to a w × h layer that holds only lines of one
 * colour (rgb; `alpha` 0..255 where fully covered): a stroked line with butt caps is this
 * rectangle. Each pixel's alpha is the share of it the rectangle covers, as the canvas antialiases;
 * where lines overlap the larger share wins, as one stroked path draws overlaps once.
 */
function lineRect(buf: Uint32Array, stride: number, w: number, h: number, x0: number, x1: number, y0: number,
  y1: number, rgb: number, alpha: number): void {
  const xa = Math.max(0, Math.min(x0, x1));
  const xb = Math.min(w, Math.max(x0, x1));
  const ya = Math.max(0, y0);
  const yb = Math.min(h, y1);
  if (!(xb > xa && yb > ya)) return;
  for (let py = Math.floor(ya); py < yb; py++) {
    const cy = Math.min(py + 1, yb) - Math.max(py, ya);
    for (let px = Math.floor(xa); px < xb; px++) {
      const a = Math.round(alpha * cy * (Math.min(px + 1, xb) - Math.max(px, xa)));
      const o = py * stride + px;
      if (a > buf[o] >>> 24) buf[o] = ((a << 24) | rgb) >>> 0;
    }
  }
}

// Shapes mode: each mark in view (its pixel, its sprite), the order they are drawn in,
// the held ones; and the layer they are stamped into. Grown, never shrunk, like the bin buffers.
let markX = new Int32Array(0);
let markY = new Int32Array(0);
let markS = new Uint8Array(0);
let markOrder = new Int32Array(0);
let ringAt = new Int32Array(0);
let layer: ImageData | null = null;
let layerPx = new Uint32Array(0);

function ensureMarkBuffers(n: number, w: number, h: number): void {
  if (markX.length < n) {
    markX = new Int32Array(n);
    markY = new Int32Array(n);
    markS = new Uint8Array(n);
    markOrder = new Int32Array(n);
    ringAt = new Int32Array(n);
  }
  if (!layer || layer.width < w || layer.height < h) {
    layer = new ImageData(Math.max(w, layer?.width ?? 0), Math.max(h, layer?.height ?? 0));
    layerPx = new Uint32Array(layer.data.buffer);
  }
  ensureOffscreen(w, h);
}

const faultsPlugin: Plugin<'scatter'> = {
  id: 'faults',
  beforeDatasetsDraw(c) {
    // Alternate band shading so neighbouring regions read as separate lanes.
    const { ctx, chartArea: a } = c;
    const ys = c.scales.y;
    ctx.save();
    ctx.beginPath();
    ctx.rect(a.left, a.top, a.right - a.left, a.bottom - a.top);
    ctx.clip();
    ctx.fillStyle = css(pal.fg, 0.04);
    for (let b = Math.max(0, Math.floor(view.y0)); b < Math.min(store.bands.length, Math.ceil(view.y1)); b++) {
      if (b % 2) continue;
      const y0 = ys.getPixelForValue(b);
      const y1 = ys.getPixelForValue(b + 1);
      ctx.fillRect(a.left, Math.min(y0, y1), a.right - a.left, Math.abs(y1 - y0));
    }
    ctx.restore();
  },
  afterDatasetsDraw(c) {
    const t0 = performance.now();
    drawFaults(c);
    timings.binMs = performance.now() - t0;
  },
};

function drawFaults(c: Chart<'scatter'>): void {
  const { ctx, chartArea: a } = c;
  const dpr = c.currentDevicePixelRatio || 1;
  const xs = c.scales.x;
  const ys = c.scales.y;
  const { x0, x1, y0, y1 } = { x0: xs.min, x1: xs.max, y0: ys.min, y1: ys.max };
  const i0 = store.lowerBound(x0);
  const i1 = store.upperBound(x1);
  drawn.missing = drawn.wp = drawn.minor = drawn.resolutions = drawn.nc = drawn.held = drawn.stuck = 0;
  drawn.visible = i1 - i0;
  const T = store.t, Y = store.ycol, K = store.kind, F = store.flags, L = store.lat;
  const counts = [0, 0, 0];
  ctx.save();
  ctx.beginPath();
  ctx.rect(a.left, a.top, a.right - a.left, a.bottom - a.top);
  ctx.clip();
  if (i1 - i0 <= SHAPES_MAX) {
    drawn.mode = 'shapes';
    const W = a.right - a.left;
    const H = a.bottom - a.top;
    const sx = W / (x1 - x0);
    const sy = H / (y1 - y0);
    // Marks are stamped from sprites into one image in device pixels, each at the pixel nearest
    // its place (see PHASE), resolution lines drawn under them: with software rendering, filling
    // a path per colour of thousands of small shapes cost 70–100 ms a frame at 15k–20k marks,
    // stroking one line per fault as much again, and one drawImage per mark ~5 µs of JS each.
    const m = ctx.getTransform();
    const sp = markSprites(m.a);
    const ox = Math.floor(a.left * m.a + m.e);
    const oy = Math.floor(a.top * m.d + m.f);
    const lw = Math.max(1, Math.ceil(a.right * m.a + m.e) - ox);
    const lh = Math.max(1, Math.ceil(a.bottom * m.d + m.f) - oy);
    ensureMarkBuffers(i1 - i0, lw, lh);
    const stride = layer!.width;
    const buf = layerPx;
    buf.fill(0, 0, lh * stride);
    const lineRgb = (pal.resolved.b << 16) | (pal.resolved.g << 8) | pal.resolved.r;
    const lineAlpha = 255 * pal.resolved.a * 0.8;
    // Resolution lines are 1.5 px wide; the tick at the resolution reaches MARK_RAD + 1.5 px up
    // and down (chart.js scales x and y alike).
    const lineHalf = 0.75 * m.a;
    const tickHalf = (MARK_RAD + 1.5) * m.d;
    let nm = 0;
    let nr = 0;
    for (let i = i0; i < i1; i++) {
      const yv = Y[i];
      if (!(yv >= y0 && yv <= y1)) continue; // NaN: hidden band
      const x = a.left + (T[i] - x0) * sx;
      const y = a.top + (yv - y0) * sy;
      const k = K[i];
      counts[k]++;
      const l = L[i];
      const step = Number.isNaN(l) ? STEPS : Math.min(STEPS - 1, Math.floor(latencyIndex(l) / 256 * STEPS));
      const ph = PHASE[k];
      const mx = Math.floor(x * m.a + m.e + 0.5 - ph) - ox;
      const my = Math.floor(y * m.d + m.f + 0.5 - ph) - oy;
      markX[nm] = mx;
      markY[nm] = my;
      markS[nm] = k * (STEPS + 1) + step;
      const f = F[i];
      if ((f & FLAG_HELD) && Number.isNaN(l)) {
        drawn.held++;
        ringAt[nr++] = nm;
      } else if (f & FLAG_RESOLVED) {
        // A resolution that came later (a held fault, or the handler's in observe mode): a line to it.
        // From the mark's edge where the mark is placed, so they meet.
        const xr = (a.left + (store.resolvedT(i) - x0) * sx) * m.a + m.e - ox;
        const cy = my + ph;
        drawn.resolutions++;
        lineRect(buf, stride, lw, lh, mx + ph + MARK_RAD * m.a, xr, cy - lineHalf, cy + lineHalf, lineRgb, lineAlpha);
        lineRect(buf, stride, lw, lh, xr - lineHalf, xr + lineHalf, cy - tickHalf, cy + tickHalf, lineRgb, lineAlpha);
      }
      nm++;
    }
    // Stacked as when each (kind, colour step) was one filled path: kinds in order, within a
    // kind the slower colours over the faster, pending on top (a counting sort by sprite).
    const first = new Int32Array(SPRITE_MARKS + 1);
    for (let j = 0; j < nm; j++) first[markS[j] + 1]++;
    for (let b = 0; b < SPRITE_MARKS; b++) first[b + 1] += first[b];
    for (let j = 0; j < nm; j++) markOrder[first[markS[j]]++] = j;
    for (let q = 0; q < nm; q++) {
      const j = markOrder[q];
      stamp(buf, stride, lw, lh, sp, markS[j], markX[j], markY[j]);
    }
    for (let q = 0; q < nr; q++) {
      const j = ringAt[q];
      stamp(buf, stride, lw, lh, sp, SPRITE_MARKS + Math.floor(markS[j] / (STEPS + 1)), markX[j], markY[j]);
    }
    offscreen!.getContext('2d')!.putImageData(layer!, 0, 0, 0, 0, lw, lh);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(offscreen!, 0, 0, lw, lh, ox, oy, lw, lh);
    ctx.setTransform(m);
  } else {
    drawn.mode = 'image';
    const W = Math.max(1, Math.floor((a.right - a.left) * dpr / CELL));
    const H = Math.max(1, Math.floor((a.bottom - a.top) * dpr / CELL));
    ensureBuffers(W, H);
    const cv = cellVal;
    cv.fill(0, 0, W * H);
    const sx = W / (x1 - x0);
    const sy = H / (y1 - y0);
    for (let i = i0; i < i1; i++) {
      const py = Math.floor((Y[i] - y0) * sy);
      if (!(py >= 0 && py < H)) continue; // NaN: hidden band
      let px = Math.floor((T[i] - x0) * sx);
      if (px >= W) px = W - 1;
      counts[K[i]]++;
      const cell = py * W + px;
      const l = L[i];
      let v: number;
      if (Number.isNaN(l)) {
        // Not resolved (yet): held by the debugger, or waiting for the program's own handler.
        v = PENDING_VAL;
        if (F[i] & FLAG_HELD) drawn.held++;
      } else v = l + 1;
      if (v > cv[cell]) cv[cell] = v;
      const rt = F[i] & FLAG_RESOLVED ? store.resolvedT(i) : NaN;
      if (rt <= x1) {
        const rc = py * W + Math.min(W - 1, Math.floor((rt - x0) * sx));
        // Observed resolutions within the fault's own cell would hide its latency colour.
        if (rc !== cell || (F[i] & FLAG_HELD)) {
          drawn.resolutions++;
          if (cv[rc] < RES_VAL) cv[rc] = RES_VAL;
        }
      }
    }
    const px = pixels;
    const ramp = pal.rampPx;
    for (let k = 0; k < W * H; k++) {
      const v = cv[k];
      px[k] = v === 0 ? 0 : v === PENDING_VAL ? pal.pendingPx : v === RES_VAL ? pal.resolvedPx
        : ramp[latencyIndex(v - 1)];
    }
    const octx = offscreen!.getContext('2d')!;
    octx.putImageData(imageData!, 0, 0);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(offscreen!, 0, 0, W, H, a.left, a.top, (W * CELL) / dpr, (H * CELL) / dpr);
  }
  drawn.missing = counts[0];
  drawn.wp = counts[1];
  drawn.minor = counts[2];
  drawStuck(ctx, c);
  // Non-cooperative events cut across every lane.
  ctx.font = `11px ${pal.font}`;
  ctx.textBaseline = 'top';
  ctx.setLineDash([4, 3]);
  ctx.strokeStyle = css(pal.nc);
  ctx.fillStyle = css(pal.nc);
  ctx.lineWidth = 1.5;
  for (const m of store.nc) {
    if (m.t < x0 || m.t > x1) continue;
    drawn.nc++;
    const x = xs.getPixelForValue(m.t);
    ctx.beginPath();
    ctx.moveTo(x, a.top);
    ctx.lineTo(x, a.bottom);
    ctx.stroke();
    ctx.fillText(m.what, x + 3, a.top + 2);
  }
  ctx.setLineDash([]);
  // Selection: ring plus a faint crosshair.
  if (selected >= 0 && selected < store.n) {
    const i = selected;
    const x = xs.getPixelForValue(store.t[i]);
    const y = ys.getPixelForValue(store.y(i));
    ctx.strokeStyle = css(pal.focus);
    ctx.lineWidth = 1;
    ctx.globalAlpha = 0.5;
    ctx.beginPath();
    ctx.moveTo(x, a.top); ctx.lineTo(x, a.bottom);
    ctx.moveTo(a.left, y); ctx.lineTo(a.right, y);
    ctx.stroke();
    ctx.globalAlpha = 1;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.arc(x, y, 8, 0, Math.PI * 2);
    ctx.stroke();
  }
  ctx.restore();
}

/**
 * Stuck faults (observe mode: read by the handler, not resolved in time): a red halo and ring on
 * the mark, the wait drawn as a line to when it was reported, and a label. Few per session, drawn
 * over the marks in either mode. A stuck fault resolved later keeps a dashed ring.
 */
function drawStuck(ctx: CanvasRenderingContext2D, c: Chart<'scatter'>): void {
  if (!store.stuck.size) return;
  const xs = c.scales.x;
  const ys = c.scales.y;
  ctx.font = `bold 11px ${pal.font}`;
  ctx.textBaseline = 'middle';
  for (const m of store.stuck.values()) {
    const i = store.indexOfSeq(m.ev.seq);
    if (i < 0) continue;
    const t = store.t[i];
    const yv = store.y(i);
    if (!(t >= view.x0 && t <= view.x1 && yv >= view.y0 && yv <= view.y1)) continue;
    drawn.stuck++;
    const x = xs.getPixelForValue(t);
    const y = ys.getPixelForValue(yv);
    const end = m.resolved ? store.resolvedT(i) : Math.max(m.ev.t, t);
    const xe = Math.min(c.chartArea.right, xs.getPixelForValue(end));
    ctx.fillStyle = css(pal.stuck, 0.22);
    ctx.beginPath();
    ctx.arc(x, y, 14, 0, Math.PI * 2);
    ctx.fill();
    ctx.strokeStyle = css(pal.stuck);
    ctx.lineWidth = 2.5;
    ctx.setLineDash(m.resolved ? [3, 2] : []);
    ctx.beginPath();
    ctx.arc(x, y, 10, 0, Math.PI * 2);
    ctx.stroke();
    ctx.lineWidth = 1.5;
    ctx.setLineDash([2, 2]);
    if (xe > x + 10) {
      ctx.beginPath();
      ctx.moveTo(x + 10, y);
      ctx.lineTo(xe, y);
      ctx.moveTo(xe, y - 6);
      ctx.lineTo(xe, y + 6);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    const label = m.resolved ? `was stuck ${fmtWait(m.ev.waitedNs)}` : `stuck ${fmtWait(m.ev.waitedNs)}`;
    // On the editor background, so marks under it do not hide it.
    const w = ctx.measureText(label).width;
    ctx.fillStyle = css(pal.bg, 0.85);
    ctx.fillRect(x + 13, y - 20, w + 6, 16);
    ctx.fillStyle = css(pal.stuck);
    ctx.fillText(label, x + 16, y - 12);
  }
}

// ---------------------------------------------------------------- overview strip

let ovCounts = new Float64Array(0);
let ovVersion = -1;
let ovKey = '';

function drawOverview(): void {
  const cv = $<HTMLCanvasElement>('overview');
  const box = cv.parentElement!;
  const dpr = window.devicePixelRatio || 1;
  const wCss = box.clientWidth;
  const hCss = box.clientHeight;
  if (cv.width !== Math.round(wCss * dpr) || cv.height !== Math.round(hCss * dpr)) {
    cv.width = Math.round(wCss * dpr);
    cv.height = Math.round(hCss * dpr);
    cv.style.width = `${wCss}px`;
    cv.style.height = `${hCss}px`;
  }
  const ctx = cv.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, wCss, hCss);
  const a = chart.chartArea;
  const left = a.left;
  const w = Math.max(1, Math.floor(a.right - a.left));
  const t0 = store.tMin;
  const t1 = Math.max(store.tMax, t0 + 1);
  const key = `${w}`;
  if (ovVersion !== store.version || key !== ovKey) {
    ovVersion = store.version;
    ovKey = key;
    ovCounts = new Float64Array(w);
    const s = w / (t1 - t0);
    for (let i = 0; i < store.n; i++) ovCounts[Math.min(w - 1, Math.floor((store.t[i] - t0) * s))]++;
  }
  let max = 1;
  for (let k = 0; k < w; k++) if (ovCounts[k] > max) max = ovCounts[k];
  ctx.fillStyle = css(pal.fg, 0.06);
  ctx.fillRect(left, 0, w, hCss);
  ctx.fillStyle = css(pal.muted, 0.9);
  const lm = Math.log1p(max);
  for (let k = 0; k < w; k++) {
    if (!ovCounts[k]) continue;
    const h = Math.max(1, (Math.log1p(ovCounts[k]) / lm) * (hCss - 4));
    ctx.fillRect(left + k, hCss - h, 1, h);
  }
  ctx.fillStyle = css(pal.nc);
  for (const m of store.nc) ctx.fillRect(left + ((m.t - t0) / (t1 - t0)) * w, 0, 1, hCss);
  // Stuck faults: a red tick where each was read.
  ctx.fillStyle = css(pal.stuck);
  for (const m of store.stuck.values()) {
    const i = store.indexOfSeq(m.ev.seq);
    if (i >= 0) ctx.fillRect(left + ((store.t[i] - t0) / (t1 - t0)) * w - 1, 0, 3, hCss);
  }
  if (store.n) {
    const vx0 = left + ((view.x0 - t0) / (t1 - t0)) * w;
    const vx1 = left + ((view.x1 - t0) / (t1 - t0)) * w;
    const xa = Math.max(left, Math.min(left + w, vx0));
    const xb = Math.max(xa + 2, Math.min(left + w, vx1));
    ctx.fillStyle = css(pal.focus, 0.18);
    ctx.fillRect(xa, 0, xb - xa, hCss);
    ctx.strokeStyle = css(pal.focus);
    ctx.lineWidth = 1.5;
    ctx.strokeRect(xa + 0.75, 0.75, xb - xa - 1.5, hCss - 1.5);
  }
  ctx.fillStyle = css(pal.fg, 0.8);
  ctx.font = `10px ${pal.font}`;
  ctx.textBaseline = 'middle';
  ctx.textAlign = 'right';
  ctx.fillText('whole session', left - 6, hCss / 2);
  ctx.textAlign = 'left';
}

function overviewToTime(clientX: number): number {
  const cv = $<HTMLCanvasElement>('overview');
  const a = chart.chartArea;
  const x = clientX - cv.getBoundingClientRect().left;
  const t0 = store.tMin;
  const t1 = Math.max(store.tMax, t0 + 1);
  return t0 + ((x - a.left) / (a.right - a.left)) * (t1 - t0);
}

// ---------------------------------------------------------------- side panels

let hist: Chart<'bar'>;
let threads: Chart<'bar'>;

function histLabel(b: number): string {
  if (b === 0) return '<1µs';
  const us = 2 ** (b - 1);
  const two = (x: number) => (x >= 100 ? String(Math.round(x)) : x.toPrecision(2));
  if (us >= 1e6) return `${two(us / 1e6)}s`;
  return us >= 1000 ? `${two(us / 1000)}ms` : `${us}µs`;
}

function makeSideCharts(): void {
  const common = {
    animation: false as const, responsive: true, maintainAspectRatio: false, events: [] as never[],
    plugins: { legend: { display: false }, tooltip: { enabled: false } },
  };
  hist = new Chart($<HTMLCanvasElement>('hist'), {
    type: 'bar',
    data: { labels: Array.from({ length: HIST_BUCKETS }, (_, b) => histLabel(b)),
      datasets: [{ data: Array.from(store.hist), borderWidth: 0,
        backgroundColor: (c) => pal.ramp[latencyIndex(c.dataIndex === 0 ? 500 : 2 ** (c.dataIndex - 1) * 1400)] }] },
    options: { ...common, scales: {
      x: { title: { display: true, text: 'latency (log2 buckets)' }, ticks: { maxRotation: 0, autoSkipPadding: 6 },
        grid: { display: false } },
      y: { type: 'linear', title: { display: true, text: 'faults' }, beginAtZero: true, ticks: { precision: 0 } },
    } },
  });
  threads = new Chart($<HTMLCanvasElement>('threads'), {
    type: 'bar',
    data: { labels: [], datasets: [{ data: [], borderWidth: 0, backgroundColor: () => css(pal.muted) }] },
    options: { ...common, indexAxis: 'y', scales: {
      x: { type: 'linear', title: { display: true, text: 'blocked (ms, sum of latencies)' }, beginAtZero: true },
      y: { grid: { display: false } },
    } },
  });
}

function styleCharts(): void {
  Chart.defaults.color = css(pal.fg, 0.9);
  Chart.defaults.borderColor = pal.grid;
  Chart.defaults.font.family = pal.font;
  Chart.defaults.font.size = 11;
  for (const c of [chart, hist, threads] as Chart[]) {
    if (!c) continue;
    for (const s of Object.values(c.options.scales ?? {})) {
      if (!s) continue;
      const sc = s as { ticks?: { color?: unknown }; title?: { color?: unknown }; grid?: { color?: unknown } };
      if (sc.ticks) sc.ticks.color = css(pal.fg, 0.9);
      if (sc.title) sc.title.color = css(pal.fg);
    }
  }
}

function updateSide(): void {
  hist.data.datasets[0].data = Array.from(store.hist);
  hist.update('none');
  const top = [...store.blocked.entries()].sort((a, b) => b[1] - a[1]).slice(0, 12);
  threads.data.labels = top.map(([tid]) => `tid ${tid}`);
  threads.data.datasets[0].data = top.map(([, ns]) => ns / 1e6);
  threads.update('none');
  drawPageMap();
  updateRates();
  saveState();
}

function updateRates(): void {
  const tMax = store.n ? store.t[store.n - 1] : 0;
  const from = store.lowerBound(tMax - 1e9);
  const c = [0, 0, 0];
  for (let i = from; i < store.n; i++) c[store.kind[i]]++;
  const span = store.n ? Math.min(1e9, Math.max(tMax - store.t[from], 1)) / 1e9 : 1;
  const rate = (k: number) => Math.round(c[k] / Math.max(span, 1e-3)).toLocaleString();
  const stuck = store.stuckOpen;
  $('rates').textContent = `faults/s: missing ${rate(0)} · wp ${rate(1)} · minor ${rate(2)}  |  ` +
    `pending ${store.pending.size}${stuck ? `  |  stuck ${stuck}` : ''}  |  ${store.n.toLocaleString()} faults`;
}

// ---------------------------------------------------------------- page map

interface PmLayout { r: number; top: number; cell: number; cols: number; per: number; rows: number }
let pmLayout: PmLayout[] = [];

function drawPageMap(): void {
  const cv = $<HTMLCanvasElement>('pagemap');
  const box = cv.parentElement!;
  const dpr = window.devicePixelRatio || 1;
  const w = Math.max(100, box.clientWidth - 2);
  const LABEL = 16;
  pmLayout = [];
  let y = 0;
  for (const r of store.bands) {
    const g = store.regions[r];
    const n = g.state.length;
    let cell = 8;
    while (cell > 2 && Math.ceil(n / Math.floor(w / cell)) > 10) cell -= 2;
    const cols = Math.floor(w / cell);
    const per = Math.max(1, Math.ceil(n / (cols * 24)));
    const rows = Math.max(1, Math.ceil(n / per / cols));
    pmLayout.push({ r, top: y + LABEL, cell, cols, per, rows });
    y += LABEL + rows * cell + 6;
  }
  const h = Math.max(20, y);
  // Resizing a canvas reallocates it: only when the size changed.
  if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
    cv.width = Math.round(w * dpr);
    cv.height = Math.round(h * dpr);
    cv.style.width = `${w}px`;
    cv.style.height = `${h}px`;
  }
  const ctx = cv.getContext('2d')!;
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = `11px ${pal.font}`;
  ctx.textBaseline = 'top';
  const fills = pal.states.map((c) => css(c));
  for (const L of pmLayout) {
    const g = store.regions[L.r];
    ctx.fillStyle = css(pal.fg, 0.9);
    const pagesTxt = g.pages > g.state.length ? `${g.pages} pages, first ${g.state.length} shown` : `${g.pages} pages`;
    ctx.fillText(`${g.name || g.via}  ${g.startHex}–${g.endHex}  (${pagesTxt}${L.per > 1 ? `, ${L.per}/cell` : ''})`,
      0, L.top - LABEL + 2);
    const st = g.state;
    const gap = L.cell >= 6 ? 1 : 0;
    const ncell = Math.ceil(st.length / L.per);
    const cellState = new Uint8Array(ncell);
    const present = new Uint8Array(fills.length);
    cellStates(st, L.per, cellState, present);
    // One colour at a time: setting fillStyle parses the colour, thousands of times otherwise.
    for (let s = 0; s < fills.length; s++) {
      if (!present[s]) continue;
      ctx.fillStyle = fills[s];
      for (let c = 0; c < ncell; c++) {
        if (cellState[c] === s) ctx.fillRect((c % L.cols) * L.cell, L.top + Math.floor(c / L.cols) * L.cell, L.cell - gap, L.cell - gap);
      }
    }
  }
}

/** A cell covering several pages shows the most eventful state among them. */
const STATE_PRIO = Uint8Array.from([0, 8, 2, 3, 4, 5, 6, 7, 1]);

/**
 * The state each page-map cell shows, and which states occur. Its own function: inside
 * drawPageMap this loop over up to millions of pages ran as on-stack-replaced code that V8
 * discarded at the end of every call (seen with --trace-deopt), so mostly unoptimized.
 */
function cellStates(st: Uint8Array, per: number, out: Uint8Array, present: Uint8Array): void {
  const n = st.length;
  for (let c = 0, p0 = 0; p0 < n; c++, p0 += per) {
    let s = st[p0];
    const end = Math.min(n, p0 + per);
    for (let p = p0 + 1; p < end; p++) if (STATE_PRIO[st[p]] > STATE_PRIO[s]) s = st[p];
    out[c] = s;
    present[s] = 1;
  }
}

function buildPageMapLegend(): void {
  const el = $('pagemap-legend');
  el.textContent = '';
  PAGE_STATES.forEach((s, k) => {
    const item = document.createElement('span');
    item.className = 'lg';
    const sw = document.createElement('span');
    sw.className = 'swatch';
    sw.style.backgroundColor = css(pal.states[k]);
    item.append(sw, document.createTextNode(` ${s}`));
    el.append(item);
  });
}

// ---------------------------------------------------------------- selection, details

function regionText(i: number): string {
  const g = store.regions[store.region[i]];
  return `${g.name || '(anonymous)'} ${g.startHex}–${g.endHex} via ${g.via}`;
}

function showDetails(): void {
  const dl = $('details');
  dl.textContent = '';
  const row = (k: string, v: string) => {
    const dt = document.createElement('dt');
    dt.textContent = k;
    const dd = document.createElement('dd');
    dd.textContent = v;
    dl.append(dt, dd);
  };
  if (selected < 0 || selected >= store.n) {
    row('none selected', 'click a fault, or use ← →');
    return;
  }
  const i = selected;
  const held = (store.flags[i] & FLAG_HELD) !== 0;
  const pending = held && Number.isNaN(store.lat[i]);
  // Observe mode: read by the program's handler, its resolution not seen (yet).
  const waiting = !held && Number.isNaN(store.lat[i]) && !store.ioctl[i];
  const stuck = store.stuckOf(i);
  if (stuck) {
    row('stuck', stuck.resolved
      ? `read by the handler, waited ${fmtWait(stuck.ev.waitedNs)} when reported, resolved later`
      : `read by the handler, never resolved, waited ${fmtWait(stuck.ev.waitedNs)}`);
  }
  row('seq', String(store.seq[i]));
  row('time', `${fmtNs(store.t[i] - store.tMin)} after first fault (t=${store.t[i]} ns)`);
  row('address', numToHex(store.addr[i]));
  row('page', numToHex(store.pageAt(i)));
  row('region (VMA)', regionText(i));
  row('thread', store.pid[i] ? `tid ${store.tid[i]} in followed child ${store.pid[i]}` : `tid ${store.tid[i]}`);
  row('kind', store.kindName(i));
  row('access', store.flags[i] & FLAG_WRITE ? 'write' : 'read');
  row('held', pending ? 'yes — pending' : held ? 'yes — resolved' : 'no');
  row('resolution', store.ioctlNames[store.ioctl[i]] || (pending ? 'pending' : waiting ? 'not resolved (yet) by the handler' : '–'));
  const rt = store.resolvedT(i);
  if (!Number.isNaN(rt)) row('resolved at', `${fmtNs(rt - store.tMin)} after first fault`);
  row('latency', fmtNs(store.lat[i]));
}

function select(i: number, reveal: boolean): void {
  if (i < 0 || i >= store.n) return;
  restored = null;
  selected = i;
  showDetails();
  if (reveal) {
    // Keep the selection in view: pan, do not zoom.
    const t = store.t[i];
    const span = view.x1 - view.x0;
    if (t < view.x0 || t > view.x1) { view.x0 = t - span / 2; view.x1 = t + span / 2; view.mode = 'fixed'; }
    const y = store.y(i);
    const ys = view.y1 - view.y0;
    if (y < view.y0 || y > view.y1) { view.y0 = y - ys / 2; view.y1 = y + ys / 2; view.mode = 'fixed'; }
  }
  if ((store.flags[i] & FLAG_HELD) && Number.isNaN(store.lat[i])) {
    post({ type: 'selectThread', tid: store.tid[i], seq: store.seq[i] });
  }
  saveState();
  requestRender(true);
}

/** Nearest fault within 8 px of a point in the chart (CSS px relative to the canvas). */
function hitTest(px: number, py: number): number {
  const xs = chart.scales.x;
  const ys = chart.scales.y;
  const R = 8;
  const ta = xs.getValueForPixel(px - R)!;
  const tb = xs.getValueForPixel(px + R)!;
  const i0 = store.lowerBound(Math.min(ta, tb));
  const i1 = Math.min(store.upperBound(Math.max(ta, tb)), i0 + 500000);
  let best = -1;
  let bd = R * R;
  for (let i = i0; i < i1; i++) {
    if (Number.isNaN(store.ycol[i])) continue;
    const dx = xs.getPixelForValue(store.t[i]) - px;
    const dy = ys.getPixelForValue(store.y(i)) - py;
    const d = dx * dx + dy * dy;
    if (d <= bd) { bd = d; best = i; }
  }
  return best;
}

// ---------------------------------------------------------------- state

let saveTimer: ReturnType<typeof setTimeout> | undefined;

interface SavedState {
  v: 1;
  view: typeof view;
  sel: number | null;
  snapshot?: string;
}

const snapshot = { version: -1, csv: '' };

function saveState(): void {
  if (saveTimer) return;
  saveTimer = setTimeout(() => {
    saveTimer = undefined;
    const s: SavedState = { v: 1, view: { ...view }, sel: selected >= 0 ? store.seq[selected] : null };
    if (store.n > 0 && store.n <= SNAPSHOT_MAX) {
      // Exported again only when the events changed, not for every view change.
      if (snapshot.version !== store.version) Object.assign(snapshot, { version: store.version, csv: exportCsv(store) });
      s.snapshot = snapshot.csv;
    }
    vscode.setState(s);
  }, 300);
}

/** What the state held at start, until the user moves the view or selects: a reset followed by
 * the extension re-sending the events keeps this view and selection. */
let restored: { sel?: number } | null = null;

function restoreState(): void {
  const s = vscode.getState() as Partial<SavedState> | null | undefined;
  if (!s || s.v !== 1) return;
  restored = { sel: typeof s.sel === 'number' ? s.sel : undefined };
  if (typeof s.snapshot === 'string') {
    try { store.append(importCsv(s.snapshot).events); } catch (e) { warn(`state snapshot unreadable: ${(e as Error).message}`); }
  }
  if (s.view && [s.view.x0, s.view.x1, s.view.y0, s.view.y1].every(Number.isFinite) && s.view.x1 > s.view.x0 &&
      s.view.y1 > s.view.y0) {
    Object.assign(view, s.view);
  } else if (store.n) fit();
  seenTMax = store.tMax;
  seenBands = store.bands.length;
  if (typeof s.sel === 'number') {
    const i = store.indexOfSeq(s.sel);
    if (i >= 0) { selected = i; showDetails(); }
  }
}

// ---------------------------------------------------------------- theme, status

function applyTheme(): void {
  pal = readPalette();
  styleCharts();
  buildPageMapLegend();
  chart.update('none');
  hist.update('none');
  threads.update('none');
  drawPageMap();
  requestRender(true);
}

function status(text: string): void {
  $('status').textContent = text;
}

// ---------------------------------------------------------------- setup

function setupChart(): void {
  const canvas = $<HTMLCanvasElement>('chart');
  chart = new Chart(canvas, {
    type: 'scatter',
    data: { datasets: [] },
    options: {
      animation: false, responsive: true, maintainAspectRatio: false, events: [],
      layout: { padding: { top: 4, right: 12 } },
      plugins: { legend: { display: false }, tooltip: { enabled: false } },
      scales: {
        x: {
          type: 'linear', min: view.x0, max: view.x1,
          title: { display: true, text: 'time since first fault' },
          afterBuildTicks: xTicks,
          ticks: {
            maxRotation: 0, autoSkip: false,
            callback: (v) => {
              const u = timeUnit(view.x1 - view.x0);
              const x = (Number(v) - store.tMin) / u.div;
              return Number(x.toPrecision(9)).toLocaleString(undefined, { maximumFractionDigits: 6 });
            },
          },
          grid: { color: () => pal.grid },
        },
        y: {
          type: 'linear', reverse: true, min: view.y0, max: view.y1,
          title: { display: true, text: 'region · page within region' },
          afterBuildTicks: yTicks,
          ticks: { autoSkip: false, callback: function (v, k) {
            return yLabel(Number(v), (this as unknown as Scale).ticks[k]);
          } },
          grid: { color: (c) => (Number.isInteger(c.tick?.value) ? pal.grid : 'transparent') },
        },
      },
    },
    plugins: [faultsPlugin],
  });
}

/** Pointer capture keeps a drag going outside the element; a pointer that is already gone throws. */
function capture(el: HTMLElement, id: number, on: boolean): void {
  try {
    if (on) el.setPointerCapture(id); else el.releasePointerCapture(id);
  } catch {
    // nothing to capture
  }
}

function setupInput(): void {
  const box = $('chart-box');
  const canvas = $<HTMLCanvasElement>('chart');
  const rel = (e: MouseEvent) => {
    const b = canvas.getBoundingClientRect();
    return { x: e.clientX - b.left, y: e.clientY - b.top };
  };
  box.addEventListener('wheel', (e) => {
    e.preventDefault();
    const p = rel(e);
    const a = chart.chartArea;
    const f = Math.exp(Math.max(-300, Math.min(300, e.deltaY)) * 0.002);
    if (e.shiftKey || p.x < a.left) zoom('y', f, chart.scales.y.getValueForPixel(p.y)!);
    else zoom('x', f, chart.scales.x.getValueForPixel(p.x)!);
  }, { passive: false });
  let drag: { x: number; y: number; v: typeof view; moved: boolean } | null = null;
  box.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) return;
    const p = rel(e);
    drag = { ...p, v: { ...view }, moved: false };
    capture(box, e.pointerId, true);
    box.focus();
  });
  box.addEventListener('pointermove', (e) => {
    if (!drag) return;
    const p = rel(e);
    const dx = p.x - drag.x;
    const dy = p.y - drag.y;
    if (!drag.moved && dx * dx + dy * dy < 9) return;
    drag.moved = true;
    const a = chart.chartArea;
    const tx = ((drag.v.x1 - drag.v.x0) / (a.right - a.left)) * dx;
    const ty = ((drag.v.y1 - drag.v.y0) / (a.bottom - a.top)) * dy;
    view.x0 = drag.v.x0 - tx;
    view.x1 = drag.v.x1 - tx;
    view.y0 = drag.v.y0 - ty; // y is reversed on screen: dragging down shows lower bands
    view.y1 = drag.v.y1 - ty;
    userMoved();
    requestRender(true);
  });
  box.addEventListener('pointerup', (e) => {
    if (!drag) return;
    const wasDrag = drag.moved;
    drag = null;
    capture(box, e.pointerId, false);
    if (!wasDrag) {
      const p = rel(e);
      const i = hitTest(p.x, p.y);
      if (i >= 0) select(i, false);
    }
  });
  box.addEventListener('dblclick', () => { fit(); saveState(); requestRender(true); });
  window.addEventListener('keydown', (e) => {
    const tag = (e.target as HTMLElement | null)?.tagName;
    if (tag === 'INPUT' || tag === 'TEXTAREA' || (tag === 'BUTTON' && (e.key === 'Enter' || e.key === ' '))) return;
    switch (e.key) {
      case 'ArrowRight':
      case 'ArrowLeft': {
        e.preventDefault();
        if (!store.n) return;
        const dir = e.key === 'ArrowRight' ? 1 : -1;
        const base = selected >= 0 ? selected : dir > 0 ? store.lowerBound(view.x0) - 1 : store.upperBound(view.x1);
        select(Math.max(0, Math.min(store.n - 1, base + dir)), true);
        break;
      }
      case 'Enter':
        if (selected >= 0) post({ type: 'reveal', seq: store.seq[selected], tid: store.tid[selected] });
        break;
      case '+': case '=': zoom('x', 0.8, (view.x0 + view.x1) / 2); break;
      case '-': zoom('x', 1.25, (view.x0 + view.x1) / 2); break;
      case 'f': fit(); requestRender(true); break;
      case 's': { // the next stuck fault (observe mode), round
        const idx = [...store.stuck.keys()].map((q) => store.indexOfSeq(q)).filter((k) => k >= 0).sort((p, q) => p - q);
        if (idx.length) select(idx.find((k) => k > selected) ?? idx[0], true);
        break;
      }
    }
  });
  const ov = $<HTMLCanvasElement>('overview');
  let ovDrag = false;
  const centre = (e: PointerEvent) => {
    const t = overviewToTime(e.clientX);
    const span = view.x1 - view.x0;
    view.x0 = t - span / 2;
    view.x1 = t + span / 2;
    userMoved();
    requestRender(true);
  };
  ov.addEventListener('pointerdown', (e) => { ovDrag = true; capture(ov, e.pointerId, true); centre(e); });
  ov.addEventListener('pointermove', (e) => { if (ovDrag) centre(e); });
  ov.addEventListener('pointerup', (e) => { ovDrag = false; capture(ov, e.pointerId, false); });

  $('btn-step').addEventListener('click', () => post({ type: 'step' }));
  $('btn-continue').addEventListener('click', () => post({ type: 'continue' }));
  $('btn-fit').addEventListener('click', () => { fit(); saveState(); requestRender(true); });
  $('btn-export-trace').addEventListener('click', () => post({ type: 'export', format: 'trace', text: exportTrace(store) }));
  $('btn-export-csv').addEventListener('click', () => post({ type: 'export', format: 'csv', text: exportCsv(store) }));
  const file = $<HTMLInputElement>('file-import');
  const readFile = (f: File) => {
    f.text().then((text) => importText(/\.csv$/i.test(f.name) || !text.trimStart().startsWith('{') &&
      !text.trimStart().startsWith('[') ? 'csv' : 'trace', text), (e: Error) => status(`Cannot read ${f.name}: ${e.message}`));
  };
  file.addEventListener('change', () => { if (file.files?.[0]) readFile(file.files[0]); file.value = ''; });
  document.body.addEventListener('dragover', (e) => { e.preventDefault(); });
  document.body.addEventListener('drop', (e) => {
    e.preventDefault();
    const f = e.dataTransfer?.files?.[0];
    if (f) readFile(f);
  });
  window.addEventListener('resize', () => requestRender(true));
  document.addEventListener('visibilitychange', visibilityChanged);
  // VS Code swaps the body's theme class when the colour theme changes.
  new MutationObserver(() => applyTheme()).observe(document.body, { attributes: true, attributeFilter: ['class'] });
}

// ---------------------------------------------------------------- test hook (read-only)

interface TimelineHook {
  stats(): unknown;
  pixelOf(seq: number): { x: number; y: number } | null;
  frame(): Promise<void>;
}

function stats() {
  const visibleBands = store.bands.filter((_, b) => b + 1 > view.y0 && b < view.y1).length;
  return {
    events: store.n,
    drawn: { ...drawn },
    lanes: store.bands.map((r, b) => {
      const g = store.regions[r];
      return { band: b, name: g.name, start: g.startHex, end: g.endHex, via: g.via, pages: g.pages, faults: g.faults,
        implicit: g.implicit };
    }),
    visibleBands,
    pageStates: store.pageStateCounts(),
    histogram: Array.from(store.hist),
    histogramLabels: Array.from({ length: HIST_BUCKETS }, (_, b) => histLabel(b)),
    blocked: Object.fromEntries(store.blocked),
    kinds: Object.fromEntries(KINDS.map((k, j) => [k, store.kindCounts[j]])),
    pending: store.pending.size,
    stuck: [...store.stuck.values()].map((m) => ({ ...m.ev, resolved: m.resolved })),
    nc: store.nc.length,
    view: { ...view },
    chartArea: { ...chart.chartArea },
    selected: selected >= 0 ? store.seq[selected] : null,
    timings: { ...timings },
    hidden: isHidden(),
    drawnVersion,
    version: store.version,
  };
}

const hook: TimelineHook = {
  stats,
  pixelOf(seq) {
    const i = store.indexOfSeq(seq);
    if (i < 0) return null;
    const b = $<HTMLCanvasElement>('chart').getBoundingClientRect();
    return { x: b.left + chart.scales.x.getPixelForValue(store.t[i]), y: b.top + chart.scales.y.getPixelForValue(store.y(i)) };
  },
  frame() {
    return new Promise<void>((res) => {
      if (!idle()) frameWaiters.push(res);
      else requestAnimationFrame(() => requestAnimationFrame(() => res()));
    });
  },
};
Object.defineProperty(window, '__timeline', { value: Object.freeze(hook) });

// ---------------------------------------------------------------- start

restoreState();
Chart.defaults.color = css(pal.fg, 0.9);
setupChart();
makeSideCharts();
styleCharts();
buildPageMapLegend();
setupInput();
showDetails();
requestRender(true);
post({ type: 'ready' });
