import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeMessage, encodeRequest, PROTOCOL_VERSION } from '../../server/protocol/messages';
import { SummaryCollector } from '../../server/core/summary';

test('encodeRequest writes one JSON line with id and cmd first-class', () => {
  const line = encodeRequest(7, 'hello', { protocol: PROTOCOL_VERSION });
  assert.ok(line.endsWith('\n'));
  assert.equal(line.indexOf('\n'), line.length - 1, 'exactly one line');
  assert.deepEqual(JSON.parse(line), { id: 7, cmd: 'hello', protocol: PROTOCOL_VERSION });
});

test('decodeMessage accepts responses and events', () => {
  const ok = decodeMessage('{"type":"response","id":3,"ok":true,"body":{"x":1}}');
  assert.equal(ok.type, 'response');
  const err = decodeMessage('{"type":"response","id":4,"ok":false,"error":{"code":"EPERM","message":"no"}}');
  assert.ok(err.type === 'response' && !err.ok && err.error.code === 'EPERM');
  const f = decodeMessage('{"type":"event","event":"fault","seq":1,"t":5,"addr":"0x1008","page":"0x1000",' +
    '"access":"write","kind":"missing","tid":42,"held":false,"ioctl":"UFFDIO_COPY","latencyNs":900}');
  assert.ok(f.type === 'event' && f.event === 'fault' && f.tid === 42);
  const o = decodeMessage('{"type":"event","event":"output","stream":"stderr","data":"aMOpCg=="}');
  assert.ok(o.type === 'event' && o.event === 'output' && o.stream === 'stderr');
  assert.equal(Buffer.from(o.data, 'base64').toString('utf8'), 'hé\n');
});

test('decodeMessage accepts the attach events: detached, exited without a status', () => {
  const d = decodeMessage('{"type":"event","event":"detached","pid":77}');
  assert.ok(d.type === 'event' && d.event === 'detached' && d.pid === 77);
  const x = decodeMessage('{"type":"event","event":"exited","pid":77,"code":null,"signal":null}');
  assert.ok(x.type === 'event' && x.event === 'exited' && x.code === null && x.signal === null);
  assert.throws(() => decodeMessage('{"type":"event","event":"detached"}'), /malformed detached/);
});

test('decodeMessage rejects malformed output events', () => {
  assert.throws(() => decodeMessage('{"type":"event","event":"output","stream":"stdin","data":""}'), /malformed output/);
  assert.throws(() => decodeMessage('{"type":"event","event":"output","stream":"stdout"}'), /malformed output/);
  assert.throws(() => decodeMessage('{"type":"event","event":"output","stream":"stdout","data":"not base64!"}'), /malformed output/);
});

test('decodeMessage rejects malformed lines with a reason', () => {
  assert.throws(() => decodeMessage('not json'), /not JSON/);
  assert.throws(() => decodeMessage('[1,2]'), /non-object/);
  assert.throws(() => decodeMessage('{"type":"response","id":"x","ok":true}'), /malformed response/);
  assert.throws(() => decodeMessage('{"type":"response","id":1,"ok":false}'), /malformed error/);
  assert.throws(() => decodeMessage('{"type":"event","event":"fault","seq":1}'), /malformed fault/);
  assert.throws(() => decodeMessage('{"type":"event","event":"fault","seq":1,"addr":"0x0","page":"0x0","tid":1,"kind":"huge","access":"read"}'), /malformed fault/);
  assert.throws(() => decodeMessage('{"type":"event","event":"bogus"}'), /unknown helper event/);
  assert.throws(() => decodeMessage('{"type":"other"}'), /no known type/);
});

test('SummaryCollector counts by kind and region and gives latency percentiles', () => {
  const c = new SummaryCollector([
    { start: '0x10000', end: '0x20000', via: 'exec', name: '[stack]' },
    { start: '0x40000', end: '0x50000', via: 'mmap' },
  ]);
  for (let i = 0; i < 100; i++) {
    const page = i < 70 ? 0x10000 + i * 0x1000 % 0x10000 : 0x40000;
    c.add({ type: 'event', event: 'fault', seq: i + 1, t: i, addr: '0x' + page.toString(16), page: '0x' + page.toString(16),
      access: 'read', kind: i % 10 === 0 ? 'wp' : 'missing', tid: 1, held: false, latencyNs: (i + 1) * 1000 });
  }
  c.add({ type: 'event', event: 'fault', seq: 101, t: 0, addr: '0x90000', page: '0x90000', access: 'read', kind: 'missing', tid: 1, held: true });
  const s = c.summary();
  assert.equal(s.total, 101);
  assert.deepEqual(s.byKind, { missing: 91, wp: 10, minor: 0 });
  assert.equal(s.byRegion[0].faults, 70);
  assert.match(s.byRegion[0].label, /\[stack\]/);
  assert.equal(s.byRegion[1].faults, 30);
  assert.deepEqual(s.byRegion[2], { label: '(outside registered regions)', faults: 1 });
  assert.equal(s.latencyUs?.p50, 51);
  assert.equal(s.latencyUs?.p99, 100);
});
