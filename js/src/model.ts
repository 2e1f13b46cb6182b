/**
 * What the sidebar and the status bar show: the studies of every kernel the extension talks
 * to. Pure TypeScript (no JupyterLab imports), so it is unit-tested on its own.
 */
import { IStudy } from './protocol';

/** The studies of one kernel, and where that kernel runs. */
export interface IKernelStudies {
  kernelId: string;
  notebook: string; // the path of the notebook (or console) the kernel belongs to
  studies: IStudy[];
}

/** One line of the status bar, and the progress it shows. */
export interface ISummary {
  running: number;
  best: number | null; // of the running studies (first direction), else null
  progress: number | null; // finished / budget over the running studies with a budget, 0..1
  text: string;
}

export const RUNNING_STATES = ['running', 'paused', 'stopping'];

export function formatNumber(value: number | null): string {
  if (value === null) {
    return '-';
  }
  const text = Math.abs(value) >= 1e5 || (value !== 0 && Math.abs(value) < 1e-3)
    ? value.toExponential(2) : Number(value.toPrecision(4)).toString();
  return text;
}

export class StudiesModel {
  private kernels = new Map<string, IKernelStudies>();
  private listeners = new Set<() => void>();

  /** Call ``listener`` after every change; returns a function that unsubscribes. */
  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const listener of [...this.listeners]) {
      listener();
    }
  }

  /** The latest studies of a kernel (replaces what it said before). */
  update(kernelId: string, notebook: string, studies: IStudy[]): void {
    this.kernels.set(kernelId, { kernelId, notebook, studies });
    this.changed();
  }

  /** A kernel went away (shut down, restarted, its notebook closed). */
  remove(kernelId: string): void {
    if (this.kernels.delete(kernelId)) {
      this.changed();
    }
  }

  get groups(): IKernelStudies[] {
    return [...this.kernels.values()].sort((a, b) => a.notebook.localeCompare(b.notebook));
  }

  /** Studies of one kernel that a "stop all" or "pause all" acts on. */
  running(kernelId: string): IStudy[] {
    const group = this.kernels.get(kernelId);
    return group ? group.studies.filter(s => s.live && RUNNING_STATES.includes(s.state)) : [];
  }

  /** A stored study also listed live by some kernel is shown once, as live. */
  visible(group: IKernelStudies): IStudy[] {
    const live = new Set<string>();
    for (const g of this.kernels.values()) {
      for (const s of g.studies) {
        if (s.live) {
          live.add(s.name);
        }
      }
    }
    return group.studies.filter(s => s.live || !live.has(s.name));
  }

  summary(): ISummary {
    const running: IStudy[] = [];
    for (const group of this.kernels.values()) {
      running.push(...group.studies.filter(s => s.live && RUNNING_STATES.includes(s.state)));
    }
    if (!running.length) {
      return { running: 0, best: null, progress: null, text: '' };
    }
    let best: number | null = null;
    for (const s of running) {
      if (s.best === null) {
        continue;
      }
      const maximize = s.directions[0] === 'maximize';
      if (best === null || (maximize ? s.best > best : s.best < best)) {
        best = s.best;
      }
    }
    const budgeted = running.filter(s => s.budget !== null && (s.budget as number) > 0);
    const done = budgeted.reduce((n, s) => n + Math.min(s.finished, s.budget as number), 0);
    const total = budgeted.reduce((n, s) => n + (s.budget as number), 0);
    const progress = total ? done / total : null;
    const bestText = best === null ? '' : `, best ${formatNumber(best)}`;
    return { running: running.length, best, progress, text: `Tuning ${running.length} running${bestText}` };
  }
}

/** The points of a sparkline polyline for ``values`` in a ``width`` x ``height`` box. */
export function sparklinePoints(values: number[], width: number, height: number): string {
  if (values.length < 2) {
    return '';
  }
  const low = Math.min(...values);
  const high = Math.max(...values);
  const span = high - low || 1;
  return values
    .map((v, i) => {
      const x = (i / (values.length - 1)) * width;
      const y = height - ((v - low) / span) * height;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    })
    .join(' ');
}
