"""The dashboard's steering panel: a range control per knob, brushes, "focus on the top X%",
reset, and "try these values next".

Every action goes through the run's steering API (:meth:`Run.narrow`, :meth:`Run.reset`,
:meth:`Run.enqueue`), so the panel does nothing code cannot do. Threads: the user's actions
arrive on the kernel's main thread, which writes the message line; the dashboard's writer
thread is the only one that moves the controls (to show a narrowing made from code, or a
proposal), and marks those writes so that they are not taken for the user's.
"""

from __future__ import annotations

import html
import math
import threading
from typing import Any, Callable

import ipywidgets as widgets

from ..errors import TuneError
from ..core.run import Run
from ..core.space import ChoiceParam, IntParam, Param
from ..core.steering import narrowed, parse_assignments, percent, same_choice

_ERROR = "color:#cf222e"
_OK = "color:#1a7f37"


class KnobControl:
    """One knob's control: a range slider (over log10 for log knobs, with the real values
    beside it) or one toggle per option."""

    def __init__(self, param: Param, on_change: Callable[[], None]) -> None:
        self.param = param
        self.readout = widgets.Label(layout=widgets.Layout(width="150px"))
        layout = widgets.Layout(width="100%")
        style = {"description_width": "70px"}
        if isinstance(param, ChoiceParam):
            self.toggles = [widgets.ToggleButton(value=True, description=str(label), tooltip=f"search {label!r}",
                                                 layout=widgets.Layout(width="auto"))
                            for label in param.labels]
            for toggle in self.toggles:
                toggle.observe(lambda _: on_change(), "value")
            self.widget = widgets.HBox([widgets.Label(param.name, layout=widgets.Layout(width="74px")),
                                        *self.toggles], layout=widgets.Layout(flex_flow="row wrap"))
            return
        self.toggles = []
        if param.log:
            low, high = math.log10(param.low), math.log10(param.high)
            self.slider = widgets.FloatRangeSlider(min=low, max=high, step=(high - low) / 1000, value=(low, high),
                                                   readout=False, continuous_update=False, description=param.name,
                                                   layout=layout, style=style)
        elif isinstance(param, IntParam):
            self.slider = widgets.IntRangeSlider(min=param.low, max=param.high, step=param.step,
                                                 value=(param.low, param.high), readout=False,
                                                 continuous_update=False, description=param.name,
                                                 layout=layout, style=style)
        else:
            step = param.step or (param.high - param.low) / 1000
            self.slider = widgets.FloatRangeSlider(min=param.low, max=param.high, step=step,
                                                   value=(param.low, param.high), readout=False,
                                                   continuous_update=False, description=param.name,
                                                   layout=layout, style=style)
        self.slider.observe(lambda _: on_change(), "value")
        self._show_readout(self.request())
        self.widget = widgets.HBox([self.slider, self.readout])

    def request(self) -> Any:
        """What the control asks for, in the knob's own units: (low, high) or a list of options."""
        param = self.param
        if isinstance(param, ChoiceParam):
            return [option for option, toggle in zip(param.options, self.toggles) if toggle.value]
        low, high = self.slider.value
        if param.log:
            low, high = 10 ** low, 10 ** high
            if isinstance(param, IntParam):
                low, high = math.ceil(low - 1e-9), math.floor(high + 1e-9)
        # a slider end at its limit means the declared bound itself, not its float rounding
        if self.slider.value[0] <= self.slider.min:
            low = param.low
        if self.slider.value[1] >= self.slider.max:
            high = param.high
        return (low, high)

    def show(self, wanted: Any) -> None:
        """Move the control to ``wanted`` (writer thread, marked as not the user's)."""
        param = self.param
        if isinstance(param, ChoiceParam):
            keep = [label for option, label in zip(param.options, param.labels)
                    if any(option is w or same_choice(option, w) or same_choice(label, w) for w in wanted)]
            for toggle, label in zip(self.toggles, param.labels):
                toggle.value = label in keep
            return
        low, high = wanted
        if param.log:
            low, high = math.log10(low), math.log10(high)
        self.slider.value = (max(low, self.slider.min), min(high, self.slider.max))
        self._show_readout(wanted)

    def _show_readout(self, wanted: Any) -> None:
        low, high = wanted
        self.readout.value = f"{low:.3g} .. {high:.3g}"

    def refresh_readout(self) -> None:
        if not isinstance(self.param, ChoiceParam):
            self._show_readout(self.request())


