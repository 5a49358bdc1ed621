// Where a thread blocked on a fault is: its user-mode pc and sp come from
// /proc/PID/task/TID/syscall, which the kernel fills from the saved user registers of a
// sleeping task, so reading it neither stops nor wakes the thread (the fault stays held).
// The pc is turned into module + offset from the maps, then into function, file and line
// with addr2line (DWARF when the module has it, the symbol table otherwise).
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { Vma } from './procfs';

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
