import { describe, expect, it } from 'vitest';

import { formatNumber, rowView, sparklinePoints, StudiesModel } from '../src/model';
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
    expect(model.summary()).toEqual({ running: 0, study: null, best: null, progress: null, text: '', title: '' });
    model.update('k1', 'a.ipynb', [study('a', { best: 0.5, elapsed: 9 }),
      study('done', { state: 'finished', best: 0.1, elapsed: 1 })]);
    model.update('k2', 'b.ipynb', [study('b', { best: 0.25, finished: 30, budget: 40, elapsed: 5 })]);
    const summary = model.summary();
    expect(summary.running).toBe(2); // the finished study does not count
    expect(summary.progress).toBeCloseTo(40 / 80);
    // The line names the study its best belongs to: the most recently started of those running.
    expect(summary.study).toBe('b');
    expect(summary.best).toBe(0.25);
    expect(summary.text).toBe('Tuning 2 running · b best 0.25');
    expect(summary.title.split('\n')).toEqual(['Open the Tuning sidebar', 'a: running, 10/40 trials, best 0.5',
      'b: running, 30/40 trials, best 0.25']);
    expect(changes).toBe(2);
  });

  it('names a study without a best, and prefers a running study to a paused one', () => {
    const model = new StudiesModel();
    model.update('k1', 'a.ipynb', [study('svc', { best: null, budget: null, elapsed: 3 }),
      study('held', { state: 'paused', best: 0.9, elapsed: 1 })]);
    expect(model.summary().text).toBe('Tuning 2 running · svc');
    expect(model.summary().best).toBeNull();
    expect(model.summary().title).toContain('svc: running, 10 trials');
    expect(model.summary().title).toContain('held: paused, 10/40 trials, best 0.9');
  });

  it('does not compare the bests of different studies', () => {
    const model = new StudiesModel();
    model.update('k1', 'a.ipynb', [study('acc', { directions: ['maximize'], best: 0.97, elapsed: 2 }),
      study('loss', { directions: ['minimize'], best: 0.01, elapsed: 8 })]);
    expect(model.summary()).toMatchObject({ study: 'acc', best: 0.97, text: 'Tuning 2 running · acc best 0.97' });
  });

  it('copes with a kernel whose snapshot arrives late', () => {
    const model = new StudiesModel();
    // Another kernel sharing the store lists the study as stored until its own kernel answers.
    model.update('k2', 'b.ipynb', [study('svc', { live: false, state: 'stored', budget: null })]);
    expect(model.summary().running).toBe(0);
    const [other] = model.groups;
    expect(model.visible(other).map(s => s.name)).toEqual(['svc']);
    model.update('k1', 'a.ipynb', [study('svc', { elapsed: 4 })]);
    expect(model.visible(model.groups[1]).map(s => s.name)).toEqual([]);
    expect(model.visible(model.groups[0]).map(s => [s.name, s.live])).toEqual([['svc', true]]);
    expect(model.summary().text).toBe('Tuning 1 running · svc best 0.5');
    // It ends: still shown once, as its kernel's, not as the other kernel's stored study.
    model.update('k1', 'a.ipynb', [study('svc', { state: 'finished', finished: 40 })]);
    expect(model.visible(model.groups[1])).toEqual([]);
    expect(rowView(model.visible(model.groups[0])[0]).look).toBe('ended');
    expect(model.summary().running).toBe(0);
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

describe('rowView', () => {
  it('shows a running study with Stop and Pause', () => {
    expect(rowView(study('a'))).toEqual({
      look: 'active', stateText: 'running', controls: true, stop: 'enabled', pause: 'enabled',
      pauseText: 'Pause', more: true, note: ''
    });
    expect(rowView(study('a', { state: 'paused' }))).toMatchObject({ stop: 'enabled', pause: 'enabled', pauseText: 'Resume' });
    expect(rowView(study('a', { state: 'stopping' }))).toMatchObject({
      look: 'active', stop: 'disabled', pause: 'disabled', more: false });
  });

  it.each(['finished', 'stopped', 'failed'])('shows a %s study of the kernel as ended, not stored', state => {
    const view = rowView(study('a', { state, finished: 40, reason: state === 'stopped' ? 'stopped' : 'timeout (60s)',
      resume_hint: 'Re-run its %%tune cell' }));
    expect(view).toEqual({
      look: 'ended', stateText: state, controls: true, stop: 'hidden', pause: 'hidden', pauseText: 'Pause',
      more: true, // +N trials starts an ended run again
      note: state === 'stopped' ? '' : 'Ended: timeout (60s)'
    });
  });

  it('says when a going run waits for its store, and not once it has ended', () => {
    const waiting = 'storage unreachable since 14:03:07, retrying (OperationalError: connection refused)';
    expect(rowView(study('s', { live: true, state: 'running', storage: waiting })).note).toBe(waiting);
    expect(rowView(study('s', { live: true, state: 'running' })).note).toBe('');
    expect(rowView(study('s', { live: true, state: 'finished', storage: waiting, reason: 'budget reached (9 trials)' })).note)
      .toBe('Ended: budget reached (9 trials)');
  });

  it('shows a stored study with how to resume it, and no controls', () => {
    const view = rowView(study('old', { live: false, state: 'stored', resume_hint: 'Re-run its %%tune cell' }));
    expect(view).toMatchObject({ look: 'stored', stateText: 'stored', controls: false, stop: 'hidden',
      pause: 'hidden', more: false, note: 'Re-run its %%tune cell' });
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
