// Parsers for /proc/PID/maps, /proc/PID/smaps and the task list. Pure functions take text so
// unit tests can feed captured procfs output; the readers below are thin.
import { closeSync, openSync, readFileSync, readSync, readdirSync } from 'node:fs';

export interface Vma {
  start: bigint;
  end: bigint;
  perms: string; // "rw-p"
  offset: bigint;
  dev: string;
  inode: number;
  path: string; // "" for anonymous
}

export interface SmapsEntry extends Vma {
  counters: Record<string, number>; // kB values: Rss, Pss, Anonymous, Swap, ...
  vmFlags: string[]; // two-letter codes
}

const MAPS_LINE = /^([0-9a-f]+)-([0-9a-f]+)\s+(\S{4})\s+([0-9a-f]+)\s+(\S+)\s+(\d+)\s*(.*)$/;

function parseMapsLine(line: string): Vma | null {
  const m = MAPS_LINE.exec(line);
  if (!m) return null;
  return {
    start: BigInt('0x' + m[1]),
    end: BigInt('0x' + m[2]),
    perms: m[3],
    offset: BigInt('0x' + m[4]),
    dev: m[5],
    inode: Number(m[6]),
    path: m[7].trim(),
  };
}

export function parseMaps(text: string): Vma[] {
  const out: Vma[] = [];
  for (const line of text.split('\n')) {
    if (line.length === 0) continue;
    const v = parseMapsLine(line);
    if (!v) throw new Error(`unexpected line in maps: ${line}`);
    out.push(v);
  }
  return out;
}

export function parseSmaps(text: string): SmapsEntry[] {
  const out: SmapsEntry[] = [];
  // Read at every stop (hundreds of VMAs, thousands of lines) while usually one VMA's fields are
  // looked at: headers are parsed here, each VMA's field lines when first asked for. Header
  // lines start with a lowercase hex digit, field lines with an uppercase letter.
  let pos = 0;
  let head: Vma | null = null;
  let from = 0;
  const close = (to: number) => {
    if (head) out.push(lazyEntry(head, text, from, to));
  };
  while (pos < text.length) {
    let nl = text.indexOf('\n', pos);
    if (nl < 0) nl = text.length;
    const c = text.charCodeAt(pos);
    if (nl > pos && (c < 65 || c > 90)) {
      const line = text.slice(pos, nl);
      const v = parseMapsLine(line);
      if (!v) throw new Error(`unexpected line in smaps: ${line}`);
      close(pos);
      head = v;
      from = nl + 1;
    } else if (nl > pos && !head) {
      throw new Error(`smaps text does not start with a mapping line: ${text.slice(pos, nl)}`);
    }
    pos = nl + 1;
  }
  close(text.length);
  return out;
}

/** A VMA whose `counters` and `vmFlags` are parsed from text[from, to) on first use. */
function lazyEntry(head: Vma, text: string, from: number, to: number): SmapsEntry {
  let fields: { counters: Record<string, number>; vmFlags: string[] } | null = null;
  const parse = () => (fields ??= parseSmapsFields(text.slice(from, to)));
  const e = head as SmapsEntry;
  Object.defineProperty(e, 'counters', { get: () => parse().counters, enumerable: true, configurable: true });
  Object.defineProperty(e, 'vmFlags', { get: () => parse().vmFlags, enumerable: true, configurable: true });
  return e;
}

function parseSmapsFields(block: string): { counters: Record<string, number>; vmFlags: string[] } {
  const counters: Record<string, number> = {};
  let vmFlags: string[] = [];
  for (const line of block.split('\n')) {
    if (line.length === 0) continue;
    const colon = line.indexOf(':');
    if (colon < 0) throw new Error(`unexpected line in smaps: ${line}`);
    const key = line.slice(0, colon);
    if (key === 'VmFlags') {
      vmFlags = line.slice(colon + 1).trim().split(/\s+/).filter((x) => x.length > 0);
    } else {
      const n = parseInt(line.slice(colon + 1), 10);
      if (!Number.isNaN(n)) counters[key] = n;
    }
  }
  return { counters, vmFlags };
}

/** Every VmFlags code the kernel prints (fs/proc/task_mmu.c, show_smap_vma_flags), with its meaning. */
export const VM_FLAGS: Record<string, string> = {
  rd: 'readable',
  wr: 'writeable',
  ex: 'executable',
  sh: 'shared',
  mr: 'may read',
  mw: 'may write',
  me: 'may execute',
  ms: 'may share',
  gd: 'stack segment grows down',
  pf: 'pure PFN range',
  lo: 'pages are locked in memory',
  io: 'memory-mapped I/O area',
  sr: 'sequential read advise provided',
  rr: 'random read advise provided',
  dc: 'do not copy area on fork',
  de: 'do not expand area on remapping',
  ac: 'area is accountable',
  nr: 'swap space is not reserved for the area',
  ht: 'area uses huge TLB pages',
  sf: 'synchronous page fault',
  nl: 'non-linear mapping',
  ar: 'architecture specific flag',
  wf: 'wipe on fork',
  dd: 'do not include area into core dump',
  sd: 'soft-dirty flag',
  mm: 'mixed map area',
  hg: 'huge page advise flag',
  nh: 'no-huge page advise flag',
  mg: 'mergeable advise flag',
  bt: 'arm64 BTI guarded page',
  mt: 'arm64 MTE allocation tags are enabled',
  um: 'userfaultfd missing tracking',
  uw: 'userfaultfd wr-protect tracking',
  ui: 'userfaultfd minor fault tracking',
  ss: 'shadow/guarded control stack page',
  sl: 'sealed',
  lf: 'lock on fault pages',
  dp: 'always lazily freeable mapping',
  gu: 'guard region (madvise guard pages)',
};

