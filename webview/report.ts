// The timeline as one self-contained HTML file (the CLI's --report): the panel's own page, with
// its script, style and the session's events inlined, under a CSP that allows only those.
// Pure TS: no DOM, no vscode.
import { randomBytes } from 'node:crypto';
import { encodeTimeline } from '../server/core/batcher';
import { panelHtml } from './panelHtml';
import { TimelineEvent } from './messages';

/** VS Code's default light and dark colours for the variables the panel reads. */
const LIGHT: Record<string, string> = {
  'editor-background': '#ffffff', foreground: '#616161', descriptionForeground: '#717171', focusBorder: '#0090f1',
  'charts-red': '#e51400', 'charts-blue': '#1a85ff', 'charts-yellow': '#bf8803', 'charts-orange': '#d18616',
  'charts-green': '#388a34', 'charts-purple': '#652d90', 'charts-lines': 'rgba(97, 97, 97, 0.5)',
  'charts-foreground': '#616161', 'textLink-foreground': '#006ab1', 'button-background': '#007acc',
  'button-foreground': '#ffffff', 'button-hoverBackground': '#0062a3', 'button-secondaryBackground': '#5f6a79',
  'button-secondaryForeground': '#ffffff', 'button-secondaryHoverBackground': '#4c5561',
  'panel-border': 'rgba(128, 128, 128, 0.35)',
};
const DARK: Record<string, string> = {
  'editor-background': '#1e1e1e', foreground: '#cccccc', descriptionForeground: '#9d9d9d', focusBorder: '#007fd4',
  'charts-red': '#f14c4c', 'charts-blue': '#3794ff', 'charts-yellow': '#cca700', 'charts-orange': '#d18616',
  'charts-green': '#89d185', 'charts-purple': '#b180d7', 'charts-lines': 'rgba(204, 204, 204, 0.5)',
  'charts-foreground': '#cccccc', 'textLink-foreground': '#3794ff', 'button-background': '#0e639c',
  'button-foreground': '#ffffff', 'button-hoverBackground': '#1177bb', 'button-secondaryBackground': '#3a3d41',
  'button-secondaryForeground': '#cccccc', 'button-secondaryHoverBackground': '#45494e',
  'panel-border': 'rgba(128, 128, 128, 0.35)',
};
const FONTS = {
  'font-family': 'system-ui, "Ubuntu", "Droid Sans", sans-serif', 'font-size': '13px',
  'editor-font-family': '"Droid Sans Mono", monospace',
};

const vars = (v: Record<string, string>) => Object.entries({ ...v, ...FONTS }).map(([k, x]) => `--vscode-${k}: ${x};`).join(' ');

/** Text that may stand inside a <script> element without ending it. */
const scriptSafe = (s: string) => s.replace(/<\/(script)/gi, '<\\/$1').replace(/<!--/g, '<\\!--');

export interface ReportOptions {
  title: string;
  /** dist/webview.js */
  script: string;
  /** media/timeline.css */
  style: string;
  events: TimelineEvent[];
}

export function reportHtml(o: ReportOptions): string {
  const nonce = randomBytes(16).toString('base64');
  let html = panelHtml({ cspSource: "'none'", nonce, scriptUri: 'SCRIPT', styleUri: 'STYLE' });
  const csp = `default-src 'none'; img-src data:; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'`;
  // Replacement functions, not strings: the inlined script is full of '$' sequences.
  html = html.replace(/<meta http-equiv="Content-Security-Policy" content="[^"]*">/,
    () => `<meta http-equiv="Content-Security-Policy" content="${csp}">`);
  html = html.replace('<title>Fault timeline</title>', () => `<title>${o.title.replace(/[<&]/g, (c) => (c === '<' ? '&lt;' : '&amp;'))}</title>`);
  html = html.replace('<link rel="stylesheet" href="STYLE">',
    () => `<style nonce="${nonce}">:root { ${vars(LIGHT)} }\n@media (prefers-color-scheme: dark) { :root { ${vars(DARK)} } }\n${o.style}</style>`);
  // Outside VS Code: a stand-in for its API (exports download as files; nothing else to talk to),
  // then the panel, then the session's events fed the way the extension feeds them.
  const shim = `window.acquireVsCodeApi = () => ({
  postMessage(m) {
    if (!m || m.type !== 'export' || typeof m.text !== 'string') return;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(new Blob([m.text], { type: m.format === 'csv' ? 'text/csv' : 'application/json' }));
    a.download = m.format === 'csv' ? 'faults.csv' : 'faults.trace.json';
    a.click();
  },
  getState() { return undefined; },
  setState() {},
});`;
  const feed = `(() => {
  const batches = JSON.parse(document.getElementById('uffd-events').textContent);
  window.postMessage({ type: 'reset' }, '*');
  for (const batch of batches) window.postMessage({ type: 'events', batch }, '*');
})();`;
  // In the panel's own message format (columns): a quarter of the size of the events as objects.
  const data = JSON.stringify(encodeTimeline(o.events)).replace(/</g, '\\u003c');
  html = html.replace(`<script nonce="${nonce}" src="SCRIPT"></script>`,
    () => `<script type="application/json" id="uffd-events">${data}</script>\n` +
    `<script nonce="${nonce}">${scriptSafe(shim)}</script>\n` +
    `<script nonce="${nonce}">${scriptSafe(o.script)}</script>\n` +
    `<script nonce="${nonce}">${scriptSafe(feed)}</script>`);
  return html;
}
