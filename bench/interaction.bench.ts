// Interaction speed through the real adapter (DebugClient → dist/adapter.js → helper → program):
//   step:    time from a `next` request to the next `stopped` event,
//   inspect: time from that `stopped` event to a full stackTrace + scopes + variables round
//            (every scope VS Code opens by itself: the non-expensive ones).
// On demo/bin/manylibs (demo/touch with 56 shared libraries mapped, 280 more VMAs) and, as the
// baseline in the same run, demo/bin/fewlibs (the same program with 3). Target: median < 20 ms
// for each on manylibs.
//   node --import tsx bench/interaction.bench.ts [--steps N]
import * as path from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';

const root = path.resolve(__dirname, '..');
const ADAPTER = path.join(root, 'dist', 'adapter.js');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const steps = arg('--steps', 60);

interface Figures { step: number[]; inspect: number[]; vmas: number; variables: number }

async function measure(program: string): Promise<Figures> {
  const dc = new DebugClient(process.execPath, ADAPTER, 'uffd');
  dc.defaultTimeout = 30_000;
  await dc.start();
  const out: Figures = { step: [], inspect: [], vmas: 0, variables: 0 };
  try {
    const first = dc.waitForEvent('stopped') as Promise<DebugProtocol.StoppedEvent>;
    await Promise.all([
      dc.waitForEvent('initialized').then(() => dc.setExceptionBreakpointsRequest({ filters: [] })).then(() => dc.configurationDoneRequest()),
      dc.launch({ program, args: ['--pages', String(steps * 4)], stopOnFirstFault: true, timeline: true } as DebugProtocol.LaunchRequestArguments),
    ]);
    let ev = await first;
    const inspect = async () => {
      const st = await dc.stackTraceRequest({ threadId: ev.body.threadId! });
      const sc = await dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
      let n = 0;
      for (const s of sc.body.scopes) {
        if (s.expensive) continue;
        n += (await dc.variablesRequest({ variablesReference: s.variablesReference })).body.variables.length;
      }
      return n;
    };
    await inspect(); // warm-up (first smaps read, symbolizer start)
    for (let i = 0; i < steps; i++) {
      const t0 = performance.now();
      const next = dc.waitForEvent('stopped') as Promise<DebugProtocol.StoppedEvent>;
      await dc.nextRequest({ threadId: ev.body.threadId! });
      ev = await next;
      const t1 = performance.now();
      out.variables = await inspect();
      const t2 = performance.now();
      out.step.push(t1 - t0);
      out.inspect.push(t2 - t1);
    }
    out.vmas = (await dc.evaluateRequest({ expression: 'maps', context: 'repl' })).body.result.split('\n').length;
    await dc.terminateRequest().catch(() => undefined);
  } finally {
    await dc.stop();
  }
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
};
const p90 = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(s.length * 0.9))];
};

async function main(): Promise<void> {
  const few = await measure(path.join(root, 'demo', 'bin', 'fewlibs'));
  const many = await measure(path.join(root, 'demo', 'bin', 'manylibs'));
  const line = (name: string, f: Figures) =>
    `  ${name.padEnd(26)} ${String(f.vmas).padStart(4)} VMAs  step median ${median(f.step).toFixed(1).padStart(6)} ms (p90 ${p90(f.step).toFixed(1)})` +
    `   inspect median ${median(f.inspect).toFixed(1).padStart(6)} ms (p90 ${p90(f.inspect).toFixed(1)}, ${f.variables} variables)`;
  console.log(`interaction through the adapter, ${steps} steps each (next → stopped; stopped → stackTrace+scopes+variables)`);
  console.log(line('fewlibs (3 libs, baseline)', few));
  console.log(line('manylibs (56 libs)', many));
  console.log(`  ratio manylibs/fewlibs: step ${(median(many.step) / median(few.step)).toFixed(2)}, inspect ${(median(many.inspect) / median(few.inspect)).toFixed(2)}` +
    `   (target: manylibs medians < 20 ms: step ${median(many.step) < 20 ? 'met' : 'NOT met'}, inspect ${median(many.inspect) < 20 ? 'met' : 'NOT met'})`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
