/**
 * hpt-jupyter's JupyterLab extension: a Tuning sidebar, a status bar item and commands for the
 * studies of every notebook kernel this JupyterLab talks to. The kernel side is the comm target
 * that `%load_ext hpt_jupyter` registers (hpt_jupyter/views/lab.py); no server endpoint is needed.
 *
 * It needs no JupyterLab shell (ILabShell): it uses the generic one (`app.shell`: `add` to the
 * 'left' and 'menu' areas, `activateById`), so it runs in JupyterLab and in Jupyter Notebook 7
 * alike. Notebook 7 has no status bar: there the status item sits at the right end of the
 * notebook page's menu bar, and "Show the Tuning sidebar" opens its (hidden) left side panel.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette } from '@jupyterlab/apputils';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel } from '@jupyterlab/services';
import { IStatusBar } from '@jupyterlab/statusbar';
import { LabIcon } from '@jupyterlab/ui-components';

import { StudiesModel } from './model';
import { Action, command, hello, IStudy, OutgoingMessage, parseKernelMessage, TARGET } from './protocol';
import { TuningSidebar, TuningStatus } from './sidebar';

const PLUGIN_ID = 'hpt-jupyter:plugin';
const RETRY_MS = 1500;

export const CommandIDs = {
  open: 'hpt-jupyter:open-sidebar',
  stopAll: 'hpt-jupyter:stop-all',
  pauseAll: 'hpt-jupyter:pause-all',
  resumeAll: 'hpt-jupyter:resume-all'
};

const tuneIcon = new LabIcon({
  name: 'hpt-jupyter:tune',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24"><g class="jp-icon3" fill="#616161">' +
    '<rect x="3" y="5" width="18" height="2" rx="1"/><circle cx="9" cy="6" r="2.5"/>' +
    '<rect x="3" y="11" width="18" height="2" rx="1"/><circle cx="15" cy="12" r="2.5"/>' +
    '<rect x="3" y="17" width="18" height="2" rx="1"/><circle cx="7" cy="18" r="2.5"/></g></svg>'
});

function warn(reason: string): void {
  console.warn(`hpt-jupyter: ignored a kernel message (${reason})`);
}

/** The comm to one notebook's kernel, opened again after a restart or a later %load_ext. */
class KernelLink {
  private comm: Kernel.IComm | null = null;
  private kernel: Kernel.IKernelConnection | null = null;
  private lastTry = 0;
  private retry: ReturnType<typeof setTimeout> | null = null;

  constructor(readonly panel: NotebookPanel, private model: StudiesModel) {
    const context = panel.sessionContext;
    context.kernelChanged.connect(() => this.reset());
    context.statusChanged.connect((_, status) => {
      if (status === 'restarting' || status === 'dead') {
        this.reset();
      } else if (status === 'idle' && !this.comm) {
        this.connectSoon(); // e.g. the cell that ran %load_ext hpt_jupyter just finished
      }
    });
    panel.disposed.connect(() => this.reset());
    void context.ready.then(() => this.connect());
  }

  get kernelId(): string | null {
    return this.kernel ? this.kernel.id : null;
  }

  /**
   * Open the comm now, or once RETRY_MS have passed since the last try: a kernel that loaded
   * hpt_jupyter just after a try and then stays idle (its study runs in the background) is
   * still reached.
   */
  private connectSoon(): void {
    const wait = this.lastTry + RETRY_MS - Date.now();
    if (wait <= 0) {
      this.connect();
    } else if (this.retry === null) {
      this.retry = setTimeout(() => {
        this.retry = null;
        const kernel = this.panel.isDisposed ? undefined : this.panel.sessionContext.session?.kernel;
        if (!this.comm && kernel?.status === 'idle') {
          this.connect(); // a busy kernel is tried again when it is idle
        }
      }, wait);
    }
  }

  private reset(): void {
    if (this.retry !== null) {
      clearTimeout(this.retry);
      this.retry = null;
    }
    if (this.kernel) {
      this.model.remove(this.kernel.id);
    }
    if (this.comm && !this.comm.isDisposed) {
      this.comm.dispose();
    }
    this.comm = null;
    this.kernel = null;
  }

