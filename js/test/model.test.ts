import { describe, expect, it } from 'vitest';

import { formatNumber, sparklinePoints, StudiesModel } from '../src/model';
import { IStudy } from '../src/protocol';

function study(name: string, extra: Partial<IStudy> = {}): IStudy {
  return {
    name, state: 'running', live: true, finished: 10, budget: 40, best: 0.5, best_trial: 3,
    directions: ['minimize'], sampler: 'tpe', elapsed: 1, eta: 3, history: [], narrowings: 0,
    cell_id: null, notebook: null, ...extra
  };
}

describe('StudiesModel', () => {
  it('summarises the running studies of every kernel for the status bar', () => {
    const model = new StudiesModel();
    let changes = 0;
    model.subscribe(() => changes++);
    expect(model.summary()).toEqual({ running: 0, best: null, progress: null, text: '' });
    model.update('k1', 'a.ipynb', [study('a', { best: 0.5 }), study('done', { state: 'finished', best: 0.1 })]);
    model.update('k2', 'b.ipynb', [study('b', { best: 0.25, finished: 30, budget: 40 })]);
    const summary = model.summary();
    expect(summary.running).toBe(2);
    expect(summary.best).toBe(0.25); // minimising: the smallest; the finished study does not count
    expect(summary.progress).toBeCloseTo(40 / 80);
    expect(summary.text).toBe('Tuning 2 running, best 0.25');
    expect(changes).toBe(2);
  });

  it('takes the best in each study\'s own direction', () => {
    const model = new StudiesModel();
    model.update('k1', 'a.ipynb', [study('acc', { directions: ['maximize'], best: 0.97 }),
      study('acc2', { directions: ['maximize'], best: 0.91 })]);
    expect(model.summary().best).toBe(0.97);
  });

  it('forgets a kernel that went away, and lists per notebook', () => {
    const model = new StudiesModel();
    model.update('k2', 'z.ipynb', [study('z')]);
    model.update('k1', 'a.ipynb', [study('a')]);
    expect(model.groups.map(g => g.notebook)).toEqual(['a.ipynb', 'z.ipynb']);
    model.remove('k2');
    expect(model.groups.map(g => g.kernelId)).toEqual(['k1']);
    expect(model.running('k1').map(s => s.name)).toEqual(['a']);
    expect(model.running('nope')).toEqual([]);
  });

  it('shows a stored study once when a kernel runs it live', () => {
    const model = new StudiesModel();
    model.update('k1', 'a.ipynb', [study('svc', { live: false, state: 'stored' }), study('old', { live: false })]);
    model.update('k2', 'b.ipynb', [study('svc')]);
    const [first] = model.groups;
    expect(model.visible(first).map(s => s.name)).toEqual(['old']);
  });
});

describe('helpers', () => {
  it('draws a sparkline across the box', () => {
    expect(sparklinePoints([1], 100, 10)).toBe('');
    expect(sparklinePoints([3, 2, 1], 100, 10)).toBe('0.0,0.0 50.0,5.0 100.0,10.0');
    expect(sparklinePoints([2, 2], 10, 10)).toBe('0.0,10.0 10.0,10.0');
  });

  it('formats numbers compactly', () => {
    expect(formatNumber(null)).toBe('-');
    expect(formatNumber(0.973456)).toBe('0.9735');
    expect(formatNumber(123456)).toBe('1.23e+5');
    expect(formatNumber(0.0001234)).toBe('1.23e-4');
  });
});
