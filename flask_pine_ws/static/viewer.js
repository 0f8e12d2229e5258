// flask-pine-ws live log viewer: follows a file over the pine.watch.v1 WebSocket.
//
// What the page keeps, and why:
// - `offset` is the byte position in the file just after the last byte received,
//   and `fileId` the file it is in. A reconnect sends both, so the server goes on
//   with the next byte: no gap and no duplicate across server restarts or workers.
// - A streaming TextDecoder turns bytes into text: a UTF-8 character split between
//   two chunks (or two connections) is decoded once, whole.
// - Text is cut into lines at "\n"; the unfinished tail is shown apart, marked as
//   partial, and becomes a line only when its newline arrives (never twice).
// - At most `maxLines` lines stay in the page (oldest dropped): memory is flat on a
//   log that grows for hours. While paused, arriving lines wait off-page (bounded
//   the same way) and are counted.
// - Every piece of log text goes in with textContent or text nodes, never as HTML.
(() => {
  'use strict';

  const PROTOCOL = 'pine.watch.v1';
  const cfg = JSON.parse(document.getElementById('pine-config').textContent);
  const $ = (id) => document.getElementById(id);
  const body = document.body;
  const logEl = $('log');
  const partialEl = $('partial');
  const filterEl = $('filter');
  const regexEl = $('regex');
  const countEl = $('count');
  const pauseEl = $('pause');
  const stateEl = $('state');
  const jumpEl = $('jump');
  const filesEl = $('files');

  const query = new URLSearchParams(location.search);
  const intParam = (value, fallback, lo, hi) => {
    if (value === null || !/^\d+$/.test(value)) return fallback;
    return Math.min(hi, Math.max(lo, parseInt(value, 10)));
  };
  const maxLines = intParam(query.get('max'), cfg.maxLines, 1, 1000000);
  // The lines a new stream starts with: ?lines=N, else the server's setting,
  // but never more than this page keeps (the rest would be dropped at once).
  let firstLines = query.has('lines') ? intParam(query.get('lines'), null, 0, cfg.maxLines) : null;
  if (firstLines === null && cfg.lines !== null && cfg.lines > maxLines) firstLines = maxLines;

  // ---- file list -------------------------------------------------------------

  function fileLink(file) {
    const a = document.createElement('a');
    a.textContent = file.name;
    a.href = file.url;
    if (file.name === cfg.name) a.setAttribute('aria-current', 'page');
    // Keep the filter when switching files, so a shared view carries over.
    a.addEventListener('click', () => { a.href = file.url + location.search; });
    return a;
  }

  if (cfg.files.length > 1 && cfg.name) {
    for (const file of cfg.files) filesEl.appendChild(fileLink(file));
  } else {
    const span = document.createElement('span');
    span.className = 'name';
    span.textContent = cfg.name || cfg.title;
    filesEl.appendChild(span);
  }

  // A live set of files (a served directory): the server's list is asked for
  // again every few seconds, so a file created later appears without a reload.
  function followFileList(url) {
    let known = cfg.files.map((f) => f.name).join('\n');
    const refresh = async () => {
      let files;
      try {
        const resp = await fetch(url, { cache: 'no-store', credentials: 'same-origin' });
        if (!resp.ok) return;
        files = await resp.json();
      } catch (err) {
        return; // the server is away: the socket's reconnect says so
      }
      const names = files.map((f) => f.name).join('\n');
      if (names === known) return;
      known = names;
      cfg.files = files;
      if (cfg.name) {
        filesEl.replaceChildren(...files.map(fileLink));
      } else {
        const list = document.createElement('ul');
        list.className = 'index';
        for (const file of files) {
          const li = document.createElement('li');
          li.appendChild(fileLink(file));
          list.appendChild(li);
        }
        logEl.replaceChildren(list);
      }
    };
    setInterval(refresh, 3000);
  }
  if (cfg.filesUrl) followFileList(cfg.filesUrl);

  if (!cfg.name) {
    // The index of several files: a list, no socket.
    $('tools').hidden = true;
    const list = document.createElement('ul');
    list.className = 'index';
    for (const file of cfg.files) {
      const li = document.createElement('li');
      li.appendChild(fileLink(file));
      list.appendChild(li);
    }
    logEl.replaceChildren(list);
    body.dataset.state = 'index';
    return;
  }

  // ---- levels and filter -----------------------------------------------------

  const LEVELS = [
    [/\b(?:FATAL|CRITICAL|CRIT|EMERG|ALERT|ERROR|ERR|SEVERE)\b|\blevel=(?:fatal|critical|error|err)\b/, 'error'],
    [/\b(?:WARNING|WARN)\b|\blevel=warn(?:ing)?\b/, 'warn'],
    [/\b(?:INFO|NOTICE)\b|\blevel=(?:info|notice)\b/, 'info'],
    [/\b(?:DEBUG|TRACE)\b|\blevel=(?:debug|trace)\b/, 'debug'],
  ];
  const LEVEL_AT = /\b(?:FATAL|CRITICAL|CRIT|EMERG|ALERT|ERROR|ERR|SEVERE|WARNING|WARN|INFO|NOTICE|DEBUG|TRACE)\b|\blevel=\w+/;

  function levelOf(text) {
    // The first level word decides ("INFO retry after ERROR" is info).
    const m = LEVEL_AT.exec(text.length > 300 ? text.slice(0, 300) : text);
    if (!m) return null;
    for (const [re, name] of LEVELS) if (re.test(m[0])) return name;
    return null;
  }

  let filter = null; // a global, case-insensitive RegExp, or null

  function escapeRegExp(s) {
    return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  }

  function compileFilter() {
    const q = filterEl.value;
    filterEl.classList.remove('invalid');
    filterEl.title = '';
    if (!q) return null;
    try {
      return new RegExp(regexEl.checked ? q : escapeRegExp(q), 'gi');
    } catch (err) {
      filterEl.classList.add('invalid');
      filterEl.title = String(err.message || err);
      return null;
    }
  }

  // Fill `el` with `text`, wrapping filter matches in <mark>; returns whether
  // the line matches (always true without a filter).
  function paint(el, text) {
    if (!filter) {
      el.textContent = text;
      return true;
    }
    filter.lastIndex = 0;
    let last = 0;
    let found = false;
    const parts = [];
    for (const m of text.matchAll(filter)) {
      found = true;
      if (m[0].length === 0) continue; // "^" or "x*": matches, nothing to mark
      if (m.index > last) parts.push(document.createTextNode(text.slice(last, m.index)));
      const mark = document.createElement('mark');
      mark.textContent = m[0];
      parts.push(mark);
      last = m.index + m[0].length;
    }
    if (!found) {
      el.textContent = text;
      return false;
    }
    if (last < text.length) parts.push(document.createTextNode(text.slice(last)));
    el.replaceChildren(...parts);
    return true;
  }

  // ---- lines in the page -----------------------------------------------------

  // Each entry: {el, text} for a line, {el, text: null} for a notice.
  let entries = [];
  let lineCount = 0; // lines in the page
  let shown = 0; // lines in the page that match the filter
  // Lines (strings) and notices ({notice}) not in the page yet: they go in
  // once per frame (a burst of 100 000 lines makes at most maxLines
  // elements, not 100 000), or on resume when paused. The oldest are dropped
  // past maxLines, as the page would have dropped them.
  let queue = [];
  let pendingCount = 0; // every line that arrived while paused

  // A line that continues the one before it takes its level: an indented
  // line, a traceback's header, and the "Name: message" line that ends an
  // indented block (Python's traceback, Java's "Caused by").
  const CONTINUATION = /^(?:\s|Traceback |Caused by|[\w.$]+(?:Error|Exception)\b)/;
  const BLOCK_END = /^[A-Za-z_][\w.$]*(?::|$)/;
  let lastLevel = null;
  let lastIndented = false;

  function lineElement(text) {
    const el = document.createElement('div');
    el.className = 'line';
    const continues = CONTINUATION.test(text) || (lastIndented && BLOCK_END.test(text));
    const level = levelOf(text) || (continues ? lastLevel : null);
    lastLevel = level;
    lastIndented = /^\s/.test(text);
    if (level) el.classList.add('lvl-' + level);
    el.hidden = !paint(el, text);
    return el;
  }

  function append(texts) {
    if (!texts.length) return;
    if (texts.length > maxLines) texts = texts.slice(texts.length - maxLines);
    const frag = document.createDocumentFragment();
    for (const text of texts) {
      const el = lineElement(text);
      if (!el.hidden) shown += 1;
      entries.push({ el, text });
      lineCount += 1;
      frag.appendChild(el);
    }
    logEl.insertBefore(frag, partialEl);
    trim();
  }

  // Drop the oldest entries (notices among them) until maxLines lines are
  // left, and at most 100 notices besides (a file truncated again and again).
  function trim() {
    let drop = 0;
    while ((lineCount > maxLines || entries.length - drop > maxLines + 100)
           && drop < entries.length) {
      const e = entries[drop];
      e.el.remove();
      if (e.text !== null) {
        lineCount -= 1;
        if (!e.el.hidden) shown -= 1;
      }
      drop += 1;
    }
    if (drop) entries = entries.slice(drop);
  }

  function enqueue(items, lines) {
    for (const item of items) queue.push(item);
    // Trim in batches: slicing on every line would be quadratic.
    if (queue.length > maxLines * 2 + 100) queue = queue.slice(queue.length - maxLines);
    if (paused) {
      pendingCount += lines;
      updatePause();
    } else {
      scheduleFlush();
    }
  }

  let flushScheduled = false;
  let flushCost = 0; // ms the last flush took, its layout included
  function scheduleFlush() {
    if (flushScheduled) return;
    flushScheduled = true;
    if (flushCost > 20) {
      // A flush is as dear as a layout of the whole page (thousands of
      // lines): under a flood, flush less often and in bigger batches, so
      // the page keeps up and stays responsive instead of laying out the
      // same lines on every frame.
      setTimeout(onFrame, Math.min(1000, flushCost * 4));
      return;
    }
    // A frame, or a timer where frames do not come (a hidden tab), whichever
    // is first: the queue is bounded either way.
    requestAnimationFrame(onFrame);
    setTimeout(onFrame, 200);
  }

  function onFrame() {
    if (flushScheduled) flush();
  }

  // Put the queue in the page, then the partial line, then keep the end in view.
  function flush() {
    flushScheduled = false;
    if (paused) return;
    const started = performance.now();
    const items = queue;
    queue = [];
    let run = [];
    for (const item of items) {
      if (typeof item === 'string') {
        run.push(item);
      } else {
        append(run);
        run = [];
        addNotice(item.notice);
      }
    }
    append(run);
    partialEl.hidden = !tail || !paint(partialEl, tail);
    updateCount();
    scrollToEnd();
    flushCost = performance.now() - started;
  }

  function notice(message) {
    enqueue([{ notice: message }], 0); // in order with the lines around it
  }

  function addNotice(message) {
    const el = document.createElement('div');
    el.className = 'notice';
    el.setAttribute('role', 'status');
    el.textContent = message;
    entries.push({ el, text: null });
    logEl.insertBefore(el, partialEl);
    lastLevel = null; // a new file: nothing to continue
    lastIndented = false;
    trim();
  }

  function refilter() {
    filter = compileFilter();
    shown = 0;
    for (const e of entries) {
      if (e.text === null) continue;
      e.el.hidden = !paint(e.el, e.text);
      if (!e.el.hidden) shown += 1;
    }
    if (!paused) partialEl.hidden = !tail || !paint(partialEl, tail);
    updateCount();
    if (!paused) scrollToEnd();
  }

  function updateCount() {
    countEl.textContent = filter ? `${shown} of ${lineCount} lines` : `${lineCount} lines`;
    body.dataset.lines = String(lineCount);
  }

  // ---- follow and pause ------------------------------------------------------

  let paused = null; // null (following), 'scroll' or 'button'

  function atEnd() {
    return logEl.scrollHeight - logEl.scrollTop - logEl.clientHeight < 4;
  }

  function scrollToEnd() {
    logEl.scrollTop = logEl.scrollHeight;
  }

  function pause(reason) {
    if (paused) return;
    paused = reason;
    body.dataset.paused = reason;
    updatePause();
  }

  function resume() {
    if (!paused) return;
    paused = null;
    delete body.dataset.paused;
    pendingCount = 0;
    updatePause();
    flush();
  }

  function updatePause() {
    if (paused) {
      const n = pendingCount;
      pauseEl.textContent = n ? `Resume (${n} new)` : 'Resume';
      pauseEl.classList.add('active');
      jumpEl.hidden = false;
      jumpEl.textContent = n ? `\u2193 ${n} new line${n === 1 ? '' : 's'}, follow` : '\u2193 Follow';
      body.dataset.pending = String(n);
    } else {
      pauseEl.textContent = 'Pause';
      pauseEl.classList.remove('active');
      jumpEl.hidden = true;
      body.dataset.pending = '0';
    }
  }

  // Only a move up pauses: the log's box also changes size by itself (the
  // toolbar wraps, the window is resized), and a scroll event that follows
  // such a change may find the end out of view without anyone scrolling.
  let lastTop = 0;
  logEl.addEventListener('scroll', () => {
    const top = logEl.scrollTop;
    const up = top < lastTop;
    lastTop = top;
    if (atEnd()) {
      if (paused === 'scroll') resume();
    } else if (!paused && up) {
      pause('scroll');
    }
  });
  // Following means the end stays in view whatever changes the log's size.
  new ResizeObserver(() => {
    if (!paused) scrollToEnd();
  }).observe(logEl);
  pauseEl.addEventListener('click', () => (paused ? resume() : pause('button')));
  jumpEl.addEventListener('click', () => resume());

  // ---- text from bytes -------------------------------------------------------

  let decoder = new TextDecoder('utf-8'); // invalid bytes become U+FFFD
  let tail = ''; // text after the last "\n": a line not finished yet

  function feed(text) {
    if (!text) return;
    tail += text;
    const out = [];
    let start = 0;
    let nl;
    while ((nl = tail.indexOf('\n', start)) !== -1) {
      // "\r\n" line ends: the "\r" is not part of the line.
      out.push(tail.slice(start, nl > start && tail.charCodeAt(nl - 1) === 13 ? nl - 1 : nl));
      start = nl + 1;
    }
    tail = tail.slice(start);
    enqueue(out, out.length); // the partial line too is shown at the flush
  }

  // The file ended without a newline and another begins: the tail is a whole line.
  function endOfFile() {
    const rest = decoder.decode();
    decoder = new TextDecoder('utf-8');
    tail += rest;
    if (tail) {
      const last = tail;
      tail = '';
      enqueue([last], 1);
    }
  }

  // ---- the socket ------------------------------------------------------------

  let ws = null;
  let offset = null; // next byte of the file to receive; null before the first open
  let fileId = null;
  let attempts = 0; // failed connections in a row (the backoff)
  let opens = 0; // streams opened, the first one included
  let connects = 0; // connections tried
  let retryTimer = null;
  let stopped = false; // refused by the server (1008): wait for the user
  let unexplained = false; // resumed elsewhere than asked, no reason given yet

  const HOW = {
    renamed: 'The file was rotated (renamed); following the new file from its start.',
    removed: 'The file was removed; following the new file from its start.',
    truncated: 'The file was truncated; following it from its start.',
    replaced: 'The file was replaced; following the new file from its start.',
  };

  function setState(state, text, detail) {
    body.dataset.state = state;
    stateEl.className = 'state ' + state;
    stateEl.textContent = text || state;
    stateEl.title = detail || '';
  }

  function socketUrl() {
    const url = new URL(cfg.ws, location.href);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    if (offset !== null) {
      url.searchParams.set('offset', String(offset));
      if (fileId) url.searchParams.set('file', fileId);
    } else if (firstLines !== null) {
      url.searchParams.set('lines', String(firstLines));
    }
    return url.href;
  }

  function publish() {
    body.dataset.offset = offset === null ? '' : String(offset);
    body.dataset.file = fileId || '';
  }

  function connect() {
    clearTimeout(retryTimer);
    retryTimer = null;
    stopped = false;
    connects += 1;
    body.dataset.connects = String(connects);
    setState('connecting', attempts ? 'reconnecting\u2026' : 'connecting\u2026');
    let sock;
    try {
      sock = new WebSocket(socketUrl(), [PROTOCOL]);
    } catch (err) {
      scheduleReconnect(`cannot connect: ${err.message || err}`);
      return;
    }
    sock.binaryType = 'arraybuffer';
    ws = sock;
    sock.onmessage = (ev) => {
      if (ws !== sock) return;
      if (typeof ev.data === 'string') {
        if (sock.protocol === PROTOCOL) control(ev.data);
        else feed(ev.data); // a server without the subprotocol: plain text, no resume
      } else {
        const n = ev.data.byteLength;
        if (unexplained) {
          unexplained = false;
          notice(`Reconnected: the file changed while away; showing it from byte ${offset}.`);
        }
        feed(decoder.decode(ev.data, { stream: true }));
        if (offset !== null) offset += n;
        publish();
      }
    };
    sock.onclose = (ev) => {
      if (ws !== sock) return;
      ws = null;
      closed(ev.code, ev.reason);
    };
  }

  function control(data) {
    let msg;
    try {
      msg = JSON.parse(data);
    } catch (err) {
      return; // not ours: ignore rather than break the stream
    }
    switch (msg.event) {
      case 'open': {
        attempts = 0;
        opens += 1;
        body.dataset.opens = String(opens);
        const resuming = offset !== null;
        const same = resuming && msg.offset === offset && (!fileId || !msg.file || msg.file === fileId);
        if (resuming && !same) {
          // The server could not go on where we were (the file was replaced
          // or truncated while we were away): what we hold of the old file is
          // complete. A "rotated" message says why; if none comes before the
          // next bytes, say so ourselves.
          endOfFile();
          unexplained = true;
        }
        offset = typeof msg.offset === 'number' ? msg.offset : 0;
        fileId = msg.file || null;
        publish();
        setState('live', 'live');
        break;
      }
      case 'rotated': {
        unexplained = false;
        endOfFile();
        offset = typeof msg.offset === 'number' ? msg.offset : 0;
        fileId = msg.file || null;
        publish();
        notice(HOW[msg.how] || `The file changed (${String(msg.how)}); following it from its start.`);
        setState('live', 'live');
        break;
      }
      case 'waiting':
        setState('waiting', 'waiting for the file to appear\u2026');
        break;
      default:
        break; // a newer server's event: ignore
    }
  }

  function closed(code, reason) {
    if (code === 1008 && !/ping\/pong timeout/i.test(reason)) {
      // Refused: reconnecting would be refused again. Say why and wait.
      // (A ping left unanswered, a tab asleep, is no refusal: reconnect.)
      stopped = true;
      setState('refused', `refused: ${reason || 'policy violation'} (click to retry)`);
      return;
    }
    if (code === 1011 && reason) {
      // The server cannot read the file (yet): say so while retrying.
      scheduleReconnect(reason, true);
      return;
    }
    const why = code === 1001 ? 'server restarting' : code === 1011 ? 'server error'
      : code === 1006 ? 'connection lost' : `closed (${code}${reason ? ': ' + reason : ''})`;
    scheduleReconnect(why);
  }

  function scheduleReconnect(why, visible) {
    // Exponential backoff with jitter, 0.5 s to 15 s: a restarting server is
    // not hammered by every open tab at the same instant.
    const base = Math.min(15000, 500 * 2 ** Math.min(attempts, 5));
    const delay = Math.round(base * (0.75 + Math.random() * 0.5));
    attempts += 1;
    const when = `reconnecting in ${Math.max(1, Math.round(delay / 1000))} s`;
    setState('reconnecting', visible ? `${why}; ${when}` : when,
      `${why}; the page resumes where it stopped`);
    retryTimer = setTimeout(connect, delay);
  }

  stateEl.addEventListener('click', () => {
    if (stopped || retryTimer) {
      attempts = 0;
      connect();
    }
  });
  window.addEventListener('online', () => {
    if (retryTimer) connect();
  });

  // ---- filter in the URL -----------------------------------------------------

  filterEl.value = query.get('q') || '';
  regexEl.checked = query.get('re') === '1';

  let filterTimer = null;
  function filterChanged() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      const url = new URL(location.href);
      if (filterEl.value) url.searchParams.set('q', filterEl.value);
      else url.searchParams.delete('q');
      if (regexEl.checked) url.searchParams.set('re', '1');
      else url.searchParams.delete('re');
      history.replaceState(null, '', url.href);
      refilter();
    }, 120);
  }
  filterEl.addEventListener('input', filterChanged);
  regexEl.addEventListener('change', filterChanged);

  filter = compileFilter();
  updateCount();
  updatePause();
  publish();
  connect();
})();
