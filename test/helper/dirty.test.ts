// Asynchronous write-protect (wpAsync) on the real kernel: the helper protects populated pages,
// demo/bin/events writes known subsets of them without ever stopping, and `dirty`
// (PAGEMAP_SCAN) lists exactly the pages written since protected or since the last reset.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperClient, HelperError } from '../../server/core/helperClient';
import { hex, PAGE, root, Target } from './kindsHarness';

const EVENTS = path.join(root, 'demo', 'bin', 'events');
const clients: HelperClient[] = [];
after(async () => { for (const c of clients.splice(0)) await c.stop(); });

async function launchDirty(args: string[], wpAsync: boolean): Promise<{ t: Target; features: string[] }> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  const t = new Target(c);
  const l = await c.request('launch', { program: EVENTS, args, cwd: root, env: null, wpAsync });
  t.pid = l.pid;
  await c.request('run', {});
  return { t, features: l.features.names };
}

async function readyAddr(t: Target): Promise<bigint> {
  const m = await t.until(() => /ready (0x[0-9a-f]+) pages (\d+)/.exec(t.stdout) ?? undefined, 'ready line');
  return BigInt(m[1]);
}

describe('asynchronous write-protect (wpAsync + dirty)', { timeout: 60_000 }, () => {
  test('dirty lists exactly the pages written; reset re-arms; no wp faults are delivered', async (ctx) => {
    const { t, features } = await launchDirty(['--mode', 'dirty', '--pages', '16', '--sets', '1,3,6,15;2,3'], true);
    if (!features.includes('WP_ASYNC')) {
      ctx.skip('kernel does not offer UFFD_FEATURE_WP_ASYNC');
      return;
    }
    const addr = await readyAddr(t);
    const start = hex(addr), end = hex(addr + 16n * PAGE);
    const pg = (...i: number[]) => i.map((k) => hex(addr + BigInt(k) * PAGE));
    await assert.rejects(t.c.request('dirty', { start, end }),
      (e: unknown) => e instanceof HelperError && e.code === 'EPERM' && /protect/.test(e.message), 'not protected yet');
    await t.c.request('protect', { start, end, on: true });
    assert.deepEqual(await t.c.request('dirty', { start, end }), { pages: [], count: 0, truncated: false });

    t.go();
    await t.until(() => t.stdout.includes('wrote 0'), 'first set written');
    const first = await t.c.request('dirty', { start, end });
    assert.deepEqual(first, { pages: pg(1, 3, 6, 15), count: 4, truncated: false });
    // reset: returns the same list, and protects those pages again
    assert.deepEqual(await t.c.request('dirty', { start, end, reset: true }), first);
    assert.deepEqual((await t.c.request('dirty', { start, end })).pages, [], 'nothing written since the reset');

    t.go();
    await t.until(() => t.stdout.includes('wrote 1'), 'second set written');
    assert.deepEqual((await t.c.request('dirty', { start, end })).pages, pg(2, 3));
    // a sub-range
    assert.deepEqual((await t.c.request('dirty', { start: hex(addr + 3n * PAGE), end })).pages, pg(3));

    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    assert.equal(t.faults.filter((f) => f.kind === 'wp').length, 0, 'write-protect faults are never delivered');
    assert.match(t.stdout, /checksum \d+/);
  });

  test('dirty without wpAsync is ESTATE, a bad range EPROTO', async () => {
    const { t } = await launchDirty(['--mode', 'dirty', '--pages', '8', '--sets', '1'], false);
    const addr = await readyAddr(t);
    await assert.rejects(t.c.request('dirty', { start: hex(addr), end: hex(addr + 8n * PAGE) }),
      (e: unknown) => e instanceof HelperError && e.code === 'ESTATE' && /wpAsync/.test(e.message));
    await assert.rejects(t.c.request('dirty', { start: hex(addr + 1n), end: hex(addr) }),
      (e: unknown) => e instanceof HelperError && e.code === 'EPROTO');
    await t.c.request('kill', {});
    await t.exited();
  });
});
