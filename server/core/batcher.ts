// Collects events and hands them on in batches, at most once per interval: the timeline wants
// every fault, but a few updates per second, never one message per fault.
export class Batcher<T> {
  private items: T[] = [];
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly flushTo: (batch: T[]) => void, private readonly intervalMs = 250) {}

  push(item: T): void {
    this.items.push(item);
    if (!this.timer) this.timer = setTimeout(() => this.flush(), this.intervalMs);
  }

  /** Hands on what is pending now (before a stop, so the panel shows the held fault at once). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.items.length === 0) return;
    const batch = this.items;
    this.items = [];
    this.flushTo(batch);
  }

  dispose(): void {
    this.flush();
  }
}
