"""Views of a run: they subscribe to its events and never drive it. ``text`` works anywhere;
``dashboard`` and ``steer_panel`` are the only modules that import ipywidgets and bqplot;
``lab`` feeds the JupyterLab sidebar over a comm."""
