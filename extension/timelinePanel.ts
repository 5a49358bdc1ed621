// The fault timeline: one webview panel per uffd debug session, fed with the adapter's
// `uffd/events` batches, closed with its session. Messages both ways are validated.
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import * as vscode from 'vscode';
import { fromPanelProblem, isFromPanel, TimelineBatch, ToPanel, toPanelProblem } from '../webview/messages';
import { panelHtml } from '../webview/panelHtml';

const MAX_HISTORY = 1_000_000;

export class TimelinePanel {
  private static panels = new Map<string, TimelinePanel>();
  private readonly disposables: vscode.Disposable[] = [];
  /**
   * Every event batch of the session (up to MAX_HISTORY events), so a panel that (re)loads gets
   * `reset` and the whole session on its `ready`: the panel keeps only small sessions itself.
   */
  private history: ToPanel[] = [];
  private historyEvents = 0;
  private ready = false;

  static forSession(session: vscode.DebugSession): TimelinePanel | undefined {
    return TimelinePanel.panels.get(session.id);
  }

  static open(context: vscode.ExtensionContext, session: vscode.DebugSession, log: vscode.OutputChannel): TimelinePanel {
    const existing = TimelinePanel.panels.get(session.id);
    if (existing) {
      existing.panel.reveal(undefined, true);
      return existing;
    }
    const p = new TimelinePanel(context, session, log);
    TimelinePanel.panels.set(session.id, p);
    return p;
  }

  static closeFor(session: vscode.DebugSession): void {
    TimelinePanel.panels.get(session.id)?.panel.dispose();
  }

  private readonly panel: vscode.WebviewPanel;

  private constructor(context: vscode.ExtensionContext, private readonly session: vscode.DebugSession,
    private readonly log: vscode.OutputChannel) {
    const dist = vscode.Uri.joinPath(context.extensionUri, 'dist');
    const media = vscode.Uri.joinPath(context.extensionUri, 'media');
    this.panel = vscode.window.createWebviewPanel('uffd-debug.timeline', `Faults: ${session.name}`,
      // Its own editor group: source editors opened on stops go to the active (first) one.
      { viewColumn: vscode.ViewColumn.Two, preserveFocus: true },
      // Kept alive while hidden: rebuilding a million-event view from a replay costs more
      // than the page's memory.
      { enableScripts: true, retainContextWhenHidden: true, localResourceRoots: [dist, media] });
    const w = this.panel.webview;
    w.html = panelHtml({
      cspSource: w.cspSource,
      nonce: randomBytes(16).toString('base64'),
      scriptUri: w.asWebviewUri(vscode.Uri.joinPath(dist, 'webview.js')).toString(),
      styleUri: w.asWebviewUri(vscode.Uri.joinPath(media, 'timeline.css')).toString(),
    });
    this.disposables.push(
      w.onDidReceiveMessage((m) => this.onMessage(m)),
      // A hidden panel (kept alive) stores what arrives and draws it once shown: no CPU spent
      // drawing what nobody sees while the program runs.
      this.panel.onDidChangeViewState((e) => this.postVisibility(e.webviewPanel.visible)),
      this.panel.onDidDispose(() => this.dispose()),
    );
  }

  /** The body of an `uffd/events` custom event: checked, kept for reloads, posted. */
  postBatch(batch: unknown): void {
    this.post({ type: 'events', batch: batch as TimelineBatch });
  }

  post(m: ToPanel): void {
    const problem = toPanelProblem(m);
    if (problem) {
      this.log.appendLine(`timeline: not sending an invalid message (${problem})`);
      return;
    }
    if (m.type === 'events') {
      const n = m.batch.seq.length + m.batch.other.length;
      if (this.historyEvents + n <= MAX_HISTORY) {
        this.history.push(m);
        this.historyEvents += n;
      } else if (this.historyEvents < MAX_HISTORY) {
        this.historyEvents = MAX_HISTORY;
        this.log.appendLine(`timeline: more than ${MAX_HISTORY} events; a reloaded panel will show the first ${MAX_HISTORY} only`);
      }
    }
    if (this.ready) void this.panel.webview.postMessage(m);
  }

  private postVisibility(visible: boolean): void {
    if (this.ready) void this.panel.webview.postMessage({ type: 'visibility', visible } satisfies ToPanel);
  }

  private async onMessage(m: unknown): Promise<void> {
    if (!isFromPanel(m)) {
      this.log.appendLine(`timeline: dropped an invalid message from the panel (${fromPanelProblem(m)})`);
      return;
    }
    switch (m.type) {
      case 'ready': {
        this.ready = true;
        this.postVisibility(this.panel.visible);
        void this.panel.webview.postMessage({ type: 'reset' } satisfies ToPanel);
        for (const q of this.history) void this.panel.webview.postMessage(q);
        break;
      }
      case 'selectThread':
      case 'reveal':
        try {
          await this.session.customRequest('uffd/selectThread', { tid: m.tid });
        } catch (e) {
          void vscode.window.showInformationMessage(`uffd-debug: ${(e as Error).message}`);
        }
        break;
      case 'step':
        await vscode.commands.executeCommand('workbench.action.debug.stepOver');
        break;
      case 'continue':
        await vscode.commands.executeCommand('workbench.action.debug.continue');
        break;
      case 'export': {
        const uri = await vscode.window.showSaveDialog({
          title: 'Export fault timeline',
          filters: m.format === 'trace' ? { 'Chrome Trace Event JSON': ['json'] } : { CSV: ['csv'] },
        });
        if (uri) await writeFile(uri.fsPath, m.text);
        break;
      }
    }
  }

  private dispose(): void {
    TimelinePanel.panels.delete(this.session.id);
    for (const d of this.disposables) d.dispose();
  }
}
