// flask-pine-ws viewer: runs the page's regular expression filter.
// A pattern can backtrack without end on one line and not on another, so the
// page never runs it itself: it sends batches of lines here and renders from
// the answers; a batch past its time budget has this Worker terminated and the
// filter turned off, and the tab stays responsive meanwhile.
// In: {id, source, flags, lines: [[text, raw or null]]}. Out: {id, results},
// per line the [from, to] ranges of its matches in `text`, or null when
// neither `text` nor `raw` (a JSON line's whole text) matches.
let re = null;
let key = null;

self.onmessage = (ev) => {
  const { id, source, flags, lines } = ev.data;
  if (key !== flags + '/' + source) {
    re = new RegExp(source, flags);
    key = flags + '/' + source;
  }
  const results = [];
  for (const [text, raw] of lines) {
    re.lastIndex = 0;
    const ranges = [];
    let found = false;
    for (const m of text.matchAll(re)) {
      found = true;
      if (m[0].length) ranges.push([m.index, m.index + m[0].length]); // "^" matches, marks nothing
    }
    if (!found && raw !== null) {
      re.lastIndex = 0;
      found = re.test(raw);
    }
    results.push(found ? ranges : null);
  }
  self.postMessage({ id, results });
};
