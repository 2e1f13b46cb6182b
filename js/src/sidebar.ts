/**
 * The Tuning sidebar: every study of the kernels JupyterLab talks to, live, with Stop,
 * Pause/Resume, "+N trials" and "Go to cell"; a study of the kernel that has ended shows its final
 * state and numbers (Stop and Pause hidden; "+N trials" starts it again); stored studies (in the
 * store, not opened by a run of the kernel) show how to resume them.
 * Text from kernels is set with textContent only: a study name is never parsed as HTML.
 */
import { Widget } from '@lumino/widgets';

import { formatNumber, IKernelStudies, rowView, sparklinePoints, StudiesModel } from './model';
import { Action, IStudy } from './protocol';

export interface ISidebarActions {
  command(kernelId: string, action: Action, study: string, n?: number): void;
  goToCell(kernelId: string, study: IStudy): void;
}

const SVG = 'http://www.w3.org/2000/svg';

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className: string, text?: string): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

/** One study's row; made once, updated in place (an input being typed in keeps its value). */
class StudyRow {
  readonly node = element('div', 'hpt-study');
  private readonly name = element('div', 'hpt-study-name');
  private readonly state = element('span', 'hpt-study-state');
  private readonly counts = element('span', 'hpt-study-counts');
  private readonly bar = element('progress', 'hpt-study-progress');
  private readonly best = element('div', 'hpt-study-best');
  private readonly spark = document.createElementNS(SVG, 'svg');
  private readonly line = document.createElementNS(SVG, 'polyline');
  private readonly controls = element('div', 'hpt-study-controls');
  private readonly stop = element('button', 'jp-Button hpt-stop', 'Stop');
  private readonly pause = element('button', 'jp-Button hpt-pause', 'Pause');
  private readonly more = element('input', 'hpt-more-n');
  private readonly moreButton = element('button', 'jp-Button hpt-more', '+ trials');
  private readonly goto = element('button', 'jp-Button hpt-goto', 'Go to cell');
  private readonly hint = element('div', 'hpt-resume-hint');
  private study: IStudy;

  constructor(private kernelId: string, study: IStudy, actions: ISidebarActions) {
    this.study = study;
    this.node.dataset.study = study.name;
    const top = element('div', 'hpt-study-top');
    top.append(this.name, this.state);
    const progress = element('div', 'hpt-study-line');
    progress.append(this.bar, this.counts);
    this.spark.setAttribute('class', 'hpt-sparkline');
    this.spark.setAttribute('viewBox', '0 0 120 24'); // drawn in 120 x 24, shown as wide as there is room
    this.spark.setAttribute('preserveAspectRatio', 'none');
    this.spark.appendChild(this.line);
    const bestLine = element('div', 'hpt-study-line');
    bestLine.append(this.best, this.spark);
    this.more.type = 'number';
    this.more.min = '1';
    this.more.value = '10';
    this.more.title = 'How many trials to add';
    this.stop.title = 'Stop after the running trial; the best so far is injected';
    this.controls.append(this.stop, this.pause, this.more, this.moreButton, this.goto);
    this.node.append(top, progress, bestLine, this.controls, this.hint);
    this.stop.onclick = () => actions.command(this.kernelId, 'stop', this.study.name);
    this.pause.onclick = () =>
      actions.command(this.kernelId, this.study.state === 'paused' ? 'resume' : 'pause', this.study.name);
    this.moreButton.onclick = () => {
      const n = Number(this.more.value);
      if (Number.isInteger(n) && n >= 1 && n <= 1_000_000) {
        actions.command(this.kernelId, 'more', this.study.name, n);
      } else {
        this.more.classList.add('hpt-invalid');
      }
    };
    this.more.oninput = () => this.more.classList.remove('hpt-invalid');
    this.goto.onclick = () => actions.goToCell(this.kernelId, this.study);
    this.update(study);
  }

