/**
 * The messages between the Tuning sidebar and a kernel (the comm target `hpt_jupyter` that
 * `%load_ext hpt_jupyter` registers; the kernel side is hpt_jupyter/views/lab.py). Both sides check
 * every message: anything unknown or malformed is logged and ignored, never acted on.
 */

export const TARGET = 'hpt_jupyter';
export const PROTOCOL = 1;
export const ACTIONS = ['stop', 'pause', 'resume', 'more'] as const;
export type Action = (typeof ACTIONS)[number];

/** One study as the kernel describes it. */
export interface IStudy {
  name: string;
  state: string;
  live: boolean;
  finished: number;
  budget: number | null;
  best: number | null;
  best_trial: number | null;
  directions: string[];
  sampler: string;
  elapsed: number;
  eta: number | null;
  history: number[];
  narrowings: number;
  cell_id: string | null;
  notebook: string | null;
  resume_hint?: string;
  reason?: string; // why a run of the kernel ended ("timeout (60s)", "budget reached (30 trials)", ...)
  storage?: string; // what is wrong with a going run's store ("storage unreachable since 14:03:07, retrying")
}

export interface IStudiesMessage {
  type: 'studies';
  protocol: number;
  studies: IStudy[];
}

export type Log = (reason: string) => void;

/** What the sidebar sends: flat, JSON-ready. */
export type OutgoingMessage = { [key: string]: string | number };

const isNumber = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isNumberOrNull = (v: unknown): boolean => v === null || isNumber(v);
const isStringOrNull = (v: unknown): boolean => v === null || typeof v === 'string';

/** Why one study entry is malformed, or null when it is fine. */
export function studyProblem(s: unknown): string | null {
  if (typeof s !== 'object' || s === null || Array.isArray(s)) {
    return 'a study is not an object';
  }
  const o = s as Record<string, unknown>;
  if (typeof o.name !== 'string' || !o.name) {
    return 'a study has no name';
  }
  const checks: [string, boolean][] = [
    ['state', typeof o.state === 'string'],
    ['live', typeof o.live === 'boolean'],
    ['finished', isNumber(o.finished) && (o.finished as number) >= 0],
    ['budget', isNumberOrNull(o.budget)],
    ['best', isNumberOrNull(o.best)],
    ['best_trial', isNumberOrNull(o.best_trial)],
    ['directions', Array.isArray(o.directions) && o.directions.every(d => d === 'minimize' || d === 'maximize')],
    ['sampler', typeof o.sampler === 'string'],
    ['elapsed', isNumber(o.elapsed)],
    ['eta', isNumberOrNull(o.eta)],
    ['history', Array.isArray(o.history) && o.history.length <= 1000 && o.history.every(isNumber)],
    ['narrowings', isNumber(o.narrowings)],
    ['cell_id', isStringOrNull(o.cell_id)],
    ['notebook', isStringOrNull(o.notebook)],
    ['resume_hint', o.resume_hint === undefined || typeof o.resume_hint === 'string'],
    ['reason', o.reason === undefined || typeof o.reason === 'string'],
    ['storage', o.storage === undefined || typeof o.storage === 'string']
  ];
  const bad = checks.find(([, ok]) => !ok);
  return bad ? `study '${o.name}': bad ${bad[0]}` : null;
}

/** The kernel's message, checked; null (and one log line) when it is not one we know. */
export function parseKernelMessage(data: unknown, log: Log): IStudiesMessage | null {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    log('not an object');
    return null;
  }
  const o = data as Record<string, unknown>;
  if (o.protocol !== PROTOCOL) {
    log(`protocol ${JSON.stringify(o.protocol)}, expected ${PROTOCOL}`);
    return null;
  }
  if (o.type !== 'studies') {
    log(`unknown type ${JSON.stringify(o.type)}`);
    return null;
  }
  if (!Array.isArray(o.studies)) {
    log('no list of studies');
    return null;
  }
  for (const study of o.studies) {
    const problem = studyProblem(study);
    if (problem) {
      log(problem);
      return null;
    }
  }
  return { type: 'studies', protocol: PROTOCOL, studies: o.studies as IStudy[] };
}

/** The hello that opens the comm. */
export function hello(): OutgoingMessage {
  return { type: 'hello', protocol: PROTOCOL };
}

/** A command for one study; throws on a bad one (a bug of ours, not the user's). */
export function command(action: Action, study: string, n = 0): OutgoingMessage {
  if (!ACTIONS.includes(action)) {
    throw new Error(`unknown action ${action}`);
  }
  if (!study) {
    throw new Error('a command needs a study name');
  }
  if (action === 'more') {
    if (!Number.isInteger(n) || n < 1 || n > 1_000_000) {
      throw new Error(`'more' needs a whole number of trials from 1 to 1000000, got ${n}`);
    }
    return { type: 'command', protocol: PROTOCOL, action, study, n };
  }
  return { type: 'command', protocol: PROTOCOL, action, study };
}

export function refresh(): OutgoingMessage {
  return { type: 'refresh', protocol: PROTOCOL };
}
