import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { parseMaps, readMaps } from '../../server/core/procfs';
import {
  decodeEflags, frameName, frameViews, locationLabel, moduleOf, parseAddr2line, parseSyscallFile, registerViews, Symbolizer,
} from '../../server/core/symbolize';
import { StackBody } from '../../server/protocol/messages';

test('parseSyscallFile takes sp and pc from the last two fields', () => {
  assert.deepEqual(parseSyscallFile('-1 0x7ffe36c11440 0x7f4b5fddb23e\n'), { sp: 0x7ffe36c11440n, pc: 0x7f4b5fddb23en });
  assert.deepEqual(parseSyscallFile('202 0x1 0x2 0x3 0x4 0x5 0x6 0x7ffd0000 0x401000'), { sp: 0x7ffd0000n, pc: 0x401000n });
  assert.equal(parseSyscallFile('running'), null);
});

test('moduleOf finds the module and the offset from its load base', () => {
  const vmas = parseMaps([
    '55ff3e737000-55ff3e738000 r--p 00000000 fe:00 5367258 /work/demo/bin/touch',
    '55ff3e738000-55ff3e739000 r-xp 00001000 fe:00 5367258 /work/demo/bin/touch',
    '7fdb44d17000-7fdb44d1d000 rw-p 00000000 00:00 0 ',
  ].join('\n'));
  assert.deepEqual(moduleOf(vmas, 0x55ff3e738253n), { module: '/work/demo/bin/touch', offset: 0x1253n });
  assert.equal(moduleOf(vmas, 0x7fdb44d17010n), null, 'anonymous memory is no module');
  assert.equal(moduleOf(vmas, 0x1000n), null);
});

test('parseAddr2line reads function, file and line, and unknowns', () => {
  assert.deepEqual(parseAddr2line('0x0000000000001253\ntoucher\n/work/main/demo/touch.c:39\n'),
    { func: 'toucher', file: '/work/main/demo/touch.c', line: 39 });
  assert.deepEqual(parseAddr2line('0x100000\n__futimesat\n./misc/futimesat.c:35 (discriminator 4)\n'),
    { func: '__futimesat', file: './misc/futimesat.c', line: 35 });
  assert.deepEqual(parseAddr2line('0x10\n??\n??:0\n'), { func: null, file: null, line: null });
});

test('Symbolizer resolves a pc of this very process to its module and symbol', () => {
  const vmas = readMaps(process.pid);
  const node = vmas.find((v) => v.perms.includes('x') && v.path === process.execPath)!;
  const loc = new Symbolizer().locate(vmas, node.start + 0x10n);
  assert.equal(loc.module, process.execPath);
  assert.match(locationLabel(loc), new RegExp(`${path.basename(process.execPath)}\\+0x[0-9a-f]+`));
});

test('frameName: the function where the source is here; module, symbol+offset or address otherwise', () => {
  const libc = '/usr/lib/x86_64-linux-gnu/libc.so.6';
  assert.equal(frameName({ pc: '0x1253', function: 'toucher', symbol: 'toucher', file: '/src/t.c', line: 3 }, true), 'toucher');
  assert.equal(frameName({ pc: '0x7f00', module: libc, symbol: 'start_thread', offset: 773, function: 'start_thread' }, false),
    'start_thread (libc.so.6)');
  assert.equal(frameName({ pc: '0x7f00', module: libc, symbol: '__libc_start_main@@GLIBC_2.34', offset: 133 }, false),
    '__libc_start_main+0x85 (libc.so.6)');
  assert.equal(frameName({ pc: '0x7f1234', module: '/lib/libx.so', moduleBase: '0x7f0000' }, false), 'libx.so+0x1234');
  assert.equal(frameName({ pc: '0x1000' }, false), '0x1000');
  assert.equal(frameName({ pc: '0x1', function: 'inner', inlined: true, file: '/a.c', line: 1 }, true), 'inner [inlined]');
});

const body: StackBody = {
  seq: 3, tid: 10, registersFrom: 'ptrace', note: null, unwindEnd: null, cached: false,
  registers: { rax: '0x0', rbx: '0x7f0000001000', rsp: '0x7ffd0000', rip: '0x401000', eflags: '0x246', orig_rax: '0xffffffffffffffff', cs: '0x33' },
  frames: [{ pc: '0x401000', function: 'f', file: '/nowhere/f.c', line: 7, column: 2 }, { pc: '0x402000', function: 'main', file: 'rel.c', line: 9 }],
};

test('frameViews: a source frame needs an absolute path that exists', () => {
  const v = frameViews(body, (f) => f === '/nowhere/f.c');
  assert.deepEqual(v.map((f) => [f.name, f.sourceAvailable, f.line, f.column]), [['f', true, 7, 2], ['main', false, 9, null]]);
});

test('registerViews: order, decoded eflags, memory references on pointers into mappings only', () => {
  const v = registerViews(body, (a) => a >= 0x7f0000000000n && a < 0x7f0000002000n);
  assert.deepEqual(v.map((r) => r.name), ['rax', 'rbx', 'rsp', 'rip', 'eflags', 'orig_rax', 'cs']);
  const by = new Map(v.map((r) => [r.name, r]));
  assert.equal(by.get('rax')!.address, null, 'zero is no pointer');
  assert.equal(by.get('rbx')!.address, 0x7f0000001000n, 'inside a mapping');
  assert.equal(by.get('rip')!.address, 0x401000n, 'rip always');
  assert.equal(by.get('cs')!.address, null);
  assert.equal(by.get('eflags')!.value, '0x246 [IF ZF PF]');
  assert.match(by.get('orig_rax')!.value, /not in a system call/);
  assert.equal(decodeEflags(0x10203n), '0x10203 [RF IF CF]');
});