  update(study: IStudy): void {
    this.study = study;
    const view = rowView(study); // by state: running, ended (finished, stopped, failed) or stored
    this.node.classList.toggle('hpt-stored', view.look === 'stored');
    this.node.classList.toggle('hpt-running', view.look === 'active');
    this.node.classList.toggle('hpt-ended', view.look === 'ended');
    this.name.textContent = study.name;
    this.name.title = study.name;
    this.state.textContent = view.stateText;
    this.state.dataset.state = view.stateText;
    this.state.title = study.reason || '';
    const budget = study.budget === null ? '' : `/${study.budget}`;
    this.counts.textContent = `${study.finished}${budget} trials`;
    this.bar.max = study.budget || 1;
    this.bar.value = study.budget ? Math.min(study.finished, study.budget) : 0;
    this.bar.style.display = study.budget ? '' : 'none';
    const at = study.best_trial === null ? '' : ` (#${study.best_trial})`;
    this.best.title = study.best === null ? '' : `best ${study.best}`;
    this.best.textContent = study.best === null
      ? (view.look === 'active' ? 'no complete trial yet' : 'no complete trial')
      : `best ${formatNumber(study.best)}${at}`;
    this.line.setAttribute('points', sparklinePoints(study.history, 120, 24));
    this.spark.style.display = study.history.length > 1 ? '' : 'none';
    this.controls.style.display = view.controls ? '' : 'none';
    for (const [button, how] of [[this.stop, view.stop], [this.pause, view.pause]] as const) {
      button.style.display = how === 'hidden' ? 'none' : '';
      button.disabled = how !== 'enabled';
    }
    this.pause.textContent = view.pauseText;
    this.moreButton.disabled = !view.more;
    this.more.disabled = !view.more;
    this.moreButton.title = view.look === 'ended' ? 'Run this many more trials (the study starts again)'
      : 'Add this many trials to the budget';
    this.goto.disabled = !study.cell_id;
    this.hint.textContent = view.note;
    this.hint.title = view.note;
    this.hint.style.display = view.note ? '' : 'none';
  }
}

export class TuningSidebar extends Widget {
  private readonly list = element('div', 'hpt-groups');
  private readonly empty = element('div', 'hpt-empty',
    'No studies yet. Run a %%tune cell in a notebook (after %load_ext hpt_jupyter).');
  private rows = new Map<string, StudyRow>(); // kernel id + study name -> row
  private groups = new Map<string, HTMLElement>();

  constructor(private model: StudiesModel, private actions: ISidebarActions) {
    super();
    this.addClass('hpt-sidebar');
    this.id = 'hpt-jupyter-sidebar';
    this.title.caption = 'Tuning';
    const header = element('div', 'hpt-sidebar-header', 'Tuning');
    this.node.append(header, this.empty, this.list);
    model.subscribe(() => this.render());
    this.render();
  }

  render(): void {
    const seenRows = new Set<string>();
    const seenGroups = new Set<string>();
    for (const group of this.model.groups) {
      seenGroups.add(group.kernelId);
      const box = this.group(group);
      for (const study of this.model.visible(group)) {
        const key = `${group.kernelId}\u0000${study.name}`;
        seenRows.add(key);
        let row = this.rows.get(key);
        if (!row) {
          row = new StudyRow(group.kernelId, study, this.actions);
          this.rows.set(key, row);
        } else {
          row.update(study);
        }
        box.appendChild(row.node); // keeps the kernel's order
      }
    }
    for (const [key, row] of this.rows) {
      if (!seenRows.has(key)) {
        row.node.remove();
        this.rows.delete(key);
      }
    }
    for (const [id, box] of this.groups) {
      if (!seenGroups.has(id)) {
        box.remove();
        this.groups.delete(id);
      }
    }
    this.empty.style.display = this.rows.size ? 'none' : '';
  }

  private group(group: IKernelStudies): HTMLElement {
    let box = this.groups.get(group.kernelId);
    if (!box) {
      box = element('div', 'hpt-group');
      box.appendChild(element('div', 'hpt-group-title'));
      this.groups.set(group.kernelId, box);
    }
    (box.firstChild as HTMLElement).textContent = group.notebook;
    this.list.appendChild(box);
    return box;
  }
}

/**
 * The status bar item: "Tuning 2 running · svc best 0.973" (the best of the study it names) and a
 * progress bar; its tooltip lists every running study; a click opens the sidebar.
 */
export class TuningStatus extends Widget {
  private readonly label = element('span', 'hpt-status-text');
  private readonly bar = element('progress', 'hpt-status-progress');

  constructor(private model: StudiesModel, onClick: () => void) {
    super();
    this.addClass('hpt-status');
    this.bar.max = 1;
    this.node.append(this.label, this.bar);
    this.node.title = 'Open the Tuning sidebar';
    this.node.onclick = onClick;
    model.subscribe(() => this.render());
    this.render();
  }

  render(): void {
    const summary = this.model.summary();
    this.label.textContent = summary.text;
    this.node.title = summary.title || 'Open the Tuning sidebar';
    this.node.style.display = summary.running ? '' : 'none';
    this.bar.style.display = summary.progress === null ? 'none' : '';
    this.bar.value = summary.progress ?? 0;
  }
}
