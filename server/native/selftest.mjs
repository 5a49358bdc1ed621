#!/usr/bin/env node
// Dev tool: drives bin/uffd-helper against demo/bin/touch on the real kernel.
//   node server/native/selftest.mjs        (after make -C server/native && make -C demo)
// Uses only node built-ins; every wait has a timeout.
import { spawn, execFileSync } from 'node:child_process';
import { readdirSync, readlinkSync, existsSync, readFileSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const HELPER = process.env.UFFD_HELPER || join(here, 'bin', 'uffd-helper');
const TOUCH = join(root, 'demo', 'bin', 'touch');
const TIMEOUT = 20000;

let failures = 0;
function check(cond, what) {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${what}`);
  if (!cond) failures++;
}

function withTimeout(p, ms, what) {
  let t;
  return Promise.race([p, new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`timeout: ${what}`)), ms); })])
    .finally(() => clearTimeout(t));
}

class Helper {
  constructor() {
    this.proc = spawn(HELPER, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.nextId = 1;
    this.pending = new Map();
    this.events = [];
    this.listeners = [];
    this.progOut = '';
    this.stderr = '';
    this.raw = [];
    let buf = '';
    this.proc.stdout.on('data', (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.raw.push(line);
        const m = JSON.parse(line); // any non-JSON line is a test failure (throws)
        if (m.type === 'event' && m.event === 'output') {
          // the program's stdout/stderr, base64, in order with faults
          const data = Buffer.from(m.data, 'base64').toString('utf8');
          if (m.stream === 'stdout') this.progOut += data; else process.stderr.write(data);
        } else if (m.type === 'response') {
          const p = this.pending.get(m.id);
          if (p) { this.pending.delete(m.id); p(m); } else this.orphans = (this.orphans || []).concat(m);
        } else {
          for (const e of m.event === 'faults' ? unbatch(m) : [m]) {
            this.events.push(e);
            for (const l of this.listeners) l(e);
          }
        }
      }
    });
    this.proc.stderr.on('data', (d) => { this.stderr += d; if (process.env.VERBOSE) process.stderr.write(d); });
    this.exit = new Promise((res) => this.proc.on('exit', (code, sig) => res({ code, sig })));
  }
  send(line) { this.proc.stdin.write(line); }
  request(cmd, args = {}) {
    const id = this.nextId++;
    const p = new Promise((res) => this.pending.set(id, res));
    this.send(JSON.stringify({ id, cmd, ...args }) + '\n');
    return withTimeout(p, TIMEOUT, cmd);
  }
  waitEvent(pred, what) {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return withTimeout(new Promise((res) => {
      const l = (m) => { if (pred(m)) { this.listeners = this.listeners.filter((x) => x !== l); res(m); } };
      this.listeners.push(l);
    }), TIMEOUT, what);
  }
  async close() {
    const r = await this.request('shutdown');
    this.proc.stdin.end();
    const e = await withTimeout(this.exit, TIMEOUT, 'helper exit');
    return { r, e };
  }
}

/** A `faults` event (auto-resolved faults in columns, see docs/protocol.md) as `fault` events. */
function unbatch(m) {
  const out = [];
  let seq = 0, t = 0, page = 0, tid = 0;
  for (let k = 0; k < m.seq.length; k++) {
    seq += m.seq[k];
    t += m.t[k];
    page += m.page[k];
    tid += m.tid[k];
    const f = m.flags[k];
    out.push({ type: 'event', event: 'fault', seq, t, addr: '0x' + (page * 4096 + m.off[k]).toString(16),
      page: '0x' + (page * 4096).toString(16), access: f & 1 ? 'write' : 'read', kind: ['missing', 'wp', 'minor'][(f >> 2) & 3],
      tid, held: false, ioctl: m.ioctls[m.ioctl[k]], latencyNs: m.lat[k], ...(m.pid[k] ? { pid: m.pid[k] } : {}) });
  }
  return out;
}

function plainRun(args) {
  return execFileSync(TOUCH, args, { encoding: 'utf8' });
}

async function session(args, { hold = false, expectPages }) {
  const h = new Helper();
  const hello = await h.request('hello', { protocol: 2 });
  check(hello.ok && hello.body.uffd.available, 'hello: uffd available');
  const launch = await h.request('launch', { program: TOUCH, args, cwd: root, env: null });
  check(launch.ok, `launch ${args.join(' ')}: ${launch.ok ? `pid ${launch.body.pid}, ${launch.body.regions.length} regions` : JSON.stringify(launch.error)}`);
  if (!launch.ok) { await h.close(); return; }
  const pol = await h.request('policy', { hold: { missing: hold }, stream: 'all' });
  check(pol.ok && pol.body.hold.missing === hold && pol.body.stream === 'all', 'policy accepted');
  let resolveErrors = 0;
  const resolves = [];
  if (hold) {
    h.listeners.push((m) => {
      if (m.event === 'fault' && m.held) {
        resolves.push(h.request('resolve', { seq: m.seq, how: 'default' }).then((r) => {
          // a fault on a page resolved together with an earlier one is ESTATE: fine
          if (!r.ok && r.error.code !== 'ESTATE') resolveErrors++;
        }));
      }
    });
  }
  const t0 = process.hrtime.bigint();
  const run = await h.request('run');
  check(run.ok, 'run');
  const exited = await h.waitEvent((m) => m.event === 'exited', 'exited');
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await Promise.all(resolves);
  check(exited.code === 0 && exited.signal === null, `exited code ${exited.code} signal ${exited.signal} after ${ms.toFixed(1)} ms`);
  const stats = await h.request('stats');
  await new Promise((r) => setTimeout(r, 50)); // program output pipe drains
  const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(h.progOut);
  check(!!m, `program printed its region: ${h.progOut.split('\n')[0]}`);
  const start = BigInt(m[1]);
  const end = start + BigInt(m[2]) * 4096n;
  const faults = h.events.filter((e) => e.event === 'fault');
  const inRegion = faults.filter((e) => BigInt(e.page) >= start && BigInt(e.page) < end);
  const pages = new Set(inRegion.map((e) => e.page));
  check(inRegion.length === expectPages && pages.size === expectPages,
    `faults in region: ${inRegion.length} (distinct pages ${pages.size}), expected ${expectPages}; total faults ${faults.length}, stats ${JSON.stringify(stats.body.faults)}`);
  const seqs = faults.map((f) => f.seq);
  check(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'fault seqs increase');
  if (hold) {
    check(faults.every((f) => f.held), 'every fault was held');
    const resolved = h.events.filter((e) => e.event === 'resolved');
    check(resolved.length === faults.length && resolveErrors === 0, `every held fault resolved (${resolved.length}/${faults.length}, errors ${resolveErrors})`);
  } else {
    const lat = inRegion.map((f) => f.latencyNs).sort((a, b) => a - b);
    console.log(`     latencyNs median ${lat[lat.length >> 1]} p99 ${lat[Math.floor(lat.length * 0.99)]}`);
  }
  const plain = plainRun(args);
  const ck = (s) => s.split('\n').find((l) => l.startsWith('checksum'));
  check(ck(h.progOut) === ck(plain), `checksum matches a plain run: '${ck(h.progOut)}'`);
  const regions = h.events.filter((e) => e.event === 'region').map((e) => e.region.via);
  const viaCount = regions.reduce((a, v) => ((a[v] = (a[v] || 0) + 1), a), {});
  console.log(`     region events: ${JSON.stringify(viaCount)}`);
  const { e } = await h.close();
  check(e.code === 0, `helper exit code ${e.code}`);
  return { h, faults, ms };
}

async function fdCheck() {
  const h = new Helper();
  await h.request('hello', { protocol: 2 });
  const l = await h.request('launch', { program: TOUCH, args: ['--sleep-ms', '3000', '--pages', '16'], cwd: root, env: null });
  const pid = l.body.pid;
  await h.request('run');
  await withTimeout((async () => { while (!h.progOut.includes('region')) await new Promise((r) => setTimeout(r, 20)); })(), TIMEOUT, 'region line');
  const fds = readdirSync(`/proc/${pid}/fd`).map((f) => `${f} -> ${readlinkSync(`/proc/${pid}/fd/${f}`)}`);
  check(!fds.some((f) => f.includes('userfaultfd')), `program fds have no userfaultfd: ${fds.join(', ')}`);
  const hfds = readdirSync(`/proc/${h.proc.pid}/fd`).map((f) => { try { return readlinkSync(`/proc/${h.proc.pid}/fd/${f}`); } catch { return '?'; } });
  check(hfds.some((f) => f.includes('userfaultfd')), 'helper holds the userfaultfd');
  const kids = readFileSync(`/proc/${h.proc.pid}/task/${h.proc.pid}/children`, 'utf8').trim();
  check(kids === String(pid), `helper's children before shutdown: '${kids}'`);
  const { e } = await h.close();
  check(e.code === 0, `shutdown while the program sleeps: helper exit ${e.code}`);
  check(!existsSync(`/proc/${pid}`), `program ${pid} is gone after shutdown`);
}

async function garbage() {
  const h = new Helper();
  const bad = [
    Buffer.from([0xff, 0x00, 0x13, 0x7b, 0x22, 0x80, 0xfe]).toString('latin1') + '\n',
    'not json at all\n', '{}\n', '{"id":"x"}\n', '[1,2,3]\n', '{"id":-1,"cmd":"hello"}\n',
    '{"id":1.5,"cmd":"hello"}\n', '{"id":7,"cmd":42}\n', '{"id":8,"cmd":"frobnicate"}\n',
    '{"id":5,"cmd":"resolve","seq":999}\n', '{"id":9,"cmd":"hello","protocol":1}\n',
    '{"id":10,"cmd":"hello","protocol":"1"}\n', '{"id":11' + ',"a":['.repeat(200) + '\n',
    '{"id":12,"cmd":"hello","protocol":2,"x":"\\ud800\\u0000\\"\\n"}\n',
    '{"id":13,"cmd":"run"}\n', '{"id":14,"cmd":"resolve","seq":999}\n',
    '{"id":15,"cmd":"resolve","seq":"1"}\n', '{"id":16,"cmd":"policy","hold":{"missing":1}}\n',
    '{"id":17,"cmd":"policy","hold":{"bogus":true}}\n', '{"id":18,"cmd":"policy","stream":"lots"}\n',
    '{"id":19,"cmd":"launch"}\n', '{"id":20,"cmd":"launch","program":"/nonexistent/x"}\n',
    '{"id":21,"cmd":"launch","program":"' + TOUCH + '","cwd":"/nonexistent"}\n',
    '{"id":22,"cmd":"launch","program":"/etc/passwd"}\n',
    '{"id":23,"cmd":"launch","program":""}\n',
    '{"id":24,"cmd":"launch","program":"' + TOUCH + '","cwd":""}\n',
    '{"id":25,"cmd":"launch","program":"' + TOUCH + '","args":[1]}\n',
    '{"id":26,"cmd":"kill"}\n', '{"id":27,"cmd":"resolveAll"}\n', '{"id":28,"cmd":"stats"}\n',
    '{"id":29,"cmd":"launch","program":"no-such-program-xyz"}\n',
  ];
  for (const b of bad) h.send(b);
  h.send('{"id":30,"cmd":"policy","x":"' + 'a'.repeat(2 * 1024 * 1024) + '"}\n');
  const rnd = Buffer.alloc(65536);
  for (let i = 0; i < rnd.length; i++) rnd[i] = (Math.random() * 256) | 0;
  h.proc.stdin.write(rnd);
  h.send('\n');
  const r = await h.request('hello', { protocol: 2 });
  check(r.ok, 'hello answered after garbage');
  const all = h.raw.map((l) => JSON.parse(l)).filter((m) => m.type === 'response');
  const byId = (id) => all.filter((m) => m.id === id).map((m) => (m.ok ? 'ok' : m.error.code)).join(',');
  console.log('     error responses by id: ' + JSON.stringify(Object.fromEntries(
    [0, 5, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29].map((i) => [i, byId(i)]))));
  check(all.every((m) => m.ok || (typeof m.error.code === 'string' && typeof m.error.message === 'string')), 'all responses well formed');
  check(byId(5) === 'ESTATE' && byId(9) === 'EVERSION' && byId(8) === 'EPROTO' && byId(14) === 'ESTATE', 'ESTATE/EVERSION/EPROTO codes');
  check(byId(20) === 'ENOENT' && byId(21) === 'ENOENT' && byId(22) === 'EACCES', 'launch failures reach the client with errno codes');
  const msg = (id) => all.find((m) => m.id === id)?.error?.message;
  console.log(`     e.g. ${msg(21)} | ${msg(22)}`);
  check(all.filter((m) => m.id === 0).length >= 6, `id-0 EPROTO responses: ${all.filter((m) => m.id === 0).length}`);
  const launch = await h.request('launch', { program: TOUCH, args: ['--pages', '4'], cwd: root, env: { PATH: '/usr/bin' } });
  check(launch.ok, 'launch still works after garbage and failed launches');
  await h.request('run');
  const ex = await h.waitEvent((m) => m.event === 'exited', 'exited');
  check(ex.code === 0, 'program ran');
  const { e } = await h.close();
  check(e.code === 0, 'helper exits 0');
}

async function killTest() {
  const h = new Helper();
  await h.request('hello', { protocol: 2 });
  await h.request('launch', { program: TOUCH, args: ['--pages', '64'], cwd: root, env: null });
  await h.request('policy', { holdNext: true });
  await h.request('run');
  const f = await h.waitEvent((m) => m.event === 'fault' && m.held, 'held fault');
  const st = await h.request('stats');
  check(st.body.held === 1, `holdNext held one fault (seq ${f.seq}), stats.held ${st.body.held}`);
  const k = await h.request('kill');
  check(k.ok, 'kill');
  const ex = await h.waitEvent((m) => m.event === 'exited', 'exited');
  check(ex.signal === 'SIGKILL', `exited with ${ex.signal}`);
  const r = await h.request('resolve', { seq: f.seq });
  check(!r.ok && r.error.code === 'ESTATE', `resolve after exit: ${r.error && r.error.code}`);
  const { e } = await h.close();
  check(e.code === 0, 'helper exits 0');
}

async function eofTest() {
  const h = new Helper();
  await h.request('hello', { protocol: 2 });
  const l = await h.request('launch', { program: TOUCH, args: ['--sleep-ms', '10000'], cwd: root, env: null });
  await h.request('run');
  h.proc.stdin.end();
  const e = await withTimeout(h.exit, TIMEOUT, 'exit on EOF');
  check(e.code === 0 && !existsSync(`/proc/${l.body.pid}`), `EOF: helper exit ${e.code}, program gone`);
}

async function heapTest() {
  const bin = join(tmpdir(), `uffd-heapthread-${process.pid}`);
  execFileSync('gcc', ['-O1', '-g', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', bin, join(here, 'tests', 'heapthread.c')]);
  const h = new Helper();
  await h.request('hello', { protocol: 2 });
  const l = await h.request('launch', { program: bin, args: [], cwd: root, env: null });
  check(l.ok, 'launch heapthread');
  await h.request('run');
  const ex = await h.waitEvent((m) => m.event === 'exited', 'exited');
  check(ex.code === 0, 'heapthread exited 0');
  await new Promise((r) => setTimeout(r, 50));
  const m = /heap (0x[0-9a-f]+) (0x[0-9a-f]+) sbrk (0x[0-9a-f]+)\nstack (0x[0-9a-f]+)/.exec(h.progOut);
  check(!!m, `heapthread output: ${JSON.stringify(h.progOut)}`);
  const first = BigInt(m[1]) & ~4095n, last = BigInt(m[2]) + 1000n, stack = BigInt(m[4]) & ~4095n;
  const faults = h.events.filter((e) => e.event === 'fault').map((e) => BigInt(e.page));
  const heapFaults = new Set(faults.filter((p) => p >= first && p < last));
  const want = Number((last - first + 4095n) / 4096n);
  check(heapFaults.size === want, `brk heap pages faulted: ${heapFaults.size} of ${want}`);
  const regions = h.events.filter((e) => e.event === 'region').map((e) => e.region);
  const inReg = (a, via) => regions.some((r) => r.via === via && BigInt(r.start) <= a && a < BigInt(r.end));
  check(inReg(first, 'brk') && inReg(last, 'brk'), 'heap is covered by brk regions');
  check(inReg(stack, 'mmap') && faults.some((p) => p === stack), `thread stack page ${m[4]} is in an mmap region and faulted`);
  await h.close();
  unlinkSync(bin);
}

async function resolveAllAndWake() {
  const h = new Helper();
  await h.request('hello', { protocol: 2 });
  await h.request('launch', { program: TOUCH, args: ['--pages', '200', '--threads', '2'], cwd: root, env: null });
  // wake first: the woken thread faults again on the same page
  await h.request('policy', { holdNext: true, stream: 'all' });
  await h.request('run');
  const f = await h.waitEvent((m) => m.event === 'fault' && m.held, 'held fault');
  const w = await h.request('resolve', { seq: f.seq, how: 'wake' });
  check(w.ok && w.body.ioctl === 'UFFDIO_WAKE' && w.body.woken.includes(f.seq), `resolve wake: ${JSON.stringify(w.body)}`);
  const again = await h.waitEvent((m) => m.event === 'fault' && m.page === f.page && m.seq > f.seq, 'refault after wake');
  check(!again.held && again.ioctl, `page ${f.page} faulted again as seq ${again.seq} after wake (${again.ioctl})`);
  await h.waitEvent((m) => m.event === 'exited', 'exited');
  await h.close();

  const h2 = new Helper();
  await h2.request('hello', { protocol: 2 });
  await h2.request('launch', { program: TOUCH, args: ['--pages', '200', '--threads', '2'], cwd: root, env: null });
  await h2.request('policy', { hold: { missing: true }, stream: 'held' });
  await h2.request('run');
  let exited = false, resolved = 0, rounds = 0;
  h2.waitEvent((m) => m.event === 'exited', 'exited').then(() => { exited = true; });
  while (!exited && rounds++ < 2000) {
    const r = await h2.request('resolveAll');
    if (!r.ok) { check(false, `resolveAll: ${JSON.stringify(r.error)}`); break; }
    resolved += r.body.resolved.length;
    await new Promise((res) => setTimeout(res, 2));
  }
  const held = h2.events.filter((e) => e.event === 'fault').length;
  const stats = await h2.request('stats');
  check(exited && resolved === held, `resolveAll released every held fault: ${resolved}/${held} in ${rounds} rounds; stats ${JSON.stringify(stats.body)}`);
  await new Promise((res) => setTimeout(res, 50));
  check(/checksum 4e20 touched 200/.test(h2.progOut), `checksum under resolveAll: ${h2.progOut.split('\n')[1]}`);
  await h2.close();
}

const only = process.argv[2];
const tests = {
  seq: () => session(['--pages', '1000'], { expectPages: 1000 }),
  read: () => session(['--pages', '1000', '--read'], { expectPages: 1000 }),
  threads: () => session(['--pages', '1000', '--threads', '4', '--pattern', 'random'], { expectPages: 1000 }),
  stride: () => session(['--pages', '1000', '--threads', '2', '--pattern', 'stride:7'], { expectPages: 1000 }),
  hold: () => session(['--pages', '1000'], { hold: true, expectPages: 1000 }),
  holdThreads: () => session(['--pages', '1000', '--threads', '4', '--pattern', 'random'], { hold: true, expectPages: 1000 }),
  big: () => session(['--pages', '50000'], { expectPages: 50000 }),
  heap: heapTest,
  resolveAll: resolveAllAndWake,
  fd: fdCheck,
  garbage,
  kill: killTest,
  eof: eofTest,
};
for (const [name, fn] of Object.entries(tests)) {
  if (only && only !== name) continue;
  console.log(`== ${name}`);
  try { await fn(); } catch (e) { check(false, `${name}: ${e.stack}`); }
}
console.log(failures ? `${failures} FAILED` : 'all passed');
process.exit(failures ? 1 : 0);
