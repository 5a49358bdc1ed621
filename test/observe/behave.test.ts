// The interposition changes nothing but timing: test/observe/behave.c prints what the kernel
// answers (errno values, EAGAIN on an empty non-blocking read, short reads, poll/epoll
// readiness, readv, raw syscall(2), dup/fcntl/close, SCM_RIGHTS, /dev/userfaultfd, fork, bad
// pointers) and must print the same with the library preloaded, observed or not.
import { strict as assert } from 'node:assert';
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { closeSync, constants, mkdtempSync, openSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { before, describe, it } from 'node:test';
import { ObserveSession } from '../../server/core/observe';
import { buildC, LIB, observe } from './support';
import { withTimeout } from '../support/waits';

describe('observe: behaviour unchanged', { timeout: 120_000 }, () => {
  let behave = '';
  let plain = '';

  before(() => {
    behave = buildC('behave');
    const r = spawnSync(behave, [], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(r.status, 0, r.stderr);
    plain = r.stdout;
    assert.match(plain, /^done$/m);
  });

  it('prints the same observed as without the library, and the records say what happened', async () => {
    const r = await observe({ program: behave });
    assert.equal(r.result.code, 0, r.stderr);
    assert.equal(r.stdout, plain);
    assert.equal(r.result.truncated, 0);
    const recs = r.records;
    const main = recs.find((x) => x.type === 'hello')!.pid;
    assert.match(plain, /close 1000: r=-1 errno=EBADF/);
    // The short read: two records of one message each, by read and by readv.
    const reads = recs.filter((x) => x.type === 'read' && x.msgs.length > 0);
    assert.deepEqual(reads.map((x) => x.type === 'read' && [x.via, x.result, x.msgs.length]), [['read', 32, 1], ['readv', 32, 1]]);
    // EAGAIN reads are not recorded; the EINVAL one (buffer too small) is.
    assert.ok(recs.some((x) => x.type === 'read' && x.errno === 'EINVAL'));
    assert.ok(!recs.some((x) => x.type === 'read' && x.errno === 'EAGAIN'));
    // Bad pointers are reported, not dereferenced.
    assert.ok(recs.some((x) => x.type === 'register' && x.errno === 'EFAULT' && x.start === '0x0'));
    assert.ok(recs.some((x) => x.type === 'ioctl' && x.op === 'COPY' && x.errno === 'EFAULT'));
    const eexist = recs.find((x) => x.type === 'ioctl' && x.errno === 'EEXIST');
    assert.ok(eexist && eexist.type === 'ioctl' && eexist.done === -17);
    // Every way a userfaultfd appears, and the copies of it.
    const hows = recs.filter((x) => x.type === 'uffd').map((x) => x.type === 'uffd' && x.how);
    // The last: made after closefrom(3) (the channel survived it), then inherited across exec.
    assert.deepEqual(hows, ['syscall', 'scm', 'dev', 'syscall', 'inherit']);
    assert.equal(recs.filter((x) => x.type === 'hello').length, 2, 'the library started again after exec');
    assert.equal(recs.filter((x) => x.type === 'dup').length, 4, 'dup, fcntl, dup2, dup2 onto the channel\'s number');
    const child = recs.find((x) => x.type === 'fork' && x.ppid === main && x.pid !== main);
    assert.ok(child, 'the forked child reported itself');
    assert.ok(recs.some((x) => x.type === 'read' && x.pid === child.pid && x.uffd === 1 && x.errno === 'EINVAL'),
      'the child\'s read on the inherited userfaultfd is reported with its pid');
    const s = r.result.summary;
    assert.equal(s.faults, 2);
    assert.equal(s.resolved, 2);
    assert.equal(s.duplicates, 1);
    assert.equal(s.uffds.length, 4, 'the SCM_RIGHTS copy is the same userfaultfd');
    assert.equal(s.perThread.length, 2);
    const resolvedBy = r.events.filter((e) => e.event === 'resolved').map((e) => e.event === 'resolved' && e.ioctl);
    assert.deepEqual(resolvedBy.sort(), ['UFFDIO_COPY', 'UFFDIO_ZEROPAGE']);
  });

  it('sees reads through __read_chk in a program built with _FORTIFY_SOURCE', async () => {
    const fortified = buildC('behave', ['-O2', '-D_FORTIFY_SOURCE=2']);
    const r = await observe({ program: fortified });
    assert.equal(r.result.code, 0, r.stderr);
    assert.equal(r.stdout, plain);
    assert.ok(r.records.some((x) => x.type === 'read' && x.via === '__read_chk' && x.errno === 'EINVAL'));
  });

  it('says what is wrong when the program cannot be started', async () => {
    const s = new ObserveSession();
    await assert.rejects(s.start({ program: '/nonexistent/handler' }),
      /cannot start \/nonexistent\/handler: spawn \/nonexistent\/handler ENOENT \(check the path and that it is executable\)/);
    await assert.rejects(new ObserveSession().start({ program: behave, library: '/nonexistent/lib.so' }),
      /the observe library \/nonexistent\/lib.so does not exist; run 'npm run build'/);
  });

  it('prints the same preloaded without a channel, and with a bad one', () => {
    const env: NodeJS.ProcessEnv = { ...process.env, LD_PRELOAD: LIB };
    delete env.UFFD_OBSERVE_FD;
    const a = spawnSync(behave, [], { encoding: 'utf8', env, timeout: 30_000 });
    assert.equal(a.status, 0);
    assert.equal(a.stdout, plain);
    assert.equal(a.stderr, '');
    const b = spawnSync(behave, [], { encoding: 'utf8', env: { ...env, UFFD_OBSERVE_FD: '77' }, timeout: 30_000 });
    assert.equal(b.status, 0);
    assert.equal(b.stdout, plain);
    assert.match(b.stderr, /UFFD_OBSERVE_FD=77 is not an open descriptor \(Bad file descriptor\): not observing/);
  });

  it('keeps the program running when the observer closes the channel', async () => {
    const p = spawn(behave, [], { env: { ...process.env, LD_PRELOAD: LIB, UFFD_OBSERVE_FD: '3' },
      stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
    p.stdio[3]!.destroy();
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const [code, signal] = await withTimeout(new Promise<[number | null, string | null]>((r) =>
      p.on('close', (c, s) => r([c, s]))), 30_000, 'behave to end');
    assert.equal(signal, null, 'no SIGPIPE');
    assert.equal(code, 0);
    assert.equal(out, plain);
  });

  it('is not killed by SIGPIPE when the channel is a pipe nobody reads', async () => {
    const fifo = path.join(mkdtempSync(path.join(tmpdir(), 'uffd-observe-')), 'chan');
    execFileSync('mkfifo', [fifo]);
    const rd = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK);
    const wr = openSync(fifo, 'w');
    closeSync(rd);
    const p = spawn(behave, [], { env: { ...process.env, LD_PRELOAD: LIB, UFFD_OBSERVE_FD: '3' },
      stdio: ['ignore', 'pipe', 'pipe', wr] });
    closeSync(wr);
    let out = '';
    p.stdout!.setEncoding('utf8').on('data', (d: string) => { out += d; });
    const [code, signal] = await withTimeout(new Promise<[number | null, string | null]>((r) =>
      p.on('close', (c, s) => r([c, s]))), 30_000, 'behave to end');
    assert.equal(signal, null, 'no SIGPIPE');
    assert.equal(code, 0);
    assert.equal(out, plain);
  });
});
