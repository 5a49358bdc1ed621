// Debug Console commands: plain-text answers about the debugged process. Pure over a
// FaultSession, so the adapter, the CLI and tests can share it.
import { ResolveHow } from '../protocol/messages';
import { FaultSession } from './session';
import { describePage, findVma, hex, readPagemap, readSmaps, uffdModes, vmaName } from './procfs';
import { regionLabel } from './summary';

/** Where the command was typed: the held fault of the selected frame, if any. */
export interface ConsoleContext { seq?: number }

interface Command {
  usage: string;
  help: string;
  run(s: FaultSession, args: string[], ctx: ConsoleContext): Promise<string> | string;
}

const RESOLVE_USAGE = 'resolve default|zero|wake|continue|unprotect|poison | resolve pattern BYTE | ' +
  'resolve file PATH [OFFSET] | resolve bytes BASE64 (4096 bytes); add "pages N" for N pages from the fault';

const COMMANDS: Record<string, Command> = {
  help: {
    usage: 'help',
    help: 'list the commands',
    run: () => Object.values(COMMANDS).map((c) => `${c.usage.padEnd(24)} ${c.help}`).join('\n'),
  },
  maps: {
    usage: 'maps [TEXT]',
    help: 'the VMAs of the process (those whose path or flags contain TEXT)',
    run: (s, args) => {
      const pid = requirePid(s);
      const lines = readSmaps(pid)
        .filter((v) => args.length === 0 || `${vmaName(v)} ${v.vmFlags.join(' ')}`.includes(args[0]))
        .map((v) => {
          const kib = Number((v.end - v.start) / 1024n);
          const modes = uffdModes(v.vmFlags);
          return `${hex(v.start)}-${hex(v.end)} ${v.perms} ${String(kib).padStart(8)} KiB  ${vmaName(v)}` +
            (modes.length ? `  [uffd: ${modes.join(',')}]` : '');
        });
      return lines.length ? lines.join('\n') : 'no mapping matches';
    },
  },
  page: {
    usage: 'page ADDR [COUNT]',
    help: 'pagemap state of the page(s) at ADDR (reading pagemap never faults)',
    run: (s, args) => {
      const pid = requirePid(s);
      if (args.length < 1) throw new Error('usage: page ADDR [COUNT], e.g. page 0x7f0000001000 4');
      const addr = parseAddr(args[0]);
      const count = args[1] ? Number(args[1]) : 1;
      if (!Number.isInteger(count) || count < 1 || count > 4096) throw new Error('COUNT is a number of pages from 1 to 4096');
      const page = addr & ~0xfffn;
      const vma = findVma(readSmaps(pid), page);
      const head = vma ? `in ${hex(vma.start)}-${hex(vma.end)} ${vma.perms} ${vmaName(vma)}` : 'not in any mapping';
      const entries = readPagemap(pid, page, count);
      return [head, ...entries.map((p, i) => `${hex(page + BigInt(i) * 4096n)}  ${describePage(p)}`)].join('\n');
    },
  },
  regions: {
    usage: 'regions',
    help: 'the ranges the debugger has registered with userfaultfd',
    run: (s) => s.regions.map((r, i) => `#${i} ${regionLabel(r)} via ${r.via}`).join('\n') || 'no regions',
  },
  threads: {
    usage: 'threads',
    help: 'threads with state and wait channel (handle_userfault = blocked on a fault)',
    run: (s) => s.threads().map((t) => `${t.tid} ${t.name} ${t.state} ${t.wchan}`).join('\n') || 'no threads',
  },
  held: {
    usage: 'held',
    help: 'faults waiting to be resolved',
    run: (s) => [...s.held.values()].map((f) => `#${f.seq} tid ${f.tid} ${f.kind} ${f.access} ${f.addr}`).join('\n') ||
      'no fault is held',
  },
  resolve: {
    usage: 'resolve HOW [ARGS]',
    help: 'resolve the selected held fault by hand (help: resolve ?)',
    run: async (s, args, ctx) => {
      if (args.length === 0 || args[0] === '?') return RESOLVE_USAGE;
      const seq = ctx.seq ?? [...s.held.keys()][0];
      if (seq === undefined) throw new Error('no fault is held: resolve acts on the fault of the selected stack frame');
      const rest = [...args];
      let pages: number | undefined;
      const pi = rest.indexOf('pages');
      if (pi >= 0) {
        pages = Number(rest[pi + 1]);
        if (!Number.isInteger(pages) || pages < 1) throw new Error('pages takes a whole number of pages, e.g. pages 8');
        rest.splice(pi, 2);
      }
      const [how, a1, a2] = rest;
      const extra: Record<string, unknown> = pages ? { pages } : {};
      let wire: ResolveHow;
      switch (how) {
        case 'default': case 'zero': case 'wake': case 'continue': case 'unprotect': case 'poison':
          wire = how;
          break;
        case 'pattern': {
          const b = Number(a1);
          if (!Number.isInteger(b) || b < 0 || b > 255) throw new Error('pattern takes a byte value 0-255, e.g. pattern 0xaa');
          wire = 'copy';
          extra.pattern = b;
          break;
        }
        case 'file':
          if (!a1) throw new Error('file takes a path and an optional byte offset: file /tmp/image 8192');
          wire = 'copy';
          extra.file = a1;
          extra.offset = a2 ? Number(a2) : 0;
          break;
        case 'bytes':
          if (!a1) throw new Error('bytes takes base64 of exactly 4096 bytes');
          wire = 'copy';
          extra.bytes = a1;
          break;
        default:
          throw new Error(`unknown way '${how}'. ${RESOLVE_USAGE}`);
      }
      const r = await s.resolve(seq, wire, extra);
      return `resolved fault #${seq} at ${r.page} with ${r.ioctl} (${r.pages} page${r.pages === 1 ? '' : 's'})` +
        (r.skipped.length ? `; already mapped, skipped: ${r.skipped.join(' ')}` : '') +
        (r.woken.length > 1 ? `; woke faults ${r.woken.map((w) => `#${w}`).join(' ')}` : '');
    },
  },
  track: {
    usage: 'track anon|NAME…|START-END…',
    help: 'register more of an attached process: all anonymous memory, mappings by name, or ranges',
    run: async (s, args) => {
      if (args.length === 0) throw new Error('usage: track anon | track [heap] /path/lib.so | track 0x7f00000000-0x7f00010000');
      const selector = args[0] === 'anon' ? { anon: true as const }
        : args.every((a) => /^0x[0-9a-f]+-0x[0-9a-f]+$/i.test(a)) ? { ranges: args.map(parseRange) }
          : { names: args };
      const regions = await s.track(selector);
      return regions.length ? regions.map((r) => `registered ${regionLabel(r)}`).join('\n') : 'nothing new to register';
    },
  },
  untrack: {
    usage: 'untrack START-END…',
    help: 'unregister ranges of an attached process (faults there stop coming)',
    run: async (s, args) => {
      if (args.length === 0) throw new Error('usage: untrack 0x7f00000000-0x7f00010000');
      const regions = await s.untrack(args.map(parseRange));
      return regions.map((r) => `unregistered ${r.start}-${r.end}`).join('\n') || 'nothing was registered there';
    },
  },
  protect: {
    usage: 'protect START-END on|off',
    help: 'write-protect a range (its first writes then fault; with wpAsync they are only recorded)',
    run: async (s, args) => {
      if (args.length !== 2 || (args[1] !== 'on' && args[1] !== 'off')) throw new Error('usage: protect 0x7f00000000-0x7f00010000 on');
      const r = parseRange(args[0]);
      const body = await s.helper.request('protect', { ...r, on: args[1] === 'on' });
      // Write-protect filters narrowed to protected mappings must now include this one.
      await s.refreshPolicy();
      return `write-protect ${args[1]}: ${body.start}-${body.end} (${body.pages} pages)`;
    },
  },
  dirty: {
    usage: 'dirty START-END [reset]',
    help: 'pages written since protected (wpAsync sessions); reset re-arms them',
    run: async (s, args) => {
      if (args.length < 1) throw new Error('usage: dirty 0x7f00000000-0x7f00010000 [reset]');
      const body = await s.helper.request('dirty', { ...parseRange(args[0]), reset: args[1] === 'reset' });
      const list = body.pages.slice(0, 64).join(' ');
      return `${body.count} page${body.count === 1 ? '' : 's'} written${body.truncated ? ' (list truncated)' : ''}` +
        (list ? `: ${list}${body.pages.length > 64 ? ' …' : ''}` : '');
    },
  },
  evict: {
    usage: 'evict START-END',
    help: 'save and drop the present pages of a private anonymous range; each comes back with its content on its next touch',
    run: async (s, args) => {
      if (args.length !== 1) throw new Error('usage: evict 0x7f00000000-0x7f00010000');
      const r = parseRange(args[0]);
      const body = await s.evict(BigInt(r.start), BigInt(r.end));
      return `evicted ${body.pages} page${body.pages === 1 ? '' : 's'} (${body.saved} evicted in all): their next touches fault and get their content back`;
    },
  },
  zap: {
    usage: 'zap START-END',
    help: 'drop the page tables of shared memory (shmem, memfd, hugetlbfs): with minor mode registered, each access is a minor fault',
    run: async (s, args) => {
      if (args.length !== 1) throw new Error('usage: zap 0x7f00000000-0x7f00010000');
      const r = parseRange(args[0]);
      const body = await s.zap(BigInt(r.start), BigInt(r.end));
      return `zapped ${body.bytes} bytes: the content stays in the page cache`;
    },
  },
  policy: {
    usage: 'policy [readAhead=N] [delay=MIN-MAXus|off]',
    help: 'show the helper\'s policy, or set read-ahead (pages per missing fault) and an injected resolution delay',
    run: async (s, args) => {
      const set: { readAhead?: number; delayUs?: { min: number; max: number } | null } = {};
      for (const a of args) {
        let m: RegExpExecArray | null;
        if ((m = /^readAhead=(\d+)$/i.exec(a))) set.readAhead = Number(m[1]);
        else if (/^delay=off$/i.test(a)) set.delayUs = null;
        else if ((m = /^delay=(\d+)(?:-(\d+))?(?:us)?$/i.exec(a))) set.delayUs = { min: Number(m[1]), max: Number(m[2] ?? m[1]) };
        else throw new Error(`'${a}' is not a policy setting: write readAhead=N or delay=MIN-MAXus (or delay=off)`);
      }
      const p = await s.helper.request('policy', set);
      const holds = (Object.keys(p.hold) as (keyof typeof p.hold)[]).filter((k) => p.hold[k]);
      return `hold: ${holds.join(', ') || 'nothing'}${p.holdRange.length ? ` in ${p.holdRange.map((r) => `${r.start}-${r.end}`).join(' ')}` : ''}` +
        `${p.holdTid.length ? `, threads ${p.holdTid.join(' ')}` : ''}${p.holdEvery > 1 ? `, every ${p.holdEvery}th` : ''}\n` +
        `readAhead ${p.readAhead}, delay ${p.delayUs ? `${p.delayUs.min}-${p.delayUs.max} µs` : 'off'}, stream ${p.stream}`;
    },
  },
  stats: {
    usage: 'stats',
    help: 'fault counters kept by the helper',
    run: async (s) => {
      const st = await s.helper.request('stats', {});
      return `faults: missing ${st.faults.missing}, write-protect ${st.faults.wp}, minor ${st.faults.minor}\n` +
        `held ${st.held}, resolved ${st.resolved}, regions ${st.regions}`;
    },
  },
};

function requirePid(s: FaultSession): number {
  if (s.pid === undefined || s.exitInfo) throw new Error('no process: start a debug session first (or it has exited)');
  return s.pid;
}

function parseAddr(text: string): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(text)) throw new Error(`'${text}' is not an address: write it in hex (0x7f…) or decimal`);
  return BigInt(text);
}

function parseRange(text: string): { start: string; end: string } {
  const m = /^(0x[0-9a-f]+)-(0x[0-9a-f]+)$/i.exec(text);
  if (!m) throw new Error(`'${text}' is not a range: write START-END in hex, e.g. 0x7f0000000000-0x7f0000010000`);
  return { start: m[1].toLowerCase(), end: m[2].toLowerCase() };
}

export async function runConsoleCommand(s: FaultSession, line: string, ctx: ConsoleContext = {}): Promise<string> {
  const [name, ...args] = line.trim().split(/\s+/);
  const cmd = COMMANDS[name];
  if (!cmd) throw new Error(`unknown command '${name}': type 'help' for the list`);
  return cmd.run(s, args, ctx);
}

/** Command names that start with what was typed (the DAP completions request). */
export function completeConsoleCommand(text: string, names: readonly string[] = Object.keys(COMMANDS)): string[] {
  const word = text.trimStart();
  if (word.includes(' ')) return [];
  return names.filter((n) => n.startsWith(word));
}
