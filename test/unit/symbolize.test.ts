import assert from 'node:assert/strict';
import * as path from 'node:path';
import { test } from 'node:test';
import { parseMaps, readMaps } from '../../server/core/procfs';
import { locationLabel, moduleOf, parseAddr2line, parseSyscallFile, Symbolizer } from '../../server/core/symbolize';

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
