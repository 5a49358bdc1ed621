// "Resolve Page…": resolve the fault the selected thread is held on, by hand, in any way the
// kernel offers for it. The adapter does the work (custom request `uffd/resolve`).
import { readFile } from 'node:fs/promises';
import * as vscode from 'vscode';

interface Way extends vscode.QuickPickItem { id: string; how: string; ask?: 'pattern' | 'file' | 'bytes' | 'from' | 'range' }

const WAYS: Way[] = [
  { id: 'default', label: 'Default', description: 'what the kernel would have done', how: 'default' },
  { id: 'zero', label: 'Zero page', description: 'UFFDIO_ZEROPAGE (a write then copies on write)', how: 'zero' },
  { id: 'copy-pattern', label: 'Fill with a byte pattern…', description: 'UFFDIO_COPY', how: 'copy', ask: 'pattern' },
  { id: 'copy-file', label: 'Copy from a file…', description: 'UFFDIO_COPY of 4 KiB at an offset', how: 'copy', ask: 'file' },
  { id: 'copy-bytes', label: 'Copy bytes from a file\'s first page…', description: 'UFFDIO_COPY of exactly 4096 bytes', how: 'copy', ask: 'bytes' },
  { id: 'move', label: 'Move a page of the program here…', description: 'UFFDIO_MOVE: the source page becomes missing', how: 'move', ask: 'from' },
  { id: 'continue', label: 'Continue', description: 'UFFDIO_CONTINUE: map the page-cache page (minor faults)', how: 'continue' },
  { id: 'unprotect', label: 'Un-protect', description: 'UFFDIO_WRITEPROTECT off (write-protect faults)', how: 'unprotect' },
  { id: 'poison', label: 'Poison', description: 'UFFDIO_POISON: the next access gets SIGBUS', how: 'poison' },
  { id: 'wake', label: 'Wake only', description: 'UFFDIO_WAKE: the thread retries and faults again', how: 'wake' },
];
const RANGE: Way = { id: 'range', label: 'Apply to a range of pages…', description: 'the faulting page and the ones after it', how: '', ask: 'range', alwaysShow: true };

export async function resolvePage(): Promise<void> {
  const session = vscode.debug.activeDebugSession;
  const item = vscode.debug.activeStackItem;
  if (!session || session.type !== 'uffd' || !item) {
    void vscode.window.showInformationMessage('uffd-debug: select a thread that is paused on a page fault first.');
    return;
  }
  // Only what the kernel accepts for this fault (kind, page size, features).
  let offered = WAYS;
  try {
    const r = await session.customRequest('uffd/resolutions', { tid: item.threadId }) as { kind: string; ways: string[] };
    offered = WAYS.filter((w) => r.ways.includes(w.id));
  } catch {
    void vscode.window.showInformationMessage('uffd-debug: the selected thread is not paused on a page fault.');
    return;
  }
  let pages = 1;
  let way: Way | undefined;
  for (;;) {
    const title = pages > 1 ? `Resolve ${pages} pages from the one this thread faulted on` : 'Resolve the page this thread faulted on';
    way = await vscode.window.showQuickPick([...offered, RANGE], { title, matchOnDescription: true });
    if (!way) return;
    if (way.ask !== 'range') break;
    const n = await vscode.window.showInputBox({
      prompt: 'How many pages, from the faulting one', value: String(pages),
      validateInput: (t) => (/^[1-9]\d{0,5}$/.test(t) ? null : 'a count of pages, 1 or more'),
    });
    if (n === undefined) return;
    pages = Number(n);
  }
  const args: Record<string, unknown> = { tid: item.threadId, how: way.how, ...(pages > 1 ? { pages } : {}) };
  if (way.ask === 'pattern') {
    const v = await vscode.window.showInputBox({
      prompt: 'Byte value to fill the page with (0-255, decimal or 0x..)', value: '0xaa',
      validateInput: (t) => (/^(0x[0-9a-f]{1,2}|\d{1,3})$/i.test(t) && Number(t) <= 255 ? null : 'a byte: 0-255 or 0x00-0xff'),
    });
    if (v === undefined) return;
    args.pattern = Number(v);
  } else if (way.ask === 'from') {
    const v = await vscode.window.showInputBox({
      prompt: 'Address of the program\'s page to move into the faulting one (page-aligned, mapped, private anonymous)', value: '0x',
      validateInput: (t) => (/^0x[0-9a-f]+$/i.test(t) && (BigInt(t) & 0xfffn) === 0n ? null : 'a page-aligned address, 0x…000'),
    });
    if (v === undefined) return;
    args.from = v.toLowerCase();
  } else if (way.ask === 'file' || way.ask === 'bytes') {
    const f = await vscode.window.showOpenDialog({ canSelectMany: false, title: 'File with the page content' });
    if (!f?.length) return;
    if (way.ask === 'bytes') {
      const buf = Buffer.alloc(4096);
      (await readFile(f[0].fsPath)).copy(buf, 0, 0, 4096);
      args.bytes = buf.toString('base64');
    } else {
      const off = await vscode.window.showInputBox({
        prompt: 'Byte offset in the file (a multiple of 4096)', value: '0',
        validateInput: (t) => (/^\d+$/.test(t) ? null : 'a whole number of bytes'),
      });
      if (off === undefined) return;
      args.file = f[0].fsPath;
      args.offset = Number(off);
    }
  }
  try {
    const r = await session.customRequest('uffd/resolve', args) as { ioctl: string; page: string; pages: number };
    vscode.window.setStatusBarMessage(`uffd-debug: page ${r.page} resolved with ${r.ioctl}`, 5000);
  } catch (e) {
    void vscode.window.showErrorMessage(`uffd-debug: ${(e as Error).message}`);
  }
}
