// Where a thread blocked on a fault is: its user-mode pc and sp come from
// /proc/PID/task/TID/syscall, which the kernel fills from the saved user registers of a
// sleeping task, so reading it neither stops nor wakes the thread (the fault stays held).
// The pc is turned into module + offset from the maps, then into function, file and line
// with addr2line (DWARF when the module has it, the symbol table otherwise).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Vma } from './procfs';
import { RegisterName, StackBody, StackFrameInfo } from '../protocol/messages';

export interface UserRegs { pc: bigint; sp: bigint }

/** Parses the syscall file: "running", or "NR [6 args] SP PC" (NR -1 or a fault's error code). */
export function parseSyscallFile(text: string): UserRegs | null {
  const f = text.trim().split(/\s+/);
  if (f.length < 3 || f[0] === 'running') return null;
  return { sp: BigInt(f[f.length - 2]), pc: BigInt(f[f.length - 1]) };
}

export function readUserRegs(pid: number, tid: number): UserRegs | null {
  try {
    return parseSyscallFile(readFileSync(`/proc/${pid}/task/${tid}/syscall`, 'utf8'));
  } catch {
    return null;
  }
}

export interface Location {
  pc: bigint;
  module: string | null;
  /** pc relative to the module's load base: what addr2line and `nm` speak. */
  offset: bigint | null;
  func: string | null;
  file: string | null;
  line: number | null;
  /** The source file exists on this machine. */
  sourceAvailable: boolean;
}

/** The module (file mapping) that contains pc, and pc relative to that module's load base. */
export function moduleOf(vmas: Vma[], pc: bigint): { module: string; offset: bigint } | null {
  const v = vmas.find((m) => pc >= m.start && pc < m.end);
  if (!v || !v.path.startsWith('/')) return null;
  // The load base is where the file's first page (offset 0) is mapped.
  const base = vmas.filter((m) => m.path === v.path && m.inode === v.inode)
    .reduce((lo, m) => (m.start - m.offset < lo ? m.start - m.offset : lo), v.start - v.offset);
  return { module: v.path, offset: pc - base };
}

/** Parses `addr2line -f -C -a` output for one address (the innermost inline frame first). */
export function parseAddr2line(out: string): { func: string | null; file: string | null; line: number | null } {
  const lines = out.split('\n').filter((l) => l.length > 0);
  const func = lines[1] && lines[1] !== '??' ? lines[1] : null;
  const m = lines[2] ? /^(.*):(\d+|\?)(?: \(discriminator \d+\))?$/.exec(lines[2]) : null;
  const file = m && m[1] !== '??' ? m[1] : null;
  const line = m && m[2] !== '?' && m[2] !== '0' ? Number(m[2]) : null;
  return { func, file, line };
}

export class Symbolizer {
  private cache = new Map<string, { func: string | null; file: string | null; line: number | null }>();

  locate(vmas: Vma[], pc: bigint): Location {
    const mod = moduleOf(vmas, pc);
    if (!mod) return { pc, module: null, offset: null, func: null, file: null, line: null, sourceAvailable: false };
    const key = `${mod.module}@${mod.offset}`;
    let sym = this.cache.get(key);
    if (!sym) {
      try {
        const out = execFileSync('addr2line', ['-e', mod.module, '-f', '-C', '-a', '0x' + mod.offset.toString(16)],
          { encoding: 'utf8', timeout: 5000, stdio: ['ignore', 'pipe', 'ignore'] });
        sym = parseAddr2line(out);
      } catch {
        sym = { func: null, file: null, line: null }; // no addr2line, or an unreadable module
      }
      this.cache.set(key, sym);
    }
    return { pc, ...mod, ...sym, sourceAvailable: sym.file !== null && sym.line !== null && existsSync(sym.file) };
  }
}