def _example_values(space: dict[str, Param]) -> str:
    """What to type in "Try next", in this study's own knobs: ``C=1 kernel=rbf``."""
    words = []
    for name, param in list(space.items())[:2]:
        if isinstance(param, ChoiceParam):
            words.append(f"{name}={param.labels[0]}")
        elif getattr(param, "log", False):
            words.append(f"{name}={10 ** round((math.log10(param.low) + math.log10(param.high)) / 2):g}")
        else:
            middle = (param.low + param.high) / 2
            words.append(f"{name}={int(middle) if isinstance(param, IntParam) else round(middle, 3):g}")
    return " ".join(words)


class SteerPanel:
    """Built on the main thread beside the dashboard's plots; ``sync()`` runs in its writer."""

    def __init__(self, run: Run, request_refresh: Callable[[], None]) -> None:
        self.run = run
        self._request_refresh = request_refresh
        self._local = threading.local()  # .syncing: the writer is moving controls, not the user
        self._proposal: tuple[str, dict[str, Any]] | None = None
        self._proposal_id = 0
        self._shown: tuple[int, int] | None = None  # (narrowings, proposal) the controls show
        space = run.declared_space()
        self.controls = {name: KnobControl(param, lambda name=name: self._on_control(name))
                         for name, param in space.items()}
        # Start on the space searched now (a resumed study may be narrowed already); from here
        # on the writer moves the controls only when the space changes or a proposal comes,
        # never back over what the user has just dragged.
        self._local.syncing = True
        try:
            for name, param in run.effective_space().items():
                if name in self.controls:
                    self.controls[name].show(_request_of(param))
        finally:
            self._local.syncing = False
        self._shown = (len(run.narrowings), self._proposal_id)
        self.message = widgets.HTML()
        self.history = widgets.HTML()
        self.apply_button = widgets.Button(description="Apply proposal", icon="check", disabled=True,
                                           tooltip="Search the proposed ranges from the next trial on")
        self.reset_button = widgets.Button(description="Reset", icon="undo",
                                           tooltip="Search the whole declared space again")
        self.top_fraction = widgets.BoundedIntText(value=25, min=1, max=100, layout=widgets.Layout(width="64px"))
        self.top_button = widgets.Button(description="Focus on top %", icon="crosshairs",
                                         tooltip="Propose the ranges the best trials span")
        self.try_values = widgets.Text(placeholder=_example_values(space) or "x=1 kind=a",
                                       layout=widgets.Layout(width="180px"))
        self.try_button = widgets.Button(description="Try next", icon="play-circle",
                                         tooltip="Queue these values as the next trial (other knobs: the sampler's)")
        self.near_number = widgets.BoundedIntText(value=0, min=0, max=10**9, layout=widgets.Layout(width="80px"))
        self.near_button = widgets.Button(description="Try near #", icon="dot-circle-o",
                                          tooltip="Queue a trial close to this trial's values")
        self.apply_button.on_click(lambda _: self._apply_proposal())
        self.reset_button.on_click(lambda _: self._act(lambda: self.run.reset(source="reset")))
        self.top_button.on_click(lambda _: self._propose_top())
        self.try_button.on_click(lambda _: self._try_values())
        self.near_button.on_click(lambda _: self._try_near())
        note = ("Narrowing searches a part of the declared space from the next trial on, keeping "
                "what was learnt inside it.")
        self.widget = widgets.VBox([
            widgets.HTML(f"<b>Steer</b> <span style='color:#57606a;font-size:smaller'>{note}</span>"),
            *[control.widget for control in self.controls.values()],
            widgets.HBox([self.top_fraction, self.top_button]),
            widgets.HBox([self.apply_button, self.reset_button]),
            widgets.HBox([self.try_values, self.try_button]),
            widgets.HBox([self.near_number, self.near_button]),
            self.message, self.history,
        ], layout=widgets.Layout(min_width="300px", width="34%", padding="0 0 0 8px"))

    # --- the user's actions (main thread) ------------------------------------------------

    def _say(self, text: str, ok: bool = True) -> None:
        self.message.value = f"<span style='{_OK if ok else _ERROR}'>{html.escape(text)}</span>"

    def _act(self, action: Callable[[], Any]) -> Any:
        """Run a steering call; a refusal is shown, nothing is applied, the study goes on."""
        try:
            record = action()
        except TuneError as error:
            self._say(str(error), ok=False)
            self._shown = None  # put the controls back to the space searched now
            self._request_refresh()
            return None
        if record is not None and hasattr(record, "ranges"):
            what = ", ".join(f"{k} {v}" for k, v in record.ranges.items()) or "the whole declared space"
            self._say(f"Searching {what} from the next trial on ({record.source}).")
            self._proposal = None
            self.apply_button.disabled = True
        self._request_refresh()
        return record

    def _on_control(self, name: str) -> None:
        if getattr(self._local, "syncing", False):
            return  # the writer showing a narrowing or a proposal
        control = self.controls[name]
        control.refresh_readout()
        self._act(lambda: self.run.narrow(source="slider", **{name: control.request()}))

    def propose(self, source: str, ranges: dict[str, Any]) -> None:
        """Show ``ranges`` on the controls; "Apply proposal" searches them (brush, top X%)."""
        try:  # check now, so that a proposal is always one that can be applied
            declared = self.run.declared_space()
            ranges = {name: _request_of(narrowed(declared[name], request)) for name, request in ranges.items()
                      if name in declared}
        except TuneError as error:
            self._say(str(error), ok=False)
            return
        if not ranges:
            return
        share, inside = self.run.preview(**ranges)
        self._proposal = (source, ranges)
        self._proposal_id += 1
        self.apply_button.disabled = False
        shown = ", ".join(f"{k} {_describe_request(v)}" for k, v in ranges.items())
        self._say(f"Proposed ({source}): {shown}: {percent(share)} of the declared space, {inside} complete "
                  "trials inside. Press Apply proposal to search it.")
        self._request_refresh()

    def _propose_top(self) -> None:
        fraction = self.top_fraction.value / 100
        try:
            ranges = self.run.propose_focus(fraction)
        except TuneError as error:
            self._say(str(error), ok=False)
            return
        self.propose("top", ranges)

    def _apply_proposal(self) -> None:
        if self._proposal is None:
            return
        source, ranges = self._proposal
        self._act(lambda: self.run.narrow(source=source, **ranges))

    def _try_values(self) -> None:
        def enqueue() -> None:
            values = parse_assignments(self.try_values.value.split())
            if not values:
                raise TuneError("Type the values to try, e.g. lr=1e-3 kernel=rbf.")
            stored = self.run.enqueue(values, source="dashboard")
            self._say("Queued as the next trial: " + ", ".join(f"{k}={v!r}" for k, v in stored.items()))

        self._act(enqueue)

    def _try_near(self) -> None:
        def enqueue() -> None:
            try:
                stored = self.run.enqueue_near(self.near_number.value)
            except KeyError as error:
                raise TuneError(str(error).strip("'\"")) from None
            self._say(f"Queued near #{self.near_number.value}: " + ", ".join(f"{k}={v!r}" for k, v in stored.items()))

        self._act(enqueue)

    # --- the writer ----------------------------------------------------------------------

    def sync(self) -> None:
        """Show the space searched now (or the pending proposal) and the narrowing history."""
        run = self.run
        state = (len(run.narrowings), self._proposal_id)
        if state != self._shown:
            self._shown = state
            wanted = {name: _request_of(param) for name, param in run.effective_space().items()}
            if self._proposal is not None:
                wanted.update(self._proposal[1])
            self._local.syncing = True
            try:
                for name, control in self.controls.items():
                    if name in wanted:
                        control.show(wanted[name])
            finally:
                self._local.syncing = False
        lines = [html.escape(record.describe()) for record in run.narrowings[-8:]]
        self.history.value = ("<div style='font-size:smaller;color:#57606a'><b>Narrowings</b><br>"
                              + "<br>".join(lines) + "</div>") if lines else ""


def _request_of(param: Param) -> Any:
    if isinstance(param, ChoiceParam):
        return list(param.options)
    return (param.low, param.high)


def _describe_request(request: Any) -> str:
    if isinstance(request, tuple):
        return f"{request[0]:.3g} .. {request[1]:.3g}"
    return repr(request)

