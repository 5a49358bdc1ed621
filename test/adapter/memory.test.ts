// Memory references, readMemory, writeMemory and the Region scope, against the real adapter,
// helper and kernel.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DebugProtocol } from '@vscode/debugprotocol';
import { withTimeout } from '../support/waits';
import { faultAddr, Harness, onEachTest } from './support';

let h: Harness;

onEachTest((x) => { h = x; });

const PAGE = 4096n;
const hex = (n: bigint) => '0x' + n.toString(16);

// DebugClient has no helpers for these two requests.
function readMemory(args: DebugProtocol.ReadMemoryArguments): Promise<DebugProtocol.ReadMemoryResponse> {
  return h.dc.customRequest('readMemory', args) as Promise<DebugProtocol.ReadMemoryResponse>;
}

function writeMemory(args: DebugProtocol.WriteMemoryArguments): Promise<DebugProtocol.WriteMemoryResponse> {
  return h.dc.customRequest('writeMemory', args) as Promise<DebugProtocol.WriteMemoryResponse>;
}

describe('memory', { timeout: 180_000 }, () => {
  test('initialize advertises readMemory and writeMemory', async () => {
    const init = await h.dc.initializeRequest();
    assert.equal(init.body?.supportsReadMemoryRequest, true);
    assert.equal(init.body?.supportsWriteMemoryRequest, true);
  });

  test('readMemory returns the readable prefix and marks missing pages unreadable without faulting them; writeMemory writes a present page', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '4', '--pattern', 'seq']);
    const { ev, region } = await h.stopInRegion(2, 3);
    assert.equal(faultAddr(ev), region + 2n * PAGE, 'stopped on page 2 (pages 0 and 1 are written)');

    // The Fault scope's address and page carry memory references.
    const scopes = await h.scopesOf(ev.body.threadId!);
    const fault = await h.variablesOf(scopes.get('Fault')!.variablesReference);
    assert.equal(fault.get('page')!.memoryReference, hex(region + 2n * PAGE));
    assert.equal(fault.get('address')!.memoryReference, fault.get('address')!.value);

    // The held page first: nothing readable, its 4096 bytes and the untouched page 3 unreadable.
    const missing = await withTimeout(readMemory({ memoryReference: fault.get('page')!.memoryReference!, count: 8192 }),
      10_000, 'readMemory on a missing page returns');
    assert.equal(missing.body?.address, hex(region + 2n * PAGE));
    assert.equal(Buffer.from(missing.body?.data ?? '', 'base64').length, 0);
    assert.equal(missing.body?.unreadableBytes, 8192);

    // From the region start: pages 0 and 1 as the program wrote them, then page 2 unreadable.
    const r = await withTimeout(readMemory({ memoryReference: hex(region), count: 3 * 4096 }), 10_000, 'readMemory returns');
    const data = Buffer.from(r.body?.data ?? '', 'base64');
    assert.equal(data.length, 8192);
    assert.equal(data[0], 1);
    assert.equal(data[4096], 1);
    assert.equal(r.body?.unreadableBytes, 4096);
    // An offset: page 1's first byte.
    const off = await readMemory({ memoryReference: hex(region), offset: 4096, count: 1 });
    assert.deepEqual([...Buffer.from(off.body!.data!, 'base64')], [1]);

    // Nothing faulted: the page is still missing and the fault still held.
    const page = await h.variablesOf(scopes.get('Page')!.variablesReference);
    assert.match(page.get('state')!.value, /^not present/);
    const held = await h.dc.evaluateRequest({ expression: 'held', context: 'repl' });
    assert.match(held.body.result, new RegExp(`${hex(region + 2n * PAGE)}`));

    // A present page is written through /proc/PID/mem.
    const w = await writeMemory({ memoryReference: hex(region + 0x10n), data: Buffer.from([0x40]).toString('base64') });
    assert.equal(w.body?.bytesWritten, 1);
    // A missing page with no held fault is filled (the helper's `fill`): present afterwards.
    const f = await writeMemory({ memoryReference: hex(region + 3n * PAGE + 8n), data: Buffer.from([0x20]).toString('base64') });
    assert.equal(f.body?.bytesWritten, 1);
    const back3 = await readMemory({ memoryReference: hex(region + 3n * PAGE + 8n), count: 1 });
    assert.deepEqual([...Buffer.from(back3.body!.data!, 'base64')], [0x20], 'the filled page reads back');

    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const exited = h.dc.waitForEvent('exited', 30_000) as Promise<DebugProtocol.ExitedEvent>;
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal((await exited).body.exitCode, 0);
    // 1 + 1 + 3 + 3 from the program, 0x40 and 0x20 (the filled page) from the debugger.
    await h.waitOutput(/checksum 68 touched 4/);
  });

  test('writeMemory into a held missing page resolves it with those bytes, and the program reads them', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '4', '--pattern', 'seq', '--read']);
    const { ev, region } = await h.stopInRegion(1, 2);
    const page = region + PAGE;
    assert.equal(faultAddr(ev), page);
    const continued = h.dc.waitForEvent('continued');
    const w = await writeMemory({ memoryReference: hex(page + 0x100n), data: Buffer.from([0x11, 0x22]).toString('base64') });
    assert.equal(w.body?.bytesWritten, 2);
    // The fault was resolved by the write: its thread runs again.
    assert.equal(((await continued) as DebugProtocol.ContinuedEvent).body.threadId, ev.body.threadId);
    const back = await readMemory({ memoryReference: hex(page + 0x100n), count: 2 });
    assert.deepEqual([...Buffer.from(back.body!.data!, 'base64')], [0x11, 0x22]);

    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const exited = h.dc.waitForEvent('exited', 30_000) as Promise<DebugProtocol.ExitedEvent>;
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal((await exited).body.exitCode, 0);
    // touch --read sums every byte of the region: only the debugger's bytes are not zero.
    await h.waitOutput(/checksum 33 touched 4/);
  });

  test('the Region scope shows what is tracked there, the policy, and the pages resolved and pending', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '8', '--pattern', 'seq']);
    const { ev, region } = await h.stopInRegion(3, 4);
    const scopes = await h.scopesOf(ev.body.threadId!);
    assert.ok(scopes.has('Region'), `scopes: ${[...scopes.keys()]}`);
    const v = await h.variablesOf(scopes.get('Region')!.variablesReference);
    assert.match(v.get('range')!.value, new RegExp(`^mmap ${hex(region)}-${hex(region + 8n * PAGE)} \\(32 KiB\\)`));
    assert.equal(v.get('range')!.memoryReference, hex(region));
    assert.equal(v.get('start')!.memoryReference, hex(region));
    assert.equal(v.get('name')!.value, '[anon]');
    assert.match(v.get('registered')!.value, /^via mmap/);
    assert.match(v.get('userfaultfd modes')!.value, /missing/);
    assert.match(v.get('policy')!.value, /hold missing/);
    assert.match(v.get('filters')!.value, /missing/);
    assert.equal(v.get('pages')!.value, '8');
    // Pages 0-2 were stopped on and resolved one by one; page 3 is held.
    assert.equal(v.get('pages resolved')!.value, '3');
    assert.equal(v.get('pages pending')!.value, '1 (held now)');
    assert.match(v.get('faults seen')!.value, /^4 \(missing 4, wp 0, minor 0\)/);
    assert.equal(v.get('pages evicted')!.value, '0');

    // A data breakpoint from the Region's range variable covers the whole region.
    const info = await h.dc.dataBreakpointInfoRequest({ variablesReference: scopes.get('Region')!.variablesReference, name: 'range' });
    assert.equal(info.body.dataId, `${hex(region)}-${hex(region + 8n * PAGE)}`);
  });
});
