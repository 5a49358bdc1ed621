// Passive observe attach: a running process that handles its own userfaultfd (a hung postcopy
// destination that cannot be restarted under the observe library) watched through procfs only.
// Nothing is injected, interposed or traced: the userfaultfds are found in /proc/PID/fd and read
// in /proc/PID/fdinfo, the registered ranges in /proc/PID/smaps (VmFlags um/uw/ui), and a thread
// blocked on a fault is one whose wchan is handle_userfault. The only ptrace is the helper's
// one-shot `stack` of a thread the user looks at (and for a thread blocked in user mode the
// helper uses /proc's pc and sp, without ptrace). What cannot be known this way: the faulting
// address, the handler's reads and ioctls, and the exit status of a process that is not our child.
// Knows nothing of DAP or VS Code; server/adapter/observeAttachRequests.ts translates.
import { EventEmitter } from 'node:events';
import { closeSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, statSync } from 'node:fs';
import { constants } from 'node:os';
import type { TimelineInput } from './batcher';
import { ConditionError, FilterCondition, FilterRequest, FilterResult } from './filters';
import { countHit, parseObserveCondition, ThreadStacks, WAIT_CONDITION_SYNTAX } from './observeDebug';
import { hex, listTasks, readMaps, readSmaps, statFields, TaskInfo, uffdModes, vmaName } from './procfs';
import { parseSyscallFile, Symbolizer } from './symbolize';
import type { StackBody } from '../protocol/messages';

/** Where a thread sleeps while a userfaultfd fault of its process waits for the handler. */
export const WCHAN_FAULT = 'handle_userfault';
/** Where it sleeps until the handler reads a non-cooperative event (fork, mremap, madvise, munmap). */
export const WCHAN_EVENT = 'userfaultfd_event_wait_completion';
export const UFFD_LINK = 'anon_inode:[userfaultfd]';

/** UFFD_FEATURE_* by bit number, the names the helper uses (server/native/uffd.c, feature_names). */
export const UFFD_FEATURE_NAMES: readonly string[] = [
  'PAGEFAULT_FLAG_WP', 'EVENT_FORK', 'EVENT_REMAP', 'EVENT_REMOVE', 'MISSING_HUGETLBFS', 'MISSING_SHMEM', 'EVENT_UNMAP',
  'SIGBUS', 'THREAD_ID', 'MINOR_HUGETLBFS', 'MINOR_SHMEM', 'EXACT_ADDRESS', 'WP_HUGETLBFS_SHMEM', 'WP_UNPOPULATED',
  'POISON', 'WP_ASYNC', 'MOVE',
];
/** The kernel's own bit in fdinfo's features: set once UFFDIO_API has been done on the descriptor. */
const FEATURE_INITIALIZED = 31;
/** _UFFDIO_* bit numbers, named as server/protocol/observe.ts names the resolving ioctls. */
const UFFD_IOCTL_BITS: Record<number, string> = {
  0: 'REGISTER', 1: 'UNREGISTER', 2: 'WAKE', 3: 'COPY', 4: 'ZEROPAGE', 5: 'MOVE', 6: 'WRITEPROTECT', 7: 'CONTINUE', 8: 'POISON', 63: 'API',
};

export const PASSIVE_WAIT_SYNTAX =
  'the wait in ms (500 or 500ms; default the attach attribute stopOnWaitMs, else 1000), then optional terms: ' +
  'tid=N (the blocked thread) and one hit count hit>=N | hit=N | every=N. Example: 200ms tid=1234. ' +
  'No address range or mapping name: procfs does not show the address a blocked thread faulted on';

/** Why only the wait filter exists here (said once in the Debug Console). */
export const PASSIVE_LIMITS =
  'only "Fault waiting too long" can stop in a passive observe attach: the faults the handler reads, its ioctls and their ' +
  'errors are seen only through libuffd-observe.so, which the dynamic loader reads from LD_PRELOAD at exec, so a running ' +
  'process cannot get it without injecting code into it. Launch the handler with "observe": true for fault, ioctl-error and ' +
  'data-breakpoint stops';

/** pending/total and the API line of a userfaultfd's /proc/PID/fdinfo/FD (fs/userfaultfd.c). */
export interface UffdFdinfo {
  /** Faults queued and not yet read by the handler. */
  pending: number;
  /** Faults waiting now: `pending` plus those read and not resolved (not a running count). */
  total: number;
  api: number | null;
  /** The descriptor's features: what the handler negotiated, plus the kernel's bit 31. */
  features: bigint | null;
  /** Every ioctl this kernel offers on a userfaultfd (the same for every descriptor). */
  ioctls: bigint | null;
}

