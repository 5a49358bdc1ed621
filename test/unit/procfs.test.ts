import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  decodePagemap, decodeVmFlags, describePage, findVma, parseMaps, parseSmaps, parseStat, readMaps, readPagemap,
  uffdModes, VM_FLAGS, vmaName,
} from '../../server/core/procfs';

const fixture = (name: string) => readFileSync(path.join(__dirname, 'fixtures', name), 'utf8');

test('parseMaps reads every line of a captured maps file', () => {
  const text = fixture('maps.txt');
  const vmas = parseMaps(text);
  assert.equal(vmas.length, text.trim().split('\n').length);
  const stack = vmas.find((v) => v.path === '[stack]');
  assert.ok(stack, 'the [stack] mapping is found');
  assert.equal(stack.perms, 'rw-p');
  assert.ok(stack.end > stack.start);
  const bash = vmas.find((v) => v.path === '/usr/bin/bash');
  assert.ok(bash && bash.inode > 0);
});

test('parseMaps handles paths with spaces and deleted files', () => {
  const vmas = parseMaps('7f0000000000-7f0000001000 rw-s 00001000 00:01 42   /memfd:my region (deleted)\n');
  assert.equal(vmas[0].path, '/memfd:my region (deleted)');
  assert.equal(vmas[0].offset, 0x1000n);
  assert.equal(vmas[0].perms, 'rw-s');
});

test('parseMaps rejects text that is not maps', () => {
  assert.throws(() => parseMaps('hello world\n'), /unexpected line in maps/);
});

test('parseSmaps attaches counters and VmFlags to each mapping', () => {
  const entries = parseSmaps(fixture('smaps.txt'));
  assert.equal(entries.length, parseMaps(fixture('maps.txt')).length);
  for (const e of entries) {
    assert.ok(e.vmFlags.length > 0, `${vmaName(e)} has VmFlags`);
    assert.equal(typeof e.counters.Rss, 'number');
  }
  const stack = entries.find((e) => e.path === '[stack]')!;
  assert.ok(stack.vmFlags.includes('gd'), 'the stack grows down');
  assert.ok(stack.counters.Size > 0);
});

test('parseSmaps reads the uffd modes of a registered mapping', () => {
  const text = [
    '7f1200000000-7f1200400000 rw-p 00000000 00:00 0 ',
    'Size:               4096 kB',
    'Rss:                   8 kB',
    'VmFlags: rd wr mr mw me ac um uw ',
    '',
  ].join('\n');
  const [e] = parseSmaps(text);
  assert.equal(vmaName(e), '[anon]');
  assert.deepEqual(e.vmFlags, ['rd', 'wr', 'mr', 'mw', 'me', 'ac', 'um', 'uw']);
  assert.deepEqual(uffdModes(e.vmFlags), ['missing', 'wp']);
  assert.equal(e.counters.Size, 4096);
});

test('decodeVmFlags names every code and marks unknown ones', () => {
  const d = decodeVmFlags(['rd', 'um', 'zz']);
  assert.deepEqual(d[0], { code: 'rd', meaning: 'readable' });
  assert.equal(d[1].meaning, 'userfaultfd missing tracking');
  assert.match(d[2].meaning, /unknown/);
  for (const [code, meaning] of Object.entries(VM_FLAGS)) {
    assert.match(code, /^[a-z]{2}$/);
    assert.ok(meaning.length > 3);
  }
});

test('findVma finds the mapping that contains an address, and none in a gap', () => {
  const vmas = parseMaps('1000-3000 rw-p 00000000 00:00 0 \n5000-6000 r--p 00000000 00:00 0 \n');
  assert.equal(findVma(vmas, 0x2fffn)?.start, 0x1000n);
  assert.equal(findVma(vmas, 0x3000n), undefined);
  assert.equal(findVma(vmas, 0x5000n)?.perms, 'r--p');
});

test('parseStat copes with spaces and parentheses in the thread name', () => {
  assert.deepEqual(parseStat('1234 (my (odd) name) S 1 2 3'), { tid: 1234, name: 'my (odd) name', state: 'S' });
});

test('decodePagemap reads the documented bits', () => {
  const present = decodePagemap((1n << 63n) | (1n << 56n) | (1n << 55n) | 0x1234n);
  assert.deepEqual(present, {
    present: true, swapped: false, fileOrSharedAnon: false, exclusive: true, softDirty: true,
    uffdWp: false, guard: false, pfn: 0x1234n,
  });
  assert.equal(describePage(present), 'present, private anon, exclusive, soft-dirty');
  const wp = decodePagemap((1n << 57n));
  assert.equal(wp.present, false);
  assert.equal(wp.uffdWp, true);
  assert.equal(describePage(wp), 'not present (uffd-wp marker)');
  const swapped = decodePagemap((1n << 62n) | (1n << 61n) | 0x7fn);
  assert.equal(swapped.pfn, 0n, 'a swapped entry holds a swap offset, not a PFN');
  assert.equal(describePage(swapped), 'swapped, file/shared-anon');
});

test('readPagemap reads this process: the top of its stack is present private memory', () => {
  const maps = readMaps(process.pid);
  const stack = maps.find((v) => v.path === '[stack]')!;
  const [top] = readPagemap(process.pid, stack.end - 4096n);
  assert.equal(top.present, true, 'the top of the stack is in use');
  assert.equal(top.fileOrSharedAnon, false);
});
