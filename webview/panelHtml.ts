// The timeline panel's HTML under a strict CSP: nothing inline, the one script by nonce, every
// asset from the webview's own resource origin. Pure TS: the extension calls it with a nonce from
// crypto.randomBytes and asWebviewUri URIs; the browser tests call it with a local server's.

export interface PanelHtmlOptions {
  cspSource: string;
  nonce: string;
  scriptUri: string;
  styleUri: string;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');

export function panelHtml(opts: PanelHtmlOptions): string {
  const { cspSource, nonce } = opts;
  const csp = `default-src 'none'; img-src ${cspSource} data:; style-src ${cspSource}; ` +
    `script-src 'nonce-${nonce}'; font-src ${cspSource}`;
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${esc(csp)}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${esc(opts.styleUri)}">
<title>Fault timeline</title>
</head>
<body>
<header class="toolbar" role="toolbar" aria-label="Timeline controls">
  <button id="btn-step" title="Resolve the selected held fault and stop at the next one">Step</button>
  <button id="btn-continue" title="Resolve held faults and continue">Continue</button>
  <span class="sep"></span>
  <button id="btn-fit" title="Show the whole session (double-click the chart)">Fit</button>
  <button id="btn-export-trace" title="Export as Chrome Trace Event JSON (Perfetto)">Export trace</button>
  <button id="btn-export-csv" title="Export as CSV">Export CSV</button>
  <label class="file" title="Open a trace JSON or CSV exported earlier (or drop it on the panel)">Import…
    <input id="file-import" type="file" accept=".json,.csv,application/json,text/csv"></label>
  <span class="sep"></span>
  <span id="rates" class="rates" aria-live="polite"></span>
</header>
<div id="legend" class="legend" aria-label="Legend">
  <span class="lg"><span class="glyph k-missing">●</span> missing</span>
  <span class="lg"><span class="glyph k-wp">■</span> write-protect</span>
  <span class="lg"><span class="glyph k-minor">▲</span> minor</span>
  <span class="lg"><span class="glyph k-held">◯</span> held, pending</span>
  <span class="lg" title="A held fault resolved, or (observe mode) the handler's resolution"><span class="glyph k-res">┤</span> resolved later</span>
  <span class="lg"><span class="glyph k-nc">┊</span> fork/remap/remove/unmap</span>
  <span class="lg" title="Observe mode: read by the program's handler and not resolved in time (a dashed ring: resolved later)"><span class="glyph k-stuck">◎</span> stuck</span>
  <span class="lg">latency <span class="ramp-lo">1 µs</span><span class="ramp" aria-hidden="true"></span><span>≥ 10 ms</span></span>
</div>
<main class="layout">
  <section class="left">
    <div id="chart-box" class="chart-box" tabindex="0" aria-label="Fault timeline: arrows select faults, Enter reveals, wheel zooms, drag pans">
      <canvas id="chart"></canvas>
    </div>
    <div class="overview-box"><canvas id="overview" aria-label="Whole session overview"></canvas></div>
    <h2>Page map <span class="hint">one cell per page</span></h2>
    <div id="pagemap-legend" class="legend small"></div>
    <div id="pagemap-box" class="pagemap-box"><canvas id="pagemap"></canvas></div>
  </section>
  <aside class="right">
    <h2>Fault</h2>
    <dl id="details" class="details"><dt>none selected</dt><dd>click a fault, or use ← →</dd></dl>
    <h2>Resolution latency</h2>
    <div class="small-chart"><canvas id="hist"></canvas></div>
    <h2>Blocked time per thread</h2>
    <div class="small-chart"><canvas id="threads"></canvas></div>
  </aside>
</main>
<div id="status" class="status" role="status"></div>
<script nonce="${esc(nonce)}" src="${esc(opts.scriptUri)}"></script>
</body>
</html>
`;
}