export function basename(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

/** "toucher (touch+0x1253)", "touch+0x1253", or the raw address. */
export function locationLabel(l: Location): string {
  if (!l.module || l.offset === null) return '0x' + l.pc.toString(16);
  const where = `${basename(l.module)}+0x${l.offset.toString(16)}`;
  return l.func ? `${l.func} (${where})` : where;
}

// ---- frames and registers from the helper's `stack` (libdw unwinding) --------------------

/** One frame ready to show: what to call it and where its source is. */
export interface FrameView {
  name: string;
  pc: bigint;
  module: string | null;
  file: string | null;
  line: number | null;
  column: number | null;
  /** The source file exists on this machine: the frame can open it. */
  sourceAvailable: boolean;
}

/** An ELF symbol without its version ("__libc_start_main@@GLIBC_2.34" → "__libc_start_main"). */
function plainSymbol(s: string): string {
  const at = s.indexOf('@');
  return at > 0 ? s.slice(0, at) : s;
}

/**
 * "toucher" for a frame with source here; otherwise the module is named:
 * "start_thread (libc.so.6)", "memset+0x2a (libc.so.6)" or "libfoo.so+0x1234"; the address last.
 */
export function frameName(f: StackFrameInfo, sourceAvailable: boolean): string {
  const pc = BigInt(f.pc);
  const fn = f.function ?? (f.symbol !== undefined ? plainSymbol(f.symbol) : undefined);
  const inl = f.inlined ? ' [inlined]' : '';
  if (fn !== undefined && sourceAvailable) return fn + inl;
  if (!f.module) return fn !== undefined ? fn + inl : '0x' + pc.toString(16);
  const mod = basename(f.module);
  if (fn !== undefined) {
    const off = f.function === undefined && f.offset ? `+0x${f.offset.toString(16)}` : '';
    return `${fn}${off}${inl} (${mod})`;
  }
  const base = f.moduleBase !== undefined ? BigInt(f.moduleBase) : null;
  return base !== null ? `${mod}+0x${(pc - base).toString(16)}` : `0x${pc.toString(16)} (${mod})`;
}

export function frameViews(body: StackBody, exists: (file: string) => boolean = existsSync): FrameView[] {
  return body.frames.map((f) => {
    const file = f.file ?? null;
    const line = f.line ?? null;
    const sourceAvailable = file !== null && line !== null && file.startsWith('/') && exists(file);
    return {
      name: frameName(f, sourceAvailable), pc: BigInt(f.pc), module: f.module ?? null, file, line,
      column: f.column ?? null, sourceAvailable,
    };
  });
}

const EFLAGS_BITS: [number, string][] = [
  [0, 'CF'], [2, 'PF'], [4, 'AF'], [6, 'ZF'], [7, 'SF'], [8, 'TF'], [9, 'IF'], [10, 'DF'], [11, 'OF'],
  [14, 'NT'], [16, 'RF'], [17, 'VM'], [18, 'AC'], [19, 'VIF'], [20, 'VIP'], [21, 'ID'],
];

/** "0x246 [IF ZF PF]": the flags set, highest bit first. */
export function decodeEflags(v: bigint): string {
  const set = EFLAGS_BITS.filter(([bit]) => (v >> BigInt(bit)) & 1n).map(([, n]) => n).reverse();
  return `0x${v.toString(16)} [${set.join(' ')}]`;
}

/** The order registers are shown in: general purpose, then rip/eflags, then the rest. */
export const REGISTER_ORDER: RegisterName[] = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15',
  'rip', 'eflags', 'orig_rax', 'fs_base', 'gs_base', 'cs', 'ss', 'ds', 'es', 'fs', 'gs',
];

export interface RegisterView {
  name: string;
  value: string;
  /** Set when the value points into the process (a mapping holds it): a memory reference. */
  address: bigint | null;
}

/**
 * The Registers scope of a held fault. `mapped` says whether an address is inside one of the
 * process's mappings: such values (and always rip, rsp, rbp, fs_base) get a memory reference.
 */
export function registerViews(body: StackBody, mapped: (addr: bigint) => boolean): RegisterView[] {
  const alwaysPointer = new Set<RegisterName>(['rip', 'rsp', 'rbp', 'fs_base', 'gs_base']);
  const out: RegisterView[] = [];
  for (const name of REGISTER_ORDER) {
    const text = body.registers[name];
    if (text === undefined) continue;
    const v = BigInt(text);
    if (name === 'eflags') {
      out.push({ name, value: decodeEflags(v), address: null });
      continue;
    }
    const value = name === 'orig_rax' && v === 0xffffffffffffffffn ? `${text} (-1: not in a system call)` : text;
    const pointer = v !== 0n && !['cs', 'ss', 'ds', 'es', 'fs', 'gs', 'orig_rax'].includes(name) &&
      (alwaysPointer.has(name) || mapped(v));
    out.push({ name, value, address: pointer ? v : null });
  }
  return out;
}
