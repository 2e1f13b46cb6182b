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
  study: string | null; // the running study the line names (its best is ``best``), else null
  best: number | null; // that study's best (first objective), else null
  progress: number | null; // finished / budget over the running studies with a budget, 0..1
  text: string;
  title: string; // the tooltip: one line per running study
}

/** States of a run that is going (a study of a live kernel; "ready" is the moment before it starts). */
export const RUNNING_STATES = ['running', 'paused', 'stopping'];
export const ACTIVE_STATES = ['ready', ...RUNNING_STATES];
/** States of a run that has ended; "+N trials" starts it again. */
export const ENDED_STATES = ['finished', 'stopped', 'failed'];

/** How a study's row looks and which of its controls can act. */
export interface IRowView {
  look: 'active' | 'ended' | 'stored';
  stateText: string;
  controls: boolean; // the row of buttons at all (a stored study has none: re-run its cell)
  stop: 'enabled' | 'disabled' | 'hidden';
  pause: 'enabled' | 'disabled' | 'hidden';
  pauseText: 'Pause' | 'Resume';
  more: boolean; // "+N trials" can act
  note: string; // under the row: why it ended, or how to resume a stored study
}

/**
 * What a study's row shows, by its state: a study of this kernel (``live``) that has ended is
 * shown as ended (finished, stopped, failed) with its final numbers, never as stored; only
 * studies no run of the kernel has opened are "stored".
 */
export function rowView(study: IStudy): IRowView {
  if (!study.live) {
    return {
      look: 'stored', stateText: study.state || 'stored', controls: false, stop: 'hidden', pause: 'hidden',
      pauseText: 'Pause', more: false, note: study.resume_hint || ''
    };
  }
  const ended = !ACTIVE_STATES.includes(study.state);
  const acting = study.state === 'running' || study.state === 'paused';
  const reason = (study.reason || '').trim();
  return {
    look: ended ? 'ended' : 'active',
    stateText: study.state,
    controls: true,
    stop: ended ? 'hidden' : acting ? 'enabled' : 'disabled',
    pause: ended ? 'hidden' : acting ? 'enabled' : 'disabled',
    pauseText: study.state === 'paused' ? 'Resume' : 'Pause',
    more: study.state !== 'stopping', // an ended run starts again with n more trials
    note: ended
      ? (reason && reason !== study.state ? `Ended: ${reason}` : '')
      : (study.storage || '').trim() // a going run that waits for its store says so
  };
}

function summaryLine(s: IStudy): string {
  const budget = s.budget === null ? '' : `/${s.budget}`;
  const best = s.best === null ? '' : `, best ${formatNumber(s.best)}`;
  return `${s.name}: ${s.state}, ${s.finished}${budget} trials${best}`;
}

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
      return { running: 0, study: null, best: null, progress: null, text: '', title: '' };
    }
    // The bests of different studies do not compare (accuracy, loss): the line names one study,
    // the most recently started of those running (not paused), and shows its best.
    const going = running.filter(s => s.state === 'running');
    const shown = (going.length ? going : running).reduce((a, b) => (b.elapsed < a.elapsed ? b : a));
    const best = shown.best;
    const budgeted = running.filter(s => s.budget !== null && (s.budget as number) > 0);
    const done = budgeted.reduce((n, s) => n + Math.min(s.finished, s.budget as number), 0);
    const total = budgeted.reduce((n, s) => n + (s.budget as number), 0);
    const progress = total ? done / total : null;
    const bestText = best === null ? '' : ` best ${formatNumber(best)}`;
    return {
      running: running.length, study: shown.name, best, progress,
      text: `Tuning ${running.length} running · ${shown.name}${bestText}`,
      title: ['Open the Tuning sidebar', ...running.map(summaryLine)].join('\n')
    };
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
