// The attach VMA picker's list, from captured smaps text.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseSmaps } from '../../server/core/procfs';
import { trackFromChoices, vmaChoices } from '../../server/core/vmaList';

const SMAPS = `55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
Rss:                   8 kB
VmFlags: rd wr mr mw me ac
7f0000000000-7f0000200000 rw-p 00000000 00:00 0 
Rss:                 100 kB
VmFlags: rd wr mr mw me ac hg
7f0000200000-7f0000300000 r-xp 00000000 08:01 1234                       /usr/lib/libc.so.6
Rss:                 400 kB
VmFlags: rd ex mr mw me
7f0000400000-7f0000401000 rw-s 00000000 00:01 99                         /memfd:ring (deleted)
Rss:                   4 kB
VmFlags: rd wr sh mr mw me ms um
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                  12 kB
VmFlags: rd wr mr mw me gd ac
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
Rss:                   4 kB
VmFlags: rd ex mr mw me de
`;

describe('VMA picker list', () => {
  test('the default first, then each VMA userfaultfd can register, with size, path and flags', () => {
    const c = vmaChoices(parseSmaps(SMAPS));
    assert.equal(c[0].track, 'anon');
    assert.equal(c[0].picked, true);
    assert.match(c[0].description, /^3 VMAs, 2\.3 MiB$/);
    assert.deepEqual(c.slice(1).map((x) => x.label), ['[heap]', '[anon]', '/memfd:ring (deleted)', '[stack]']);
    assert.match(c[1].description, /^132 KiB rw-p · Rss 8 kB$/);
    assert.match(c[2].detail, /^0x7f0000000000-0x7f0000200000 · private, THP advised · VmFlags rd wr mr mw me ac hg$/);
    assert.match(c[3].detail, /shared, already registered with a userfaultfd \(um\)/);
    assert.match(c[4].detail, /stack \(grows down\)/);
  });

  test('the pick becomes track: "anon" with the default, ranges without it', () => {
    const c = vmaChoices(parseSmaps(SMAPS));
    assert.equal(trackFromChoices([c[0], c[1]]), 'anon');
    assert.deepEqual(trackFromChoices([c[1], c[4]]), [
      { start: '0x55d0c0a00000', end: '0x55d0c0a21000' }, { start: '0x7ffc00000000', end: '0x7ffc00021000' }]);
    assert.equal(trackFromChoices([]), undefined);
  });
});
