// Colours come only from VS Code's theme variables, resolved to RGBA once per theme change so
// the binned image can be written as 32-bit pixels.
import { PAGE_STATES } from './store';

export interface Rgba { r: number; g: number; b: number; a: number }

export interface Palette {
  bg: Rgba;
  fg: Rgba;
  muted: Rgba;
  grid: string;
  focus: Rgba;
  pending: Rgba;
  resolved: Rgba;
  nc: Rgba;
  /** Halo of a stuck fault (observe mode). */
  stuck: Rgba;
  /** 256-step latency ramp (index = latencyIndex), as CSS strings and as packed ABGR pixels. */
  ramp: string[];
  rampPx: Uint32Array;
  pendingPx: number;
  resolvedPx: number;
  states: Rgba[];
  font: string;
}

const FALLBACK: Record<string, string> = {
  '--vscode-editor-background': '#1e1e1e',
  '--vscode-foreground': '#cccccc',
  '--vscode-descriptionForeground': '#9d9d9d',
  '--vscode-focusBorder': '#007fd4',
  '--vscode-charts-red': '#f14c4c',
  '--vscode-charts-blue': '#3794ff',
  '--vscode-charts-yellow': '#cca700',
  '--vscode-charts-orange': '#d18616',
  '--vscode-charts-green': '#89d185',
  '--vscode-charts-purple': '#b180d7',
  '--vscode-charts-lines': 'rgba(204,204,204,0.5)',
  '--vscode-textLink-foreground': '#3794ff',
  '--vscode-font-family': 'sans-serif',
  '--vscode-font-size': '13px',
};

/** Colour of each page state, by CSS variable (untouched is drawn as faint foreground). */
export const STATE_VARS: Record<(typeof PAGE_STATES)[number], string> = {
  'untouched': '--vscode-foreground',
  'pending': '--vscode-charts-purple',
  'zero': '--vscode-charts-blue',
  'copied': '--vscode-charts-green',
  'write-protected': '--vscode-charts-yellow',
  'written': '--vscode-charts-orange',
  'evicted': '--vscode-descriptionForeground',
  'poisoned': '--vscode-charts-red',
  'moved': '--vscode-textLink-foreground',
};

let probe: CanvasRenderingContext2D | null = null;

export function cssVar(name: string): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim() ||
    getComputedStyle(document.body).getPropertyValue(name).trim();
  return v || FALLBACK[name] || '#808080';
}

/** Any CSS colour → RGBA, by letting a 1×1 canvas parse and paint it. */
export function toRgba(css: string): Rgba {
  if (!probe) {
    const c = document.createElement('canvas');
    c.width = c.height = 1;
    probe = c.getContext('2d', { willReadFrequently: true });
  }
  const ctx = probe!;
  ctx.clearRect(0, 0, 1, 1);
  ctx.fillStyle = '#000';
  ctx.fillStyle = css;
  ctx.fillRect(0, 0, 1, 1);
  const d = ctx.getImageData(0, 0, 1, 1).data;
  return { r: d[0], g: d[1], b: d[2], a: d[3] / 255 };
}

export const css = (c: Rgba, alpha = 1) => `rgba(${c.r},${c.g},${c.b},${(c.a * alpha).toFixed(3)})`;
const px = (c: Rgba, alpha = 1) =>
  ((Math.round(c.a * alpha * 255) << 24) | (c.b << 16) | (c.g << 8) | c.r) >>> 0;

/** Latency (ns) → ramp index 0..255, log scale from 1 µs (0) to 10 ms (255). */
export function latencyIndex(ns: number): number {
  const x = (Math.log10(Math.max(ns, 1)) - 3) / 4;
  return Math.max(0, Math.min(255, Math.round(x * 255)));
}

function mix(a: Rgba, b: Rgba, f: number): Rgba {
  return { r: Math.round(a.r + (b.r - a.r) * f), g: Math.round(a.g + (b.g - a.g) * f),
    b: Math.round(a.b + (b.b - a.b) * f), a: 1 };
}

export function readPalette(): Palette {
  const c = (n: string) => toRgba(cssVar(n));
  const stops = ['--vscode-charts-blue', '--vscode-charts-green', '--vscode-charts-yellow',
    '--vscode-charts-orange', '--vscode-charts-red'].map(c);
  const ramp: string[] = [];
  const rampPx = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    const x = (i / 255) * (stops.length - 1);
    const k = Math.min(stops.length - 2, Math.floor(x));
    const m = mix(stops[k], stops[k + 1], x - k);
    ramp.push(css(m));
    rampPx[i] = px(m);
  }
  const fg = c('--vscode-foreground');
  const pending = c('--vscode-charts-purple');
  const states = (Object.keys(STATE_VARS) as (keyof typeof STATE_VARS)[]).map((s) => {
    const v = c(STATE_VARS[s]);
    return s === 'untouched' ? { ...v, a: 0.2 } : v;
  });
  return {
    bg: c('--vscode-editor-background'), fg, muted: c('--vscode-descriptionForeground'),
    grid: css(c('--vscode-charts-lines'), 0.5), focus: c('--vscode-focusBorder'), pending,
    resolved: fg, nc: c('--vscode-charts-orange'), stuck: c('--vscode-charts-red'), ramp, rampPx, pendingPx: px(pending), resolvedPx: px(fg),
    states, font: cssVar('--vscode-font-family'),
  };
}
