// What a reader would notice, measured from a dashboard's DOM (the argument: its root element).
// Returns how much of the page's width the charts span, and every pair of tick labels (or an
// axis label and a tick label) of one axis that overlap, and legends over a plot area.
(root) => {
  const page = root.querySelector('.hpt-page');
  const pageBox = page.getBoundingClientRect();
  const shown = (e) => { const b = e.getBoundingClientRect(); return b.width > 0 && b.height > 0; };
  const figures = [...page.querySelectorAll('.bqplot.figure')].filter(shown);
  let left = Infinity, right = -Infinity;
  for (const f of figures) {
    const b = f.getBoundingClientRect();
    left = Math.min(left, b.left);
    right = Math.max(right, b.right);
  }
  const overlap = (a, b) => Math.min(a.right, b.right) - Math.max(a.left, b.left) > 1
    && Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top) > 1;
  const overlaps = [];
  const legends = [];
  for (const f of figures) {
    const title = f.querySelector('.mainheading')?.textContent || '';
    for (const axis of f.querySelectorAll('g.axis')) {
      const ticks = [...axis.querySelectorAll('g.tick text')]
        .filter(t => t.textContent.trim() && shown(t))
        .map(t => [t.textContent, t.getBoundingClientRect()]);
      for (let i = 0; i < ticks.length; i++) {
        for (let j = i + 1; j < ticks.length; j++) {
          if (overlap(ticks[i][1], ticks[j][1])) overlaps.push(`${title}: '${ticks[i][0]}' and '${ticks[j][0]}'`);
        }
      }
      const label = axis.querySelector('text.axislabel');
      const plot = f.querySelector('rect.plotarea_background');
      if (label && label.textContent.trim() && shown(label) && plot && overlap(label.getBoundingClientRect(), plot.getBoundingClientRect())) {
        overlaps.push(`${title}: axis label '${label.textContent}' inside the plot area`);
      }
      if (label && label.textContent.trim() && shown(label)) {
        for (const [text, box] of ticks) {
          if (overlap(label.getBoundingClientRect(), box)) overlaps.push(`${title}: axis label '${label.textContent}' and '${text}'`);
        }
      }
    }
    const plot = f.querySelector('rect.plotarea_background');
    for (const legend of f.querySelectorAll('g.g_legend, g.legend')) {
      if (shown(legend) && legend.childElementCount && plot && overlap(legend.getBoundingClientRect(), plot.getBoundingClientRect())) {
        legends.push(title);
      }
    }
    const heading = f.querySelector('.mainheading');
    if (heading && shown(heading)) {
      const h = heading.getBoundingClientRect(), fb = f.getBoundingClientRect();
      if (h.left < fb.left - 1 || h.right > fb.right + 1) overlaps.push(`${title}: the title is cut`);
    }
  }
  return {
    span: figures.length ? (right - left) / pageBox.width : null,
    figures: figures.length,
    widths: figures.map(f => Math.round(f.getBoundingClientRect().width)),
    pageWidth: Math.round(pageBox.width),
    overlaps,
    legendsOverPlots: legends,
  };
}