  connect(): void {
    const kernel = this.panel.sessionContext.session?.kernel;
    if (!kernel || this.comm) {
      return;
    }
    this.lastTry = Date.now();
    const comm = kernel.createComm(TARGET);
    this.comm = comm;
    this.kernel = kernel;
    comm.onMsg = msg => {
      const parsed = parseKernelMessage(msg.content.data, warn);
      if (parsed && this.comm === comm) {
        this.model.update(kernel.id, this.panel.context.path, parsed.studies);
      }
    };
    comm.onClose = () => {
      // The kernel has no such target (hpt_jupyter is not loaded yet) or went away.
      if (this.comm === comm) {
        this.comm = null;
        this.model.remove(kernel.id);
      }
    };
    try {
      comm.open(hello());
    } catch (error) {
      this.comm = null;
    }
  }

  send(data: OutgoingMessage): void {
    if (this.comm && !this.comm.isDisposed) {
      this.comm.send(data);
    }
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A Tuning sidebar, status bar item and commands for hpt-jupyter studies.',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ICommandPalette, IStatusBar],
  activate: (
    app: JupyterFrontEnd,
    notebooks: INotebookTracker,
    palette: ICommandPalette | null,
    statusBar: IStatusBar | null
  ) => {
    const shell = app.shell; // JupyterLab's ILabShell or Notebook 7's INotebookShell
    const model = new StudiesModel();
    const links = new Map<NotebookPanel, KernelLink>();
    const linkOf = (kernelId: string): KernelLink | undefined =>
      [...links.values()].find(link => link.kernelId === kernelId);

    const send = (kernelId: string, action: Action, study: string, n?: number): void => {
      linkOf(kernelId)?.send(command(action, study, n));
    };
    const goToCell = (kernelId: string, study: IStudy): void => {
      const link = linkOf(kernelId);
      if (!link || !study.cell_id) {
        return;
      }
      const notebook = link.panel.content;
      const index = notebook.widgets.findIndex(cell => cell.model.id === study.cell_id);
      if (index < 0) {
        return;
      }
      shell.activateById(link.panel.id);
      notebook.activeCellIndex = index;
      void notebook.scrollToItem(index, 'start');
    };

    const sidebar = new TuningSidebar(model, { command: send, goToCell });
    sidebar.title.icon = tuneIcon;
    shell.add(sidebar, 'left', { rank: 650 });

    notebooks.widgetAdded.connect((_, panel) => {
      links.set(panel, new KernelLink(panel, model));
      panel.disposed.connect(() => links.delete(panel));
    });
    notebooks.forEach(panel => {
      if (!links.has(panel)) {
        links.set(panel, new KernelLink(panel, model));
      }
    });

    const currentKernel = (): string | null => {
      const panel = notebooks.currentWidget;
      return panel ? links.get(panel)?.kernelId ?? null : null;
    };
    const allOfCurrent = (action: Action, states: string[]) => () => {
      const kernelId = currentKernel();
      if (!kernelId) {
        return;
      }
      for (const study of model.running(kernelId).filter(s => states.includes(s.state))) {
        send(kernelId, action, study.name);
      }
    };

    app.commands.addCommand(CommandIDs.open, {
      label: 'Show the Tuning sidebar',
      icon: tuneIcon,
      execute: () => shell.activateById(sidebar.id) // in Notebook 7 this expands the left panel
    });
    app.commands.addCommand(CommandIDs.stopAll, {
      label: 'Stop all studies of this notebook\'s kernel',
      isEnabled: () => !!currentKernel(),
      execute: allOfCurrent('stop', ['running', 'paused'])
    });
    app.commands.addCommand(CommandIDs.pauseAll, {
      label: 'Pause all studies of this notebook\'s kernel',
      isEnabled: () => !!currentKernel(),
      execute: allOfCurrent('pause', ['running'])
    });
    app.commands.addCommand(CommandIDs.resumeAll, {
      label: 'Resume all studies of this notebook\'s kernel',
      isEnabled: () => !!currentKernel(),
      execute: allOfCurrent('resume', ['paused'])
    });
    app.commands.addKeyBinding({ command: CommandIDs.open, keys: ['Alt Shift T'], selector: 'body' });
    app.commands.addKeyBinding({ command: CommandIDs.stopAll, keys: ['Alt Shift X'], selector: '.jp-Notebook' });
    if (palette) {
      for (const id of Object.values(CommandIDs)) {
        palette.addItem({ command: id, category: 'Tuning' });
      }
    }

    const status = new TuningStatus(model, () => shell.activateById(sidebar.id));
    if (statusBar) {
      statusBar.registerStatusItem(PLUGIN_ID, { item: status, align: 'left', rank: 4 });
    } else {
      // Notebook 7: right of its menu bar's spacer (rank 900), left of the kernel status (10010).
      shell.add(status, 'menu', { rank: 10000 });
    }
    console.debug('hpt-jupyter: the Tuning sidebar is ready');
  }
};

export default plugin;