export interface DecodedFlag { code: string; meaning: string }

export function decodeVmFlags(codes: string[]): DecodedFlag[] {
  return codes.map((code) => ({ code, meaning: VM_FLAGS[code] ?? 'unknown flag (newer kernel?)' }));
}

/** The userfaultfd modes a VMA is registered for, from its VmFlags. */
export function uffdModes(codes: string[]): string[] {
  const modes: string[] = [];
  if (codes.includes('um')) modes.push('missing');
  if (codes.includes('uw')) modes.push('wp');
  if (codes.includes('ui')) modes.push('minor');
  return modes;
}

export function findVma<T extends Vma>(vmas: T[], addr: bigint): T | undefined {
  return vmas.find((v) => addr >= v.start && addr < v.end);
}

export function vmaName(v: Vma): string {
  return v.path.length > 0 ? v.path : '[anon]';
}

export function readSmaps(pid: number): SmapsEntry[] {
  return parseSmaps(readFileSync(`/proc/${pid}/smaps`, 'utf8'));
}

export function readMaps(pid: number): Vma[] {
  return parseMaps(readFileSync(`/proc/${pid}/maps`, 'utf8'));
}

export interface TaskInfo { tid: number; name: string; state: string; wchan: string }

/** Parses /proc/PID/task/TID/stat; the comm field may contain spaces and parentheses. */
export function parseStat(text: string): { tid: number; name: string; state: string } {
  const open = text.indexOf('(');
  const close = text.lastIndexOf(')');
  if (open < 0 || close < open) throw new Error(`unexpected stat text: ${text.slice(0, 80)}`);
  return {
    tid: Number(text.slice(0, open).trim()),
    name: text.slice(open + 1, close),
    state: text.slice(close + 2, close + 3),
  };
}

/**
 * The fields of a /proc/PID/stat text after the comm (which may hold spaces and parentheses), as
 * numbered in proc(5): field(3) is the state, '' past the end.
 */
export function statFields(text: string): (n: number) => string {
  const close = text.lastIndexOf(')');
  if (close < 0) throw new Error(`unexpected stat text: ${text.slice(0, 80)}`);
  const f = text.slice(close + 2).trim().split(/\s+/);
  return (n) => f[n - 3] ?? '';
}

/** `start_brk` (field 47 of /proc/PID/stat): where the heap begins; it only grows up from there. */
export function parseStartBrk(text: string): bigint | null {
  if (text.lastIndexOf(')') < 0) return null;
  const v = statFields(text)(47);
  return /^\d+$/.test(v) ? BigInt(v) : null;
}

export function readStartBrk(pid: number): bigint | null {
  try {
    return parseStartBrk(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

export function listTasks(pid: number): TaskInfo[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  const out: TaskInfo[] = [];
  for (const t of tids) {
    try {
      const st = parseStat(readFileSync(`/proc/${pid}/task/${t}/stat`, 'utf8'));
      let wchan = '';
      try {
        wchan = readFileSync(`/proc/${pid}/task/${t}/wchan`, 'utf8').trim();
      } catch {
        // wchan is not readable on every kernel configuration
      }
      out.push({ ...st, wchan });
    } catch {
      // the thread exited while we listed
    }
  }
  return out.sort((a, b) => a.tid - b.tid);
}

export function hex(n: bigint | number): string {
  return '0x' + n.toString(16);
}

/** One /proc/PID/pagemap entry, decoded (Documentation/admin-guide/mm/pagemap.rst). */
export interface PagemapEntry {
  present: boolean;
  swapped: boolean;
  /** File page or shared anonymous page. */
  fileOrSharedAnon: boolean;
  exclusive: boolean;
  softDirty: boolean;
  uffdWp: boolean;
  guard: boolean;
  /** Zero unless the reader has CAP_SYS_ADMIN. */
  pfn: bigint;
}

export function decodePagemap(raw: bigint): PagemapEntry {
  const bit = (n: number) => ((raw >> BigInt(n)) & 1n) === 1n;
  const present = bit(63);
  return {
    present,
    swapped: bit(62),
    fileOrSharedAnon: bit(61),
    exclusive: bit(56),
    softDirty: bit(55),
    uffdWp: bit(57),
    guard: bit(58),
    pfn: present ? raw & ((1n << 55n) - 1n) : 0n,
  };
}

/**
 * Reads pagemap entries for `count` pages from `addr`. Reading pagemap never touches the
 * target's pages, so it cannot fault (unlike process_vm_readv on a missing page).
 */
export function readPagemap(pid: number, addr: bigint, count = 1): PagemapEntry[] {
  const fd = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    const buf = Buffer.alloc(8 * count);
    const n = readSync(fd, buf, 0, buf.length, Number((addr / 4096n) * 8n));
    const out: PagemapEntry[] = [];
    for (let i = 0; i + 8 <= n; i += 8) out.push(decodePagemap(buf.readBigUInt64LE(i)));
    return out;
  } finally {
    closeSync(fd);
  }
}

export function describePage(p: PagemapEntry): string {
  if (!p.present && !p.swapped) return p.uffdWp ? 'not present (uffd-wp marker)' : 'not present';
  const parts = [p.present ? 'present' : 'swapped'];
  if (p.fileOrSharedAnon) parts.push('file/shared-anon');
  else parts.push('private anon');
  if (p.exclusive) parts.push('exclusive');
  if (p.softDirty) parts.push('soft-dirty');
  if (p.uffdWp) parts.push('uffd-wp');
  if (p.guard) parts.push('guard');
  return parts.join(', ');
}
