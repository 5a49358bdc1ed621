// Filter conditions: parsing, what goes to the helper's policy, what is counted here.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { FaultEvent, NcEvent } from '../../server/protocol/messages';
import { ConditionError, eventRange, FilterSet, parseCondition, toHoldRanges } from '../../server/core/filters';
import { parseStartBrk } from '../../server/core/procfs';

const fault = (addr: number, tid = 7, kind: FaultEvent['kind'] = 'missing'): FaultEvent => ({
  type: 'event', event: 'fault', seq: 1, t: 0, addr: '0x' + addr.toString(16), page: '0x' + (addr & ~0xfff).toString(16),
  access: 'write', kind, tid, held: true,
});
const noNames = () => undefined;

describe('filter conditions', () => {
  test('every term kind parses; terms combine', () => {
    const c = parseCondition('0x1000-0x2000 [heap] libc.so name=foo tid=12 tid=13 hit>=3', 'missing');
    assert.deepEqual(c.ranges, [[0x1000n, 0x2000n]]);
    assert.deepEqual(c.names, ['[heap]', 'libc.so', 'foo']);
    assert.deepEqual(c.tids, [12, 13]);
    assert.deepEqual(c.hit, { op: '>=', n: 3 });
    assert.deepEqual(parseCondition('every=4', 'unmap').hit, { op: 'every', n: 4 });
    assert.deepEqual(parseCondition('hit=2', 'wp').hit, { op: '=', n: 2 });
  });

  test('bad terms name the term and the accepted syntax', () => {
    for (const [text, why] of [['tid=x', /'tid=x' is not a condition term/], ['heap', /'heap' is not a condition term/],
      ['0x2000-0x1000', /empty range/], ['hit>=0', /count of 1 or more/], ['hit>=2 every=3', /second hit count/]] as const) {
      assert.throws(() => parseCondition(text, 'missing'), (e: Error) => e instanceof ConditionError && why.test(e.message) &&
        /0xSTART-0xEND/.test(e.message) && /tid=N/.test(e.message) && /every=N/.test(e.message));
    }
    assert.throws(() => parseCondition('tid=3', 'fork'), /carry no thread/);
  });

  test('one filter: ranges, threads and the hit count go to the helper', () => {
    const f = new FilterSet();
    assert.deepEqual(f.set([{ id: 'missing', condition: '0x1000-0x3000 tid=5 every=2' }]), [{ verified: true, message: 'stops where: 0x1000-0x3000 tid=5 every=2' }]);
    const p = f.policy(() => [], false);
    assert.deepEqual(p, { hold: { missing: true, wp: false, minor: false }, ranges: [[0x1000n, 0x3000n]], tids: [5], every: 2 });
    // The helper held the 2nd match: it is a stop without counting here.
    assert.ok(f.matchFault(fault(0x1800, 5), noNames, false));
    assert.equal(f.matchFault(fault(0x1800, 6), noNames, false), undefined, 'another thread');
    assert.equal(f.matchFault(fault(0x5000, 5), noNames, false), undefined, 'outside the range');
  });

  test('two filters: one without a range widens the helper to anywhere; hit counts are kept here', () => {
    const f = new FilterSet();
    f.set([{ id: 'missing', condition: '0x1000-0x3000 hit=2' }, { id: 'wp' }]);
    const p = f.policy(() => [], false);
    assert.equal(p.ranges, null);
    assert.equal(p.tids, null);
    assert.equal(p.every, 0);
    assert.equal(f.matchFault(fault(0x1000), noNames, false), undefined, '1st match');
    assert.ok(f.matchFault(fault(0x2000), noNames, false), '2nd match');
    assert.equal(f.matchFault(fault(0x2000), noNames, false), undefined, 'spent');
    assert.equal(f.policy(() => [], false).hold.missing, false, 'a spent filter holds nothing');
    assert.ok(f.matchFault(fault(0x9000, 1, 'wp'), noNames, false), 'the wp filter stops anywhere');
  });

  test('names become the ranges of the mappings that carry them; a fault matches by its mapping name', () => {
    const f = new FilterSet();
    f.set([{ id: 'missing', condition: '[heap]' }]);
    const p = f.policy((names) => (names.includes('[heap]') ? [[0x10000n, 0x20000n]] : []), false);
    assert.deepEqual(p.ranges, [[0x10000n, 0x20000n]]);
    assert.ok(f.matchFault(fault(0x10010), () => '[heap]', false));
    assert.equal(f.matchFault(fault(0x10010), () => '[stack]', false), undefined);
    f.set([{ id: 'missing', condition: 'libfoo' + '.so' }]);
    assert.ok(f.matchFault(fault(0x10010), () => '/usr/lib/libfoo.so.1', false), 'a path substring');
  });

  test('event filters: range overlap and hit counts', () => {
    const f = new FilterSet();
    f.set([{ id: 'unmap', condition: '0x2000-0x3000 hit>=2' }]);
    const ev = (s: number, e: number): NcEvent => ({ type: 'event', event: 'nc', what: 'unmap', t: 0, start: '0x' + s.toString(16), end: '0x' + e.toString(16) });
    assert.equal(f.matchEvent(ev(0x0, 0x1000), noNames), undefined, 'does not touch the range');
    assert.equal(f.matchEvent(ev(0x1000, 0x2800), noNames), undefined, '1st match');
    assert.ok(f.matchEvent(ev(0x2000, 0x4000), noNames), '2nd match');
    assert.deepEqual(eventRange({ type: 'event', event: 'nc', what: 'remap', t: 0, from: '0x1000', to: '0x9000', len: '0x2000' }), [0x1000n, 0x3000n]);
  });

  test('hold ranges are merged and capped at the helper limit', () => {
    assert.deepEqual(toHoldRanges([[0x3000n, 0x4000n], [0x1000n, 0x2000n], [0x1800n, 0x2800n]]),
      [{ start: '0x1000', end: '0x2800' }, { start: '0x3000', end: '0x4000' }]);
    const many: [bigint, bigint][] = Array.from({ length: 40 }, (_, i) => [BigInt(i) * 0x10000n, BigInt(i) * 0x10000n + 0x1000n]);
    const capped = toHoldRanges(many);
    assert.equal(capped.length, 32);
    assert.equal(capped[0].start, '0x0');
    assert.equal(capped[31].end, '0x271000');
  });

  test('unknown filter ids are refused', () => {
    const f = new FilterSet();
    assert.deepEqual(f.set([{ id: 'segv' }])[0].verified, false);
  });

  test('start_brk from /proc/PID/stat (field 47), with spaces and parentheses in the name', () => {
    const fields = Array.from({ length: 52 }, (_, i) => String(i + 1));
    const text = `1234 (a (b) c) ${fields.slice(2).join(' ')}\n`;
    assert.equal(parseStartBrk(text), 47n);
  });
});