/** Parses a userfaultfd's fdinfo text; null when it is not one (no pending/total lines). */
export function parseUffdFdinfo(text: string): UffdFdinfo | null {
  const pending = /^pending:\s*(\d+)\s*$/m.exec(text);
  const total = /^total:\s*(\d+)\s*$/m.exec(text);
  if (!pending || !total) return null;
  const api = /^API:\s*([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\s*$/im.exec(text);
  return {
    pending: Number(pending[1]),
    total: Number(total[1]),
    api: api ? parseInt(api[1], 16) : null,
    features: api ? BigInt('0x' + api[2]) : null,
    ioctls: api ? BigInt('0x' + api[3]) : null,
  };
}

/** Feature names of a features mask; `negotiated`: UFFDIO_API was done (the kernel's bit 31). */
export function decodeUffdFeatures(mask: bigint): { names: string[]; negotiated: boolean } {
  const names: string[] = [];
  for (let bit = 0; bit < 64; bit++) {
    if (((mask >> BigInt(bit)) & 1n) === 0n || bit === FEATURE_INITIALIZED) continue;
    names.push(UFFD_FEATURE_NAMES[bit] ?? `bit ${bit}`);
  }
  return { names, negotiated: ((mask >> BigInt(FEATURE_INITIALIZED)) & 1n) === 1n };
}

export function decodeUffdIoctls(mask: bigint): string[] {
  const out: string[] = [];
  for (let bit = 0; bit < 64; bit++) if ((mask >> BigInt(bit)) & 1n) out.push(UFFD_IOCTL_BITS[bit] ?? `bit ${bit}`);
  return out;
}

/** A waitpid(2) status (stat field 52 of a zombie) as an exit code or a signal name. */
export function decodeWaitStatus(status: number): { code: number | null; signal: string | null } {
  const sig = status & 0x7f;
  if (sig === 0) return { code: (status >> 8) & 0xff, signal: null };
  const name = Object.entries(constants.signals).find(([, n]) => n === sig)?.[0];
  return { code: null, signal: name ?? `signal ${sig}` };
}

/** The whole process has exited: its leader is a zombie with no other thread left. */
function exitedGroup(pid: number, state: string): boolean {
  if (state !== 'Z' && state !== 'X') return false;
  try {
    return readdirSync(`/proc/${pid}/task`).length <= 1;
  } catch {
    return true;
  }
}

const readBuf = Buffer.alloc(4096);

/** A small procfs file in one read (open, read, close: the poll's cost is these three calls). */
function readSmall(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const n = readSync(fd, readBuf, 0, readBuf.length, null);
    return readBuf.toString('latin1', 0, n);
  } finally {
    closeSync(fd);
  }
}

/**
 * The files read at every look, kept open and read again from offset 0 (procfs regenerates a
 * seq_file read at 0): a look then costs one pread per file instead of a path walk, open and
 * close. A descriptor names the task it was opened for: once that task is gone, the read fails
 * (ESRCH) even if its pid is reused. Beyond MAX_KEPT files they are opened for each read.
 */
class ProcFiles {
  static readonly MAX_KEPT = 256;
  private fds = new Map<string, number>();

  read(path: string): string {
    let fd = this.fds.get(path);
    const keep = fd !== undefined || this.fds.size < ProcFiles.MAX_KEPT;
    if (fd === undefined) fd = openSync(path, 'r');
    try {
      const n = readSync(fd, readBuf, 0, readBuf.length, 0);
      if (keep) this.fds.set(path, fd);
      return readBuf.toString('latin1', 0, n);
    } catch (e) {
      this.close(path, fd);
      throw e;
    } finally {
      if (!keep) closeSync(fd);
    }
  }

  private close(path: string, fd: number): void {
    this.fds.delete(path);
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }

  /** Closes the files under `prefix` (a thread that exited, a descriptor that was closed). */
  forget(prefix: string): void {
    for (const [path, fd] of [...this.fds]) if (path.startsWith(prefix)) this.close(path, fd);
  }

  closeAll(): void {
    this.forget('');
  }
}

const errCode = (e: unknown): string => (e as NodeJS.ErrnoException).code ?? '';
const now = (): number => performance.now();
const plural = (n: number, w: string): string => `${n} ${w}${n === 1 ? '' : 's'}`;
const msText = (ms: number): string => `${Math.floor(ms)} ms`;

export interface PassiveAttachConfig {
  pid: number | string;
  /** Default wait of the wait-too-long filter (ms, default 1000). */
  stopOnWaitMs?: number;
  helperPath?: string;
  /** How often the threads and fdinfo are read (ms, default 50). */
  pollMs?: number;
}

export interface PassiveUffd {
  fd: number;
  /** null: the descriptor was closed since it was found. */
  info: UffdFdinfo | null;
  /** Faults that arrived while attached, at least: the rises of `total` between two polls. */
  arrived: number;
  peakPending: number;
  peakTotal: number;
}

export interface RegisteredRange { start: bigint; end: bigint; modes: string[]; name: string; perms: string }

/** Where a blocked thread is, from /proc/PID/task/TID/syscall. */
export interface BlockedAt {
  pc: bigint;
  sp: bigint;
  /** The system call the kernel was in when it touched the page; null: a user-mode access. */
  syscall: number | null;
}

/** One stretch of time a thread was seen blocked on a userfaultfd (one fault, or one event). */
export interface BlockedEpisode {
  tid: number;
  on: 'fault' | 'event';
  wchan: string;
  /** performance.now() of the first poll that saw it blocked: the wait began before this. */
  firstSeen: number;
  firstSeenWall: number;
  lastSeen: number;
  /** minflt + majflt of the thread when first seen: a completed fault changes it (a new episode). */
  faults: number;
  shown: boolean;
  ended: number | null;
}

export interface PassiveStop {
  reason: 'wait too long';
  pid: number;
  tid: number;
  name: string;
  episode: BlockedEpisode;
  waitedMs: number;
  at: BlockedAt | null;
  filter: { id: 'waitTooLong'; condition: string; waitMs: number };
  description: string;
}

export interface PassiveExit {
  /** From /proc/PID/stat while the process was a zombie; null when it was reaped before a poll saw it. */
  code: number | null;
  signal: string | null;
  text: string;
}

interface ThreadStats { name: string; episodes: number; longestMs: number; blockedMs: number; stops: number }

interface WaitFilter { text: string; condition: FilterCondition; waitMs: number; matches: number; spent: boolean }

export interface PassiveEvents {
  stopped: [PassiveStop];
  /** A thread shown stopped is no longer blocked: [tid, its wait in ms (at least), unblocked or exited]. */
  unblocked: [number, number, 'unblocked' | 'exited'];
  console: [string];
  timeline: [TimelineInput];
  exited: [PassiveExit];
}

/** The passive observe attach of one process. */
export class PassiveObserveSession extends EventEmitter<PassiveEvents> {
  pid = 0;
  name = '';
  private startTime = '';
  private cfg: PassiveAttachConfig = { pid: 0 };
  /** How often the process is looked at (ms). */
  pollMs = 50;
  private timer: NodeJS.Timeout | null = null;
  private polls = 0;
  private attachedAt = 0;
  private started = false;
  private exitInfo: PassiveExit | null = null;
  private disposed = false;
  private uffdFds = new Map<number, PassiveUffd>();
  private knownRanges = new Set<string>();
  private rangeList: RegisteredRange[] = [];
  private episodes = new Map<number, BlockedEpisode>();
  private stats = new Map<number, ThreadStats>();
  private stops = new Map<number, PassiveStop>();
  private wait: WaitFilter | null = null;
  private stackReader = new ThreadStacks(() => this.cfg.helperPath);
  private files = new ProcFiles();
  private liveTids = new Set<number>();
  private tidNames: string[] = [];
  private relist = true;
  private symbolizer = new Symbolizer();
  private stopCount = 0;
  /** Why registers cannot be read (null: they can). */
  registersNote: string | null = null;

  get ended(): boolean {
    return this.exitInfo !== null || this.disposed;
  }

  private get waitDefault(): number {
    return this.cfg.stopOnWaitMs ?? 1000;
  }

  /**
   * Checks the process and takes the first look: its userfaultfds and registered ranges.
   * Polling starts here; stops only after `start()`. Throws an error that says what to do.
   */
  attach(cfg: PassiveAttachConfig): { threads: TaskInfo[]; uffds: PassiveUffd[]; ranges: RegisteredRange[] } {
    const pid = typeof cfg.pid === 'string' ? Number(cfg.pid.trim()) : cfg.pid;
    if (!Number.isSafeInteger(pid) || pid <= 0) {
      throw new Error(`'pid' is ${JSON.stringify(cfg.pid)}: give the process id of the running handler, a whole number ` +
        '("${command:pickProcess}" lists processes)');
    }
    if (cfg.stopOnWaitMs !== undefined && !(Number.isFinite(cfg.stopOnWaitMs) && cfg.stopOnWaitMs >= 1)) {
      throw new Error(`'stopOnWaitMs' is ${cfg.stopOnWaitMs}: give a wait in milliseconds, 1 or more`);
    }
    this.cfg = cfg;
    this.pid = pid;
    this.pollMs = cfg.pollMs ?? 50;
    let st: (n: number) => string;
    try {
      const text = readFileSync(`/proc/${pid}/stat`, 'latin1');
      st = statFields(text);
      this.name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
    } catch (e) {
      if (errCode(e) === 'ENOENT' || errCode(e) === 'ESRCH') {
        throw new Error(`no process with pid ${pid}: it has exited, or the pid is wrong (ps -eLf lists processes and threads)`);
      }
      throw new Error(`cannot read /proc/${pid}/stat: ${(e as Error).message}`);
    }
    if (exitedGroup(pid, st(3))) {
      throw new Error(`pid ${pid} (${this.name}) has exited and waits for its parent to reap it (a zombie): nothing to observe`);
    }
    this.startTime = st(22);
    const fds = this.findUffds(true);
    let ranges: RegisteredRange[];
    try {
      ranges = this.readRanges();
    } catch (e) {
      throw this.accessError(`/proc/${pid}/smaps`, e);
    }
    if (fds.length === 0 && ranges.length === 0) {
      throw new Error(`no userfaultfd in pid ${pid} (${this.name}): attach without observe to let the debugger handle its ` +
        'faults, or launch with observe: true');
    }
    try {
      readSmall(`/proc/${pid}/task/${pid}/syscall`);
    } catch (e) {
      const c = errCode(e);
      if (c === 'EACCES' || c === 'EPERM') {
        this.registersNote = `reading /proc/${pid}/task/*/syscall needs ptrace access to pid ${pid} (${c}): pc, sp and stacks of ` +
          'blocked threads are not available. Run the debugger as root, or allow ptrace of non-children with ' +
          "'sudo sysctl kernel.yama.ptrace_scope=0'";
      }
    }
    // The leader's wchan stays open: it names this process, not whatever later gets its pid.
    try {
      this.files.read(`/proc/${pid}/task/${pid}/wchan`);
      if (statFields(readSmall(`/proc/${pid}/stat`))(22) !== this.startTime) throw new Error('another process');
    } catch {
      this.files.closeAll();
      throw new Error(`pid ${pid} exited while being attached`);
    }
    this.attachedAt = now();
    for (const r of ranges) this.noteRange(r);
    this.poll();
    this.timer = setInterval(() => this.poll(), this.pollMs);
    return { threads: listTasks(pid), uffds: fds, ranges };
  }

  private accessError(path: string, e: unknown): Error {
    const c = errCode(e);
    if (c === 'ENOENT' || c === 'ESRCH') return new Error(`pid ${this.pid} exited while being attached`);
    if (c !== 'EACCES' && c !== 'EPERM') return new Error(`cannot read ${path}: ${(e as Error).message}`);
    let owner = '';
    try {
      owner = ` (uid ${statSync(`/proc/${this.pid}`).uid})`;
    } catch {
      // gone meanwhile
    }
    return new Error(`cannot read ${path}: permission denied. pid ${this.pid} (${this.name}) belongs to another user${owner} or is ` +
      "not dumpable, and reading its descriptors needs ptrace access: run the debugger as root (or as the process's user, with " +
      "'sudo sysctl kernel.yama.ptrace_scope=0' for its stacks)");
  }

  /** /proc/PID/fd entries that are userfaultfds, with their fdinfo. `first`: errors are thrown, not noted. */
  private findUffds(first = false): PassiveUffd[] {
    let names: string[];
    try {
      names = readdirSync(`/proc/${this.pid}/fd`);
    } catch (e) {
      if (first) throw this.accessError(`/proc/${this.pid}/fd`, e);
      return [...this.uffdFds.values()];
    }
    const found = new Set<number>();
    for (const n of names) {
      let link: string;
      try {
        link = readlinkSync(`/proc/${this.pid}/fd/${n}`);
      } catch {
        continue; // closed while listed
      }
      if (link !== UFFD_LINK) continue;
      const fd = Number(n);
      found.add(fd);
      if (!this.uffdFds.has(fd)) {
        const u: PassiveUffd = { fd, info: this.readFdinfo(fd), arrived: 0, peakPending: 0, peakTotal: 0 };
        u.peakPending = u.info?.pending ?? 0;
        u.peakTotal = u.info?.total ?? 0;
        this.uffdFds.set(fd, u);
        if (!first) this.emit('console', `uffd-debug: pid ${this.pid} has a new userfaultfd, fd ${fd}`);
      }
    }
    for (const [fd, u] of this.uffdFds) {
      if (found.has(fd)) continue;
      this.uffdFds.delete(fd);
      this.files.forget(`/proc/${this.pid}/fdinfo/${fd}`);
      this.emit('console', `uffd-debug: pid ${this.pid} closed its userfaultfd fd ${fd} (faults that arrived on it while ` +
        `attached: at least ${u.arrived})`);
    }
    return [...this.uffdFds.values()];
  }

  private readFdinfo(fd: number): UffdFdinfo | null {
    try {
      return parseUffdFdinfo(this.files.read(`/proc/${this.pid}/fdinfo/${fd}`));
    } catch {
      return null;
    }
  }

  private readRanges(): RegisteredRange[] {
    const out: RegisteredRange[] = [];
    for (const v of readSmaps(this.pid)) {
      const modes = uffdModes(v.vmFlags);
      if (modes.length) out.push({ start: v.start, end: v.end, modes, name: vmaName(v), perms: v.perms });
    }
    this.rangeList = out;
    return out;
  }

  /** A range not seen before goes to the timeline (a band per range; nothing per fault exists here). */
  private noteRange(r: RegisteredRange): void {
    const key = `${r.start}-${r.end}-${r.modes.join('+')}`;
    if (this.knownRanges.has(key)) return;
    this.knownRanges.add(key);
    this.emit('timeline', { event: 'region', action: 'add',
      region: { start: hex(r.start), end: hex(r.end), via: 'observe', name: `${r.name} (${r.modes.join('+')})` } });
  }

  /** The registered ranges now (smaps is read again: the timeline gets new ones). */
  ranges(): RegisteredRange[] {
    if (this.ended) return this.rangeList;
    try {
      for (const r of this.readRanges()) this.noteRange(r);
    } catch {
      // exited: the last list read stays
    }
    return this.rangeList;
  }

  /** The userfaultfds with fresh fdinfo. */
  uffds(): PassiveUffd[] {
    if (!this.ended) for (const u of this.uffdFds.values()) u.info = this.readFdinfo(u.fd) ?? u.info;
    return [...this.uffdFds.values()];
  }

  /** The Breakpoints view's filters: only `waitTooLong` can work here. One result per request. */
  setFilters(requests: FilterRequest[]): FilterResult[] {
    let seen = false;
    const results = requests.map((r): FilterResult => {
      if (r.id !== 'waitTooLong') {
        return { verified: false, message: `'${r.id}' cannot stop here: ${PASSIVE_LIMITS}` };
      }
      seen = true;
      return this.setWait((r.condition ?? '').trim());
    });
    if (!seen) this.wait = null;
    return results;
  }

  private setWait(text: string): FilterResult {
    try {
      let p: { condition: FilterCondition; waitMs: number };
      try {
        p = parseObserveCondition('waitTooLong', text, this.waitDefault);
      } catch (e) {
        throw new ConditionError((e as Error).message.replace(WAIT_CONDITION_SYNTAX, PASSIVE_WAIT_SYNTAX));
      }
      if (p.condition.ranges.length || p.condition.names.length) {
        throw new ConditionError(`'${text}': a passive attach cannot tell where a blocked thread faulted. A condition is ${PASSIVE_WAIT_SYNTAX}`);
      }
      const old = this.wait;
      const same = old !== null && old.text === text;
      this.wait = { text, ...p, matches: same ? old.matches : 0, spent: same ? old.spent : false };
      // A new condition may show episodes already shown under the old one.
      if (!same) for (const ep of this.episodes.values()) ep.shown = this.stops.has(ep.tid);
      const what = `stops when a thread has been blocked on a userfaultfd fault for at least ${p.waitMs} ms`;
      const c = p.condition;
      return { verified: true, message: c.tids.length || c.hit ? `${what}, where: ${text}` : what };
    } catch (e) {
      this.wait = null;
      return { verified: false, message: (e as Error).message };
    }
  }

  /** Lets waits stop (configurationDone). */
  start(): void {
    this.started = true;
  }

  private statOf(tid: number): ((n: number) => string) | null {
    try {
      return statFields(this.files.read(`/proc/${this.pid}/task/${tid}/stat`));
    } catch {
      return null;
    }
  }

  private commOf(tid: number): string {
    try {
      return readSmall(`/proc/${this.pid}/task/${tid}/comm`).trim();
    } catch {
      return this.stats.get(tid)?.name ?? '?';
    }
  }

  /** pc, sp and the system call of a blocked thread; null when unreadable or running. */
  blockedAt(tid: number): BlockedAt | null {
    let text: string;
    try {
      text = readSmall(`/proc/${this.pid}/task/${tid}/syscall`);
    } catch {
      return null;
    }
    const regs = parseSyscallFile(text);
    if (!regs) return null;
    const nr = Number(text.trim().split(/\s+/)[0]);
    return { ...regs, syscall: nr >= 0 ? nr : null };
  }

  /**
   * One look: the process (gone, a zombie, or another process with the same pid), each thread's
   * wchan (and the stat of a blocked one), each userfaultfd's fdinfo; every 5th look the task
   * list, every 20th the fd list. About 0.25 ms for the tests' postcopy (4 threads, 1
   * userfaultfd); with Node's timer wake-ups the adapter then uses 1-2 % of one vCPU.
   */
  private poll(): void {
    if (this.ended) return;
    this.polls++;
    const t = now();
    // The task list is read every 5th look, or after a thread was found gone: a new thread is
    // seen within 250 ms (its waits only start counting later, still a lower bound).
    if (this.relist || this.polls % 5 === 1) {
      try {
        this.tidNames = readdirSync(`/proc/${this.pid}/task`);
      } catch {
        this.finish(null);
        return;
      }
      this.relist = false;
    }
    const tids = this.tidNames;
    // The leader's wchan, kept open since attach, fails (ESRCH) once this process is gone, also
    // when its pid is reused; a zombie leader is still there. /proc/PID/stat, which costs more
    // than all the rest of a look, is read only when the leader may be the last thread left.
    try {
      this.files.read(`/proc/${this.pid}/task/${this.pid}/wchan`);
    } catch {
      this.finish(null);
      return;
    }
    if (tids.length <= 1) {
      let st: (n: number) => string;
      try {
        st = statFields(readSmall(`/proc/${this.pid}/stat`));
      } catch {
        this.finish(null);
        return;
      }
      if (st(3) === 'Z' || st(3) === 'X') {
        this.finish(/^\d+$/.test(st(52)) ? Number(st(52)) : null);
        return;
      }
    }
    const live = new Set<number>();
    for (const name of tids) {
      const tid = Number(name);
      let wchan: string;
      try {
        wchan = this.files.read(`/proc/${this.pid}/task/${tid}/wchan`).trim();
      } catch {
        this.relist = true; // the thread exited
        continue;
      }
      live.add(tid);
      let ep = this.episodes.get(tid);
      if (wchan !== WCHAN_FAULT && wchan !== WCHAN_EVENT) {
        if (ep) this.endEpisode(ep, ep.lastSeen);
        continue;
      }
      const ts = this.statOf(tid);
      const faults = ts ? Number(ts(10)) + Number(ts(12)) : -1;
      if (ep && (ep.faults !== faults || ep.wchan !== wchan)) {
        // It completed a fault between two looks: the earlier wait ended, this is another.
        this.endEpisode(ep, ep.lastSeen);
        ep = undefined;
      }
      if (!ep) ep = this.beginEpisode(tid, wchan, faults, t);
      ep.lastSeen = t;
    }
    for (const ep of this.episodes.values()) if (!live.has(ep.tid)) this.endEpisode(ep, ep.lastSeen, 'exited');
    for (const tid of this.liveTids) if (!live.has(tid)) this.files.forget(`/proc/${this.pid}/task/${tid}/`);
    this.liveTids = live;
    for (const u of this.uffdFds.values()) {
      const info = this.readFdinfo(u.fd);
      if (!info) continue;
      if (u.info && info.total > u.info.total) u.arrived += info.total - u.info.total;
      u.peakPending = Math.max(u.peakPending, info.pending);
      u.peakTotal = Math.max(u.peakTotal, info.total);
      u.info = info;
    }
    if (this.polls % 20 === 0) this.findUffds();
    this.checkWaits(t);
  }

  private beginEpisode(tid: number, wchan: string, faults: number, t: number): BlockedEpisode {
    const ep: BlockedEpisode = { tid, on: wchan === WCHAN_EVENT ? 'event' : 'fault', wchan, firstSeen: t, firstSeenWall: Date.now(),
      lastSeen: t, faults, shown: false, ended: null };
    this.episodes.set(tid, ep);
    let s = this.stats.get(tid);
    if (!s) {
      s = { name: this.commOf(tid), episodes: 0, longestMs: 0, blockedMs: 0, stops: 0 };
      this.stats.set(tid, s);
    }
    s.episodes++;
    return ep;
  }

  /** The wait is known to have lasted at least from the first look that saw it to the last. */
  private endEpisode(ep: BlockedEpisode, lastSeen: number, how: 'unblocked' | 'exited' = 'unblocked'): void {
    this.episodes.delete(ep.tid);
    ep.ended = lastSeen;
    const waited = lastSeen - ep.firstSeen;
    const s = this.stats.get(ep.tid);
    if (s) {
      s.longestMs = Math.max(s.longestMs, waited);
      s.blockedMs += waited;
    }
    const stop = this.stops.get(ep.tid);
    if (stop && stop.episode === ep) {
      this.stops.delete(ep.tid);
      this.emit('unblocked', ep.tid, waited, how);
    }
  }

  private checkWaits(t: number): void {
    const f = this.wait;
    if (!f || f.spent || !this.started) return;
    for (const ep of [...this.episodes.values()].sort((a, b) => a.firstSeen - b.firstSeen)) {
      const waited = t - ep.firstSeen;
      if (ep.shown || this.stops.has(ep.tid) || waited < f.waitMs) continue;
      ep.shown = true;
      if (f.condition.tids.length && !f.condition.tids.includes(ep.tid)) continue;
      if (!countHit(f)) continue;
      const name = this.commOf(ep.tid);
      const at = this.registersNote ? null : this.blockedAt(ep.tid);
      const what = ep.on === 'fault' ? 'a userfaultfd fault' : 'a userfaultfd event (fork, mremap, madvise or munmap)';
      const stop: PassiveStop = {
        reason: 'wait too long', pid: this.pid, tid: ep.tid, name, episode: ep, waitedMs: waited, at,
        filter: { id: 'waitTooLong', condition: f.text, waitMs: f.waitMs },
        description: `Paused: thread ${ep.tid} (${name}) has been blocked on ${what} for at least ${msText(waited)} ` +
          `(its handler has not ${ep.on === 'fault' ? 'resolved it' : 'read it'})`,
      };
      this.stops.set(ep.tid, stop);
      this.stopCount++;
      const s = this.stats.get(ep.tid);
      if (s) s.stops++;
      this.ranges();
      this.emit('stopped', stop);
      return; // one stop per look
    }
  }

  stopFor(tid: number): PassiveStop | undefined {
    return this.stops.get(tid);
  }

  allStops(): PassiveStop[] {
    return [...this.stops.values()];
  }

  /** The thread's current blocked episode, if it is blocked now (as of the last look). */
  episodeOf(tid: number): BlockedEpisode | undefined {
    return this.episodes.get(tid);
  }

  blockedNow(): BlockedEpisode[] {
    return [...this.episodes.values()].sort((a, b) => a.firstSeen - b.firstSeen);
  }

  threads(): TaskInfo[] {
    return this.ended ? [] : listTasks(this.pid);
  }

  /** Stops showing a thread as stopped: it was never stopped by the debugger, its wait goes on. */
  continueThread(tid: number): void {
    if (!this.stops.delete(tid)) throw new Error(`thread ${tid} is not shown stopped`);
  }

  /** Stops showing every thread as stopped; returns their tids. */
  continueAll(): number[] {
    const tids = [...this.stops.keys()];
    this.stops.clear();
    return tids;
  }

  /** Which userfaultfd a blocked thread waits on, as far as procfs tells. */
  uffdOfBlocked(): string {
    const fds = [...this.uffdFds.keys()];
    if (fds.length === 1) return `fd ${fds[0]} (the process's only userfaultfd)`;
    if (fds.length === 0) {
      return 'none held by this process: another process (which received it over SCM_RIGHTS, or a forked handler) handles its faults';
    }
    return `one of ${fds.map((f) => `fd ${f}`).join(', ')} (procfs does not say which)`;
  }

  /**
   * The stack of a thread shown stopped, while it is still blocked. In a user-mode fault the
   * helper unwinds from /proc's pc and sp without ptrace. A fault taken inside a system call is
   * not handed to the helper (it would seize and interrupt the thread, and a signal in a fault
   * taken for the kernel can make that call fail): its pc alone is symbolized here.
   */
  async stack(tid: number): Promise<StackBody> {
    if (!this.stops.has(tid)) throw new Error(`thread ${tid} is not shown stopped`);
    if (this.registersNote) throw new Error(this.registersNote);
    let wchan = '';
    try {
      wchan = readSmall(`/proc/${this.pid}/task/${tid}/wchan`).trim();
    } catch {
      throw new Error(`thread ${tid} has exited`);
    }
    if (wchan !== WCHAN_FAULT && wchan !== WCHAN_EVENT) {
      throw new Error(`thread ${tid} is no longer blocked (its handler resolved the fault): a running thread's stack is not read`);
    }
    const at = this.blockedAt(tid);
    if (at && at.syscall !== null) {
      let loc;
      try {
        loc = this.symbolizer.locate(readMaps(this.pid), at.pc);
      } catch {
        loc = null;
      }
      return {
        seq: 0, tid, pid: this.pid, registersFrom: 'procfs', registers: { rip: hex(at.pc), rsp: hex(at.sp) },
        note: `thread ${tid} faulted inside system call ${at.syscall} (the kernel touched the page for it): it is not interrupted ` +
          'to unwind its stack (a signal could make that call fail), so only the system call\'s own instruction is shown',
        frames: [{
          pc: hex(at.pc),
          ...(loc?.module ? { module: loc.module } : {}),
          ...(loc?.func ? { function: loc.func } : {}),
          ...(loc?.file ? { file: loc.file } : {}),
          ...(loc?.line ? { line: loc.line } : {}),
        }],
        unwindEnd: null, cached: false,
      };
    }
    return this.stackReader.read(this.pid, tid);
  }

  /** Kills the process (disconnect with terminateDebuggee only); a new process with the same pid is left alone. */
  kill(): string {
    if (this.ended) return `pid ${this.pid} has already exited`;
    try {
      if (statFields(readSmall(`/proc/${this.pid}/stat`))(22) !== this.startTime) return `pid ${this.pid} has already exited`;
      process.kill(this.pid, 'SIGKILL');
      return `killed pid ${this.pid} (${this.name}) with SIGKILL, as the disconnect asked (terminateDebuggee)`;
    } catch (e) {
      return errCode(e) === 'ENOENT' || errCode(e) === 'ESRCH' ? `pid ${this.pid} has already exited`
        : `could not kill pid ${this.pid}: ${(e as Error).message}`;
    }
  }

  private finish(status: number | null): void {
    if (this.exitInfo) return;
    const t = now();
    this.stops.clear(); // the exit ends them: no thread is reported unblocked
    for (const ep of [...this.episodes.values()]) this.endEpisode(ep, ep.lastSeen, 'exited');
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.files.closeAll();
    const { code, signal } = status === null ? { code: null, signal: null } : decodeWaitStatus(status);
    this.exitInfo = { code, signal, text: '' };
    this.exitInfo.text = this.summaryText(t);
    this.emit('exited', this.exitInfo);
  }

  /** Stops watching; the process is left as it is. */
  async dispose(): Promise<void> {
    this.disposed = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.stops.clear();
    this.files.closeAll();
    await this.stackReader.stop();
  }

  // ---- Debug Console texts ----

  threadsText(): string {
    const tasks = this.threads();
    if (tasks.length === 0) return `pid ${this.pid} has exited`;
    const t = now();
    return tasks.map((k) => {
      const ep = this.episodes.get(k.tid);
      const blocked = ep ? `  blocked on a userfaultfd ${ep.on} for at least ${msText(t - ep.firstSeen)}` : '';
      return `${k.tid} ${k.name} ${k.state} ${k.wchan || '-'}${blocked}${this.stops.has(k.tid) ? ' (shown stopped)' : ''}`;
    }).join('\n');
  }

  uffdsText(): string {
    const L: string[] = [];
    const fds = this.uffds();
    if (fds.length === 0) L.push(`pid ${this.pid} holds no userfaultfd: its faults are handled through a descriptor in another process`);
    for (const u of fds) {
      if (!u.info) {
        L.push(`fd ${u.fd}: fdinfo not readable (closed?)`);
        continue;
      }
      const i = u.info;
      const feat = i.features !== null ? decodeUffdFeatures(i.features) : null;
      L.push(`fd ${u.fd}: pending ${i.pending} (queued, not yet read by the handler), total ${i.total} (waiting now: ` +
        `pending + ${i.total - i.pending} read and not resolved)`);
      L.push(`  features ${feat ? (feat.names.join(' ') || 'none') + (feat.negotiated ? '' : ' (UFFDIO_API not done yet)') : '?'}; ` +
        `API 0x${i.api?.toString(16) ?? '?'}; ioctls the kernel offers: ${i.ioctls !== null ? decodeUffdIoctls(i.ioctls).join(' ') : '?'}`);
      L.push(`  while attached: faults arrived at least ${u.arrived}, most waiting at once ${u.peakTotal} (${u.peakPending} unread)`);
    }
    const ranges = this.ranges();
    L.push(ranges.length ? `registered ranges (smaps VmFlags um/uw/ui${fds.length > 1 ? '; smaps does not say on which userfaultfd' : ''}):`
      : 'no range registered in this process');
    for (const r of ranges) L.push(`  ${rangeText(r)}`);
    return L.join('\n');
  }

  blockedText(): string {
    const t = now();
    const eps = this.blockedNow();
    if (eps.length === 0) return `no thread of pid ${this.pid} is blocked on a userfaultfd now (as of the last look, every ${this.pollMs} ms)`;
    return eps.map((ep) => {
      const at = this.registersNote ? null : this.blockedAt(ep.tid);
      const where = at ? ` at pc ${hex(at.pc)} sp ${hex(at.sp)}${at.syscall !== null ? ` in system call ${at.syscall}` : ''}` : '';
      return `thread ${ep.tid} (${this.stats.get(ep.tid)?.name ?? '?'}): blocked on a userfaultfd ${ep.on} for at least ` +
        `${msText(t - ep.firstSeen)}${where}${this.stops.has(ep.tid) ? ' (shown stopped)' : ''}`;
    }).join('\n');
  }

  /** The figures so far; at exit, the Debug Console's end-of-session summary. */
  summaryText(t = now()): string {
    const L: string[] = ['', '── passive observe summary ──'];
    L.push(`pid ${this.pid} (${this.name}) watched for ${((t - this.attachedAt) / 1000).toFixed(1)} s, a look every ${this.pollMs} ms ` +
      '(a wait shorter than that is usually not seen; every wait below is a lower bound)');
    const blocked = new Map(this.blockedNow().map((e) => [e.tid, e]));
    if (this.stats.size === 0) L.push('no thread was seen blocked on a userfaultfd');
    for (const [tid, s] of [...this.stats].sort((a, b) => a[0] - b[0])) {
      const ep = blocked.get(tid);
      const cur = ep ? t - ep.firstSeen : 0;
      L.push(`  thread ${tid} (${s.name}): ${plural(s.episodes, 'blocked episode')}, longest at least ${msText(Math.max(s.longestMs, cur))}, ` +
        `blocked at least ${msText(s.blockedMs + cur)} in all${s.stops ? `, ${plural(s.stops, 'stop')}` : ''}${ep ? ' (still blocked)' : ''}`);
    }
    const longest = Math.max(0, ...[...this.stats.values()].map((s) => s.longestMs), ...[...blocked.values()].map((e) => t - e.firstSeen));
    L.push(`longest wait seen: at least ${msText(longest)}; stops: ${this.stopCount}`);
    for (const u of this.uffdFds.values()) {
      L.push(`userfaultfd fd ${u.fd}: faults that arrived while attached, at least ${u.arrived} (rises of fdinfo 'total' between ` +
        `looks: it counts the faults waiting at that moment, not a running total), most waiting at once ${u.peakTotal}`);
    }
    return L.join('\n') + '\n';
  }
}

/** "0x…-0x… mode missing · 128 pages · [anon] rw-p" (without the range when `withRange` is false). */
export function rangeText(r: RegisteredRange, withRange = true): string {
  return `${withRange ? `${hex(r.start)}-${hex(r.end)} ` : ''}mode ${r.modes.join('+')} · ` +
    `${plural(Number((r.end - r.start) / 4096n), 'page')} · ${r.name} ${r.perms}`;
}
