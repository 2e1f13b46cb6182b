"""The headless core: search space, cell compilation, runs and their engine, steering,
samplers, storage and execution backends. Nothing here imports IPython, ipywidgets or bqplot
(a test checks): views subscribe to a run's events and call its control API."""
