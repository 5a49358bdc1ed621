// The VS Code side: registers the `uffd` debug adapter (an executable, the same bundle a
// package ships), offers a configuration when there is no launch.json, and turns adapter and
// helper failures into plain messages with a way to the log.
import * as path from 'node:path';
import * as vscode from 'vscode';
import { UffdDebugSession } from '../server/adapter/uffdDebugSession';
import { formatRss, listProcesses } from '../server/core/processes';
import { readSmaps } from '../server/core/procfs';
import { trackFromChoices, VmaChoice, vmaChoices } from '../server/core/vmaList';
import { resolvePage } from './resolvePage';
import { TimelinePanel } from './timelinePanel';

const TYPE = 'uffd';

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('uffd-debug');
  context.subscriptions.push(
    log,
    vscode.commands.registerCommand('uffd-debug.showLog', () => log.show(true)),
    vscode.commands.registerCommand('uffd-debug.pickProcess', pickProcess),
    vscode.commands.registerCommand('uffd-debug.resolvePage', resolvePage),
    vscode.debug.registerDebugAdapterDescriptorFactory(TYPE, new AdapterFactory(context)),
    vscode.debug.registerDebugConfigurationProvider(TYPE, new ConfigurationProvider()),
    vscode.debug.registerDebugConfigurationProvider(TYPE, new ConfigurationProvider(),
      vscode.DebugConfigurationProviderTriggerKind.Dynamic),
    vscode.debug.registerDebugAdapterTrackerFactory(TYPE, new FailureTracker(log)),
    vscode.commands.registerCommand('uffd-debug.openTimeline', () => {
      const s = vscode.debug.activeDebugSession;
      if (!s || s.type !== TYPE) {
        void vscode.window.showInformationMessage('uffd-debug: start a uffd debug session first; the timeline belongs to it.');
        return;
      }
      TimelinePanel.open(context, s, log);
    }),
    vscode.debug.onDidStartDebugSession((s) => {
      if (s.type === TYPE && vscode.workspace.getConfiguration('uffd-debug').get<boolean>('timeline.openOnStart', true)) {
        TimelinePanel.open(context, s, log);
      }
    }),
    vscode.debug.onDidTerminateDebugSession((s) => TimelinePanel.closeFor(s)),
    vscode.debug.onDidReceiveDebugSessionCustomEvent((e) => {
      if (e.session.type !== TYPE || e.event !== 'uffd/events') return;
      TimelinePanel.forSession(e.session)?.postBatch((e.body as { batch?: unknown } | undefined)?.batch);
    }),
  );
}

export function deactivate(): void {
  // Sessions end with their adapters; nothing else to release.
}

/** `${command:pickProcess}` in an attach configuration: a searchable list of processes. */
async function pickProcess(): Promise<string | undefined> {
  const items = listProcesses().map((p) => ({
    label: p.name,
    description: `PID ${p.pid} · ${p.user} · RSS ${formatRss(p.rssKiB)}`,
    detail: p.cmdline,
    pid: p.pid,
  }));
  const picked = await vscode.window.showQuickPick(items, {
    title: 'Attach uffd-debug to process',
    placeHolder: 'Type a name, PID, user or part of the command line',
    matchOnDescription: true,
    matchOnDetail: true,
  });
  return picked ? String(picked.pid) : undefined;
}

class AdapterFactory implements vscode.DebugAdapterDescriptorFactory {
  constructor(private readonly context: vscode.ExtensionContext) {}

  createDebugAdapterDescriptor(session: vscode.DebugSession): vscode.DebugAdapterDescriptor {
    // Observe mode answers `initialize` with its own Breakpoints-view filters (VS Code lists only those).
    const c = session.configuration;
    const observe = c.request === 'launch' && c.observe === true;
    // A passive observe attach lists only the wait filter (server/adapter/observeAttachRequests.ts).
    const observeAttach = c.request === 'attach' && c.observe === true;
    const mode = { observe: observe || observeAttach, observeAttach, stopOnIoctlError: observe && c.stopOnIoctlError === true,
      followForks: !observe && !observeAttach && c.followForks === true };
    // Inline runs the adapter inside the extension host: handy when debugging the adapter itself.
    if (vscode.workspace.getConfiguration('uffd-debug').get<boolean>('inlineAdapter')) {
      return new vscode.DebugAdapterInlineImplementation(new UffdDebugSession(mode));
    }
    const adapter = path.join(this.context.extensionPath, 'dist', 'adapter.js');
    const args = [...(observeAttach ? ['--observe-attach'] : observe ? ['--observe'] : []), ...(mode.stopOnIoctlError ? ['--stop-on-ioctl-error'] : []),
      ...(mode.followForks ? ['--follow-forks'] : [])];
    // The extension host's own Node runs the adapter: users need no Node on PATH.
    return new vscode.DebugAdapterExecutable(process.execPath, [adapter, ...args], {
      env: { ELECTRON_RUN_AS_NODE: '1' },
    });
  }
}

