// flask-pine-ws viewer: tries a filter's regular expression on sample lines.
// The page runs it here, in a Worker it terminates past a time budget, so a
// pattern that backtracks without end ("(a+)+$") is refused instead of
// freezing the tab. Answers once every sample has been tried.
self.onmessage = (ev) => {
  const { source, flags, samples } = ev.data;
  const re = new RegExp(source, flags.replace('g', ''));
  for (const text of samples) re.test(text);
  self.postMessage({ ok: true });
};
