import { describe, expect, it } from 'vitest';

import { command, hello, parseKernelMessage, refresh } from '../src/protocol';

const study = {
  name: 'svc', state: 'running', live: true, finished: 12, budget: 30, best: 0.97, best_trial: 7,
  directions: ['maximize'], sampler: 'tpe', elapsed: 3.2, eta: 4.1, history: [0.9, 0.95, 0.97],
  narrowings: 0, cell_id: 'abc', notebook: null
};

function parse(data: unknown): { result: unknown; logged: string[] } {
  const logged: string[] = [];
  return { result: parseKernelMessage(data, reason => logged.push(reason)), logged };
}

describe('kernel messages', () => {
  it('accepts the studies message the kernel sends', () => {
    const { result, logged } = parse({ type: 'studies', protocol: 1, studies: [study] });
    expect(logged).toEqual([]);
    expect(result).toEqual({ type: 'studies', protocol: 1, studies: [study] });
  });

  it('accepts why a run ended, as a string', () => {
    const ended = { ...study, state: 'finished', eta: null, reason: 'timeout (60s)' };
    expect(parse({ type: 'studies', protocol: 1, studies: [ended] }).result).toEqual(
      { type: 'studies', protocol: 1, studies: [ended] });
  });

  it.each([
    [{ type: 'studies', protocol: 1, studies: [{ ...study, reason: 5 }] }, "study 'svc': bad reason"],
    [null, 'not an object'],
    [['studies'], 'not an object'],
    [{ type: 'studies', protocol: 2, studies: [] }, 'protocol 2, expected 1'],
    [{ type: 'exec', protocol: 1, code: 'alert(1)' }, 'unknown type "exec"'],
    [{ type: 'studies', protocol: 1, studies: 'all' }, 'no list of studies'],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, name: '' }] }, 'a study has no name'],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, finished: -1 }] }, "study 'svc': bad finished"],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, best: 'NaN' }] }, "study 'svc': bad best"],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, directions: ['up'] }] }, "study 'svc': bad directions"],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, history: [1, '2'] }] }, "study 'svc': bad history"],
    [{ type: 'studies', protocol: 1, studies: [{ ...study, cell_id: 5 }] }, "study 'svc': bad cell_id"],
    [{ type: 'studies', protocol: 1, studies: [7] }, 'a study is not an object']
  ])('ignores %j with one log line', (data, reason) => {
    const { result, logged } = parse(data);
    expect(result).toBeNull();
    expect(logged).toEqual([reason]);
  });
});

describe('commands', () => {
  it('builds the messages the kernel checks', () => {
    expect(hello()).toEqual({ type: 'hello', protocol: 1 });
    expect(refresh()).toEqual({ type: 'refresh', protocol: 1 });
    expect(command('stop', 'svc')).toEqual({ type: 'command', protocol: 1, action: 'stop', study: 'svc' });
    expect(command('more', 'svc', 20)).toEqual({ type: 'command', protocol: 1, action: 'more', study: 'svc', n: 20 });
  });

  it('refuses commands the kernel would refuse', () => {
    expect(() => command('more', 'svc', 0)).toThrow(/whole number/);
    expect(() => command('more', 'svc', 2.5)).toThrow(/whole number/);
    expect(() => command('stop', '')).toThrow(/study name/);
    expect(() => command('exec' as never, 'svc')).toThrow(/unknown action/);
  });
});