class ConfigurationProvider implements vscode.DebugConfigurationProvider {
  provideDebugConfigurations(): vscode.DebugConfiguration[] {
    return [{
      type: TYPE,
      request: 'launch',
      name: 'uffd: launch program',
      program: '${workspaceFolder}/a.out',
      args: [],
      stopOnFirstFault: true,
    }];
  }

  /** F5 without a launch.json: ask for the program and debug it with the defaults. */
  async resolveDebugConfiguration(
    folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration,
  ): Promise<vscode.DebugConfiguration | undefined> {
    if (!config.type && !config.request && !config.name) {
      const picked = await vscode.window.showOpenDialog({
        canSelectMany: false,
        defaultUri: folder?.uri,
        openLabel: 'Debug page faults',
        title: 'Program to run under uffd-debug',
      });
      if (!picked || picked.length === 0) return undefined;
      return {
        type: TYPE, request: 'launch', name: `uffd: ${path.basename(picked[0].fsPath)}`,
        program: picked[0].fsPath, args: [], stopOnFirstFault: true,
      };
    }
    if (config.request === 'launch' && !config.program) {
      await vscode.window.showErrorMessage(
        "uffd-debug: the launch configuration has no 'program'. Set it to the executable to debug.");
      return undefined;
    }
    return config;
  }

  /** Attach without `track`: pick what to track among the target's VMAs (the pid is known by now). */
  async resolveDebugConfigurationWithSubstitutedVariables(
    _folder: vscode.WorkspaceFolder | undefined, config: vscode.DebugConfiguration,
  ): Promise<vscode.DebugConfiguration | undefined> {
    // A passive observe attach registers nothing: no VMAs to pick.
    if (config.request !== 'attach' || config.track !== undefined || config.observe === true) return config;
    const pid = Number(String(config.pid ?? '').trim());
    if (!Number.isInteger(pid) || pid <= 0) return config; // the adapter explains a bad pid
    const track = await pickVmas(pid);
    if (track === null) return undefined; // dismissed: no session
    return { ...config, track };
  }
}

/** QuickPick of the target's VMAs; the result is the `track` value (null when dismissed). */
async function pickVmas(pid: number): Promise<'anon' | { start: string; end: string }[] | undefined | null> {
  let choices: VmaChoice[];
  try {
    choices = vmaChoices(readSmaps(pid));
  } catch (e) {
    void vscode.window.showWarningMessage(`uffd-debug: cannot list the VMAs of pid ${pid} (${(e as Error).message}); tracking all anonymous memory.`);
    return undefined;
  }
  const items = choices.map((c) => ({ label: c.label, description: c.description, detail: c.detail, picked: c.picked, choice: c }));
  const picked = await vscode.window.showQuickPick(items, {
    title: `What should uffd-debug track in pid ${pid}?`,
    placeHolder: 'Pick VMAs (the default tracks all private anonymous memory); type to filter by path, size or flags',
    canPickMany: true,
    matchOnDescription: true,
    matchOnDetail: true,
  });
  if (!picked) return null;
  return trackFromChoices(picked.map((p) => p.choice));
}

/** Copies the helper's log to the output channel and shows failures with a "Show Log" action. */
class FailureTracker implements vscode.DebugAdapterTrackerFactory {
  constructor(private readonly log: vscode.OutputChannel) {}

  createDebugAdapterTracker(session: vscode.DebugSession): vscode.DebugAdapterTracker {
    const log = this.log;
    const showFailure = async (message: string) => {
      log.appendLine(`[${session.name}] ${message}`);
      const action = await vscode.window.showErrorMessage(`uffd-debug: ${message}`, 'Show Log');
      if (action === 'Show Log') log.show(true);
    };
    // VS Code reports the adapter's stdout closing as an error ("read error") even at a normal end.
    let ending = false;
    return {
      onWillStopSession() {
        ending = true;
      },
      onDidSendMessage(m: { type: string; event?: string; body?: { line?: string; message?: string };
        success?: boolean; command?: string; message?: string }) {
        if (m.type === 'event' && m.event === 'terminated') ending = true;
        if (m.type === 'event' && m.event === 'uffd/log' && m.body?.line) {
          log.appendLine(m.body.line);
        } else if (m.type === 'event' && m.event === 'uffd/error' && m.body?.message) {
          void showFailure(m.body.message);
        } else if (m.type === 'response' && m.success === false && m.command === 'launch') {
          // VS Code shows the message itself; keep a copy in the log.
          log.appendLine(`[${session.name}] launch failed: ${m.message ?? ''}`);
        }
      },
      onError(e: Error) {
        if (ending) return;
        void showFailure(`the debug adapter failed: ${e.message}`);
      },
      onExit(code: number | undefined, signal: string | undefined) {
        if ((code !== undefined && code !== 0) || signal) {
          void showFailure(`the debug adapter exited unexpectedly (${signal ?? `code ${code}`})`);
        }
      },
    };
  }
}
