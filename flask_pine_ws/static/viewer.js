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
// - Every piece of log text goes in with textContent or text nodes, never as HTML
//   (ANSI colours become spans with classes, JSON lines a summary and a tree).
// - Each line knows the byte offset of its start (`start`) in the file `file`:
//   scrolling to the top asks the server for the lines before the first one
//   (`before`), page by page down to byte 0, so the seam is exact; a page that
//   grows past `maxLines` that way drops its newest lines and waits off-page for
//   live ones, reloading the end when the user follows again.
// - A line is rendered up to LINE_MAX characters, the rest fetched on demand
//   (a Range request); an unfinished line is kept to that length too, so a
//   100 MiB line without a newline costs what it shows, not what it is.
// - A regular expression filter never runs on the main thread: it is tried in
//   a Worker on the page's lines and on probes first, with a time budget (one
//   that backtracks without end is refused), then a long-lived Worker matches
//   every line, in batches each with that budget; a later line on which the
//   pattern explodes has the Worker terminated and the filter turned off,
//   never the tab frozen. A plain-text filter (an escaped literal, which
//   cannot backtrack) runs on the main thread.
(() => {
  'use strict';

  const PROTOCOL = 'pine.watch.v1';
  const LINE_MAX = 10000; // characters of a line rendered; the rest on demand
  const MORE_BYTES = 65536; // bytes fetched per "more" click of a long line
  const CHECK_MS = 1500; // budget of a regex filter's trial in the Worker
  const MATCH_MS = 1500; // budget of one batch of lines in the matching Worker
  const MATCH_BATCH = 2000; // lines per batch sent to the matching Worker
  const SCRIPT_URL = document.currentScript ? document.currentScript.src : location.href;
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

  // Every URL of the page's HTTP requests, relative to the page itself (a
  // URL prefix, a proxy's path, work unchanged): `<name>/<what>?params`.
  function endpoint(what, params) {
    const url = new URL(`${encodeURIComponent(cfg.name)}/${what}`, location.href);
    for (const [k, v] of Object.entries(params || {})) {
      if (v !== null && v !== undefined && v !== '') url.searchParams.set(k, String(v));
    }
    return url.href;
  }

  const plural = (n, word, many) => `${n} ${n === 1 ? word : many || word + 's'}`;

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

  // Several files at once, from the index: ?merge=a,b (one log, each line
  // marked with its file, in arrival order) or ?split=a,b (side by side).
  // Each file is followed by its own page in a frame; a merged view's frames
  // are hidden and hand their lines to this page.
  const chosen = (key) => (query.get(key) || '').split(',')
    .map((n) => cfg.files.find((f) => f.name === n)).filter(Boolean);
  const merged = cfg.name ? [] : chosen('merge');
  const embedded = query.get('embed') === 'merge' && window.parent !== window;

  function frame(file, embed) {
    const el = document.createElement('iframe');
    el.className = 'pane';
    el.title = file.name;
    el.src = new URL(file.url + (embed ? '?embed=merge' : ''), location.href).href;
    return el;
  }

  // The index of several files: a list, no socket, and the views of several
  // (boxes chosen before a refresh of the list stay chosen).
  let boxes = [];
  function renderIndex() {
    const was = new Set(boxes.filter((b) => b.checked).map((b) => b.value));
    boxes = [];
    const list = document.createElement('ul');
    list.className = 'index';
    for (const file of cfg.files) {
      const li = document.createElement('li');
      const box = document.createElement('input');
      box.type = 'checkbox';
      box.value = file.name;
      box.checked = was.has(file.name);
      box.setAttribute('aria-label', `choose ${file.name}`);
      boxes.push(box);
      li.append(box, fileLink(file));
      list.appendChild(li);
    }
    const actions = document.createElement('p');
    actions.className = 'views';
    for (const [key, label] of [['merge', 'Merge the chosen files'], ['split', 'Two side by side']]) {
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.id = 'view-' + key;
      btn.textContent = label;
      btn.addEventListener('click', () => {
        const names = boxes.filter((b) => b.checked).map((b) => b.value);
        if (names.length < 2) return;
        const url = new URL(location.href);
        url.searchParams.set(key, names.join(','));
        location.assign(url.href);
      });
      actions.appendChild(btn);
    }
    logEl.replaceChildren(list, actions);
    body.dataset.state = 'index';
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
      if (cfg.name) filesEl.replaceChildren(...files.map(fileLink));
      else if (body.dataset.state === 'index') renderIndex();
    };
    setInterval(refresh, 3000);
  }
  if (cfg.filesUrl && !embedded) followFileList(cfg.filesUrl);

  if (!cfg.name && !merged.length) {
    $('tools').hidden = true;
    const split = chosen('split').slice(0, 2);
    if (split.length === 2) {
      const panes = document.createElement('div');
      panes.className = 'split';
      for (const file of split) panes.appendChild(frame(file, false));
      logEl.replaceWith(panes);
      body.dataset.state = 'split';
      return;
    }
    renderIndex();
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
  // The filter is a regular expression: only the matching Worker runs it
  // (see "the regex filter's Worker"), the main thread renders its answers.
  let filterByWorker = false;
  let filterGen = 0; // bumped on every change of filter: older answers are dropped

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

  // ---- ANSI colours and JSON lines ---------------------------------------------

  // CSI sequences: SGR ("m") sets colours, the others (cursor moves) are dropped.
  const CSI = /\x1b\[([0-9;:?]*)([@-~])/g;
  const ANSI_256 = (n) => {
    if (n < 16) return null; // the named colours: classes
    if (n >= 232) { const v = 8 + (n - 232) * 10; return `rgb(${v},${v},${v})`; }
    const i = n - 16;
    const c = (x) => (x ? 55 + x * 40 : 0);
    return `rgb(${c(Math.floor(i / 36))},${c(Math.floor(i / 6) % 6)},${c(i % 6)})`;
  };

  // Text without escape sequences, and the runs of style over it:
  // [{from, to, cls: [...], fg, bg}], or null when the line has none.
  function parseAnsi(raw) {
    if (raw.indexOf('\x1b') === -1) return { text: raw, runs: null };
    const runs = [];
    let text = '';
    let st = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
    let last = 0;
    const push = (piece) => {
      if (!piece) return;
      const cls = [];
      if (st.fg !== null && typeof st.fg === 'number') cls.push('ansi-fg-' + st.fg);
      if (st.bg !== null && typeof st.bg === 'number') cls.push('ansi-bg-' + st.bg);
      if (st.bold) cls.push('ansi-bold');
      if (st.dim) cls.push('ansi-dim');
      if (st.italic) cls.push('ansi-italic');
      if (st.underline) cls.push('ansi-underline');
      runs.push({ from: text.length, to: text.length + piece.length, cls,
        fg: typeof st.fg === 'string' ? st.fg : null, bg: typeof st.bg === 'string' ? st.bg : null });
      text += piece;
    };
    CSI.lastIndex = 0;
    let m;
    while ((m = CSI.exec(raw)) !== null) {
      push(raw.slice(last, m.index));
      last = m.index + m[0].length;
      if (m[2] !== 'm') continue;
      const codes = m[1] === '' ? [0] : m[1].split(/[;:]/).map((x) => parseInt(x || '0', 10));
      for (let i = 0; i < codes.length; i += 1) {
        const c = codes[i];
        if (c === 0) st = { fg: null, bg: null, bold: false, dim: false, italic: false, underline: false };
        else if (c === 1) st.bold = true;
        else if (c === 2) st.dim = true;
        else if (c === 3) st.italic = true;
        else if (c === 4) st.underline = true;
        else if (c === 22) { st.bold = false; st.dim = false; }
        else if (c === 23) st.italic = false;
        else if (c === 24) st.underline = false;
        else if ((c >= 30 && c <= 37) || (c >= 90 && c <= 97)) st.fg = c;
        else if (c === 39) st.fg = null;
        else if ((c >= 40 && c <= 47) || (c >= 100 && c <= 107)) st.bg = c;
        else if (c === 49) st.bg = null;
        else if ((c === 38 || c === 48) && codes[i + 1] === 5) {
          const n = codes[i + 2] || 0;
          const named = n < 8 ? 30 + n : n < 16 ? 90 + n - 8 : ANSI_256(n);
          const value = typeof named === 'number' && c === 48 ? named + 10 : named;
          if (c === 38) st.fg = value; else st.bg = value;
          i += 2;
        } else if ((c === 38 || c === 48) && codes[i + 1] === 2) {
          const [r, g, b] = [codes[i + 2], codes[i + 3], codes[i + 4]].map((x) => Math.min(255, x || 0));
          if (c === 38) st.fg = `rgb(${r},${g},${b})`; else st.bg = `rgb(${r},${g},${b})`;
          i += 4;
        }
      }
    }
    push(raw.slice(last));
    return { text, runs };
  }

  const JSON_LEVEL = ['level', 'lvl', 'severity', 'levelname', 'log.level'];
  const JSON_TIME = ['time', 'ts', 'timestamp', '@timestamp', 'asctime', 'date'];
  const JSON_MSG = ['msg', 'message', 'event', 'text'];
  const pick = (obj, keys) => {
    for (const k of keys) if (obj[k] !== undefined && obj[k] !== null && typeof obj[k] !== 'object') return String(obj[k]);
    return null;
  };

  // A JSON object line: {obj, summary, level}; anything else: null.
  function jsonLine(text) {
    if (text.charCodeAt(0) !== 123 || text.charCodeAt(text.length - 1) !== 125) return null;
    let obj;
    try {
      obj = JSON.parse(text);
    } catch (err) {
      return null;
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return null;
    const time = pick(obj, JSON_TIME);
    const level = pick(obj, JSON_LEVEL);
    const msg = pick(obj, JSON_MSG);
    const parts = [time, level ? level.toUpperCase() : null, msg].filter((x) => x !== null);
    const others = Object.keys(obj).length - parts.length;
    if (!parts.length) return null;
    return { obj, summary: parts.join(' ') + (others > 0 ? ` {${plural(others, 'field')}}` : ''),
      level: level ? levelOf(level.toUpperCase()) : null };
  }

  // Put `text` into `el` as text nodes: ANSI runs become spans with classes
  // (never markup), `ranges` ([from, to] of filter matches) become <mark>s.
  function render(el, text, runs, ranges) {
    if (!runs && !ranges.length) {
      el.textContent = text;
      return;
    }
    const cuts = new Set([0, text.length]);
    for (const r of runs || []) { cuts.add(r.from); cuts.add(r.to); }
    for (const [a, b] of ranges) { cuts.add(a); cuts.add(b); }
    const points = [...cuts].sort((a, b) => a - b);
    const nodes = [];
    let ri = 0;
    let mi = 0;
    let markEl = null;
    let markOf = -1; // the match markEl holds
    for (let i = 0; i + 1 < points.length; i += 1) {
      const a = points[i];
      const b = points[i + 1];
      if (a >= b) continue;
      let node = document.createTextNode(text.slice(a, b));
      while (runs && ri < runs.length && runs[ri].to <= a) ri += 1;
      const run = runs && ri < runs.length && runs[ri].from <= a ? runs[ri] : null;
      if (run && (run.cls.length || run.fg || run.bg)) {
        const span = document.createElement('span');
        if (run.cls.length) span.className = run.cls.join(' ');
        if (run.fg) span.style.color = run.fg; // CSSOM: no style attribute parsed
        if (run.bg) span.style.backgroundColor = run.bg;
        span.appendChild(node);
        node = span;
      }
      while (mi < ranges.length && ranges[mi][1] <= a) mi += 1;
      const inMark = mi < ranges.length && ranges[mi][0] <= a;
      if (inMark) {
        // One <mark> per match, whatever styles it crosses.
        if (!markEl || markOf !== mi) {
          markEl = document.createElement('mark');
          markOf = mi;
          nodes.push(markEl);
        }
        markEl.appendChild(node);
      } else {
        markEl = null;
        nodes.push(node);
      }
    }
    el.replaceChildren(...nodes);
  }

  function matchRanges(text) {
    filter.lastIndex = 0;
    const ranges = [];
    let found = false;
    for (const m of text.matchAll(filter)) {
      found = true;
      if (m[0].length === 0) continue; // "^" or "x*": matches, nothing to mark
      ranges.push([m.index, m.index + m[0].length]);
    }
    return found ? ranges : null;
  }

  // Paint an entry's text with the filter's marks; whether it matches. Under
  // a regex filter, a line the Worker has not answered for yet is painted
  // without marks, counts as not matching, and is asked about (matched()
  // paints it again with the answer).
  function paint(entry) {
    let ranges = [];
    let found = true;
    if (filter && filterByWorker) {
      if (entry.matchGen === filterGen) {
        ranges = entry.ranges;
        found = entry.found;
      } else {
        found = false;
        if (entry.askedGen !== filterGen) {
          entry.askedGen = filterGen;
          requestMatch({ entry });
        }
      }
    } else if (filter) {
      const r = matchRanges(entry.text);
      found = r !== null;
      ranges = r || [];
      if (!found && entry.raw !== entry.text) {
        filter.lastIndex = 0;
        found = filter.test(entry.raw); // a JSON line: its fields count too
      }
    }
    render(entry.textEl, entry.text, entry.runs, ranges);
    return found;
  }

  // ---- lines in the page -----------------------------------------------------

  // Each entry: {el, textEl, text, raw, runs, start, end, file, cut, head} for
  // a line (start/end: byte offsets of its first byte and of its "\n"), or
  // {el, text: null} for a notice.
  let entries = [];
  let lineCount = 0; // lines in the page
  let shown = 0; // lines in the page that match the filter
  // Lines ({raw, start, ...}) and notices ({notice}) not in the page yet:
  // they go in once per frame (a burst of 100 000 lines makes at most
  // maxLines elements, not 100 000), or on resume when paused. The oldest are
  // dropped past maxLines, as the page would have dropped them.
  let queue = [];
  let pendingCount = 0; // every line that arrived while paused
  // The page holds older lines than the live stream joins (scrolled back past
  // maxLines): its newest lines were dropped, live ones wait in the queue.
  let detached = false;

  // A line that continues the one before it takes its level and stays with
  // it under a filter: an indented line, a traceback's header, and the
  // "Name: message" line that ends an indented block.
  const CONTINUATION = /^(?:\s|Traceback |Caused by|[\w.$]+(?:Error|Exception)\b)/;
  const BLOCK_END = /^[A-Za-z_][\w.$]*(?::|$)/;
  const newContext = () => ({ level: null, indented: false, head: null });
  let liveContext = newContext();
  const tagContexts = new Map(); // a merged view: one per file, a trace stays with its file
  function tagContext(tag) {
    if (!tagContexts.has(tag)) tagContexts.set(tag, newContext());
    return tagContexts.get(tag);
  }

  function makeEntry(item, ctx) {
    const el = document.createElement('div');
    el.className = 'line';
    const textEl = document.createElement('span');
    textEl.className = 't';
    el.appendChild(textEl);
    const { text: plain, runs } = parseAnsi(item.raw);
    const json = item.cut ? null : jsonLine(plain);
    const entry = { el, textEl, text: json ? json.summary : plain, raw: plain, runs: json ? null : runs,
      start: item.start, end: item.end, file: item.file, cut: item.cut, head: null, json };
    const continues = CONTINUATION.test(plain) || (ctx.indented && BLOCK_END.test(plain));
    const level = (json && json.level) || levelOf(plain) || (continues ? ctx.level : null);
    if (continues && ctx.head) {
      entry.head = ctx.head;
      el.classList.add('cont');
    } else {
      ctx.head = entry;
    }
    ctx.level = level;
    ctx.indented = /^\s/.test(plain);
    if (level) el.classList.add('lvl-' + level);
    if (item.fragment) el.classList.add('fragment');
    if (item.tag) {
      el.dataset.tag = item.tag; // shown by CSS (::before): not part of the line's text
      el.classList.add('tagged', `tag-${item.tagIndex % 6}`);
    }
    if (json) {
      el.classList.add('json');
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'expand';
      btn.setAttribute('aria-label', 'all fields');
      btn.setAttribute('aria-expanded', 'false');
      btn.addEventListener('click', () => toggleFields(entry, btn));
      el.appendChild(btn);
    }
    if (item.cut && item.start !== null && item.end !== null) {
      entry.shownBytes = new TextEncoder().encode(item.raw).length;
      const btn = document.createElement('button');
      btn.type = 'button';
      btn.className = 'more';
      btn.addEventListener('click', () => moreOfLine(entry, btn));
      el.appendChild(btn);
      labelMore(entry, btn);
    } else if (item.cut) {
      el.classList.add('cut');
    }
    entry.visible = paint(entry) || (entry.head !== null && entry.head.visible);
    el.hidden = !entry.visible;
    return entry;
  }

  function toggleFields(entry, btn) {
    const open = btn.getAttribute('aria-expanded') === 'true';
    btn.setAttribute('aria-expanded', open ? 'false' : 'true');
    if (open) {
      entry.fields.remove();
      entry.fields = null;
      return;
    }
    const pre = document.createElement('pre');
    pre.className = 'fields';
    pre.textContent = JSON.stringify(entry.json.obj, null, 2);
    entry.fields = pre;
    entry.el.appendChild(pre);
  }

  function labelMore(entry, btn) {
    const left = entry.end - entry.start - entry.shownBytes;
    btn.dataset.left = String(left);
    btn.setAttribute('aria-label', `show ${Math.min(left, MORE_BYTES)} more of ${left} bytes`);
    btn.title = btn.getAttribute('aria-label');
    btn.hidden = left <= 0;
  }

  // The rest of a long line, a block at a time, by a Range request.
  async function moreOfLine(entry, btn) {
    const from = entry.start + entry.shownBytes;
    const to = Math.min(entry.end, from + MORE_BYTES) - 1;
    if (to < from) return;
    btn.disabled = true;
    try {
      const res = await fetch(endpoint('download'), { headers: { Range: `bytes=${from}-${to}` }, cache: 'no-store' });
      if (res.status !== 206) throw new Error(`HTTP ${res.status}`);
      const bytes = new Uint8Array(await res.arrayBuffer());
      entry.moreDecoder = entry.moreDecoder || new TextDecoder('utf-8');
      const more = parseAnsi(entry.moreDecoder.decode(bytes, { stream: true })).text;
      entry.shownBytes += bytes.length;
      entry.text += more;
      entry.raw = entry.text;
      entry.runs = null;
      entry.matchGen = entry.askedGen = -1; // new text: the Worker's answer is asked again
      paint(entry);
      labelMore(entry, btn);
    } catch (err) {
      btn.title = `could not load more: ${err.message || err}`;
    } finally {
      btn.disabled = false;
    }
  }

  function append(items) {
    if (!items.length) return;
    if (items.length > maxLines) items = items.slice(items.length - maxLines);
    const frag = document.createDocumentFragment();
    for (const item of items) {
      const entry = makeEntry(item, item.tag ? tagContext(item.tag) : liveContext);
      if (entry.visible) shown += 1;
      entries.push(entry);
      lineCount += 1;
      frag.appendChild(entry.el);
    }
    logEl.insertBefore(frag, partialEl);
    trim();
  }

  function forget(e) {
    e.el.remove();
    if (e.text !== null) {
      lineCount -= 1;
      if (e.visible) shown -= 1;
    }
  }

  // Drop the oldest entries (notices among them) until maxLines lines are
  // left, and at most 100 notices besides (a file truncated again and again).
  function trim() {
    let drop = 0;
    while ((lineCount > maxLines || entries.length - drop > maxLines + 100)
           && drop < entries.length) {
      forget(entries[drop]);
      drop += 1;
    }
    if (drop) entries = entries.slice(drop);
    publishTop();
  }

  // Drop the newest lines past maxLines (the page scrolled back): the live
  // end is no longer joined to what the page holds.
  function trimBottom() {
    let keep = entries.length;
    while (lineCount > maxLines && keep > 0) {
      keep -= 1;
      forget(entries[keep]);
    }
    if (keep === entries.length) return;
    entries = entries.slice(0, keep);
    detached = true;
    body.dataset.detached = '1';
    partialEl.hidden = true;
    paused = null;
    pause('history'); // only a move down to the end (or Follow) goes back
  }

  function enqueue(items, lines) {
    if (embedded) {
      // A frame of a merged view: its lines go to the page that shows them.
      window.parent.postMessage({ pine: 'lines', name: cfg.name, items: items.map((it) => (
        it.notice !== undefined ? { notice: it.notice } : { raw: it.raw, cut: it.cut })) }, location.origin);
      return;
    }
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

  function paintPartial() {
    if (!tail || detached) {
      partialEl.hidden = true;
      return;
    }
    const { text, runs } = parseAnsi(tail);
    let ranges = [];
    if (filter && filterByWorker) {
      const known = partialMatch && partialMatch.gen === filterGen && partialMatch.text === text;
      ranges = known ? partialMatch.ranges : null; // hidden until the Worker answers
      if (!known && (!partialAsked || partialAsked.gen !== filterGen || partialAsked.text !== text)) {
        partialAsked = { gen: filterGen, text };
        requestMatch({ partial: text });
      }
    } else if (filter) {
      ranges = matchRanges(text);
    }
    render(partialEl, text, runs, ranges || []);
    partialEl.classList.toggle('cut', tailCut);
    partialEl.hidden = ranges === null;
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
      if (item.notice === undefined) {
        run.push(item);
      } else {
        append(run);
        run = [];
        addNotice(item.notice);
      }
    }
    append(run);
    paintPartial();
    updateCount();
    scrollToEnd();
    flushCost = performance.now() - started;
  }

  function notice(message) {
    enqueue([{ notice: message }], 0); // in order with the lines around it
  }

  function noticeElement(message) {
    const el = document.createElement('div');
    el.className = 'notice';
    el.setAttribute('role', 'status');
    el.textContent = message;
    return el;
  }

  function addNotice(message) {
    const el = noticeElement(message);
    entries.push({ el, text: null });
    logEl.insertBefore(el, partialEl);
    liveContext = newContext(); // a new file: nothing to continue
    trim();
  }

  // Check a regular expression in a Worker, on the page's lines and on
  // probes that make a backtracking pattern explode, within CHECK_MS: a
  // pattern that does not pass is refused at once, before any line is hidden.
  function probes(source) {
    const chars = new Set(['a', ' ', '0']);
    for (const ch of source) if (/[\w .:-]/.test(ch) && chars.size < 12) chars.add(ch);
    const out = [];
    for (const ch of chars) out.push(ch.repeat(30) + '\u2603', (ch + ' ').repeat(15) + '!');
    return out;
  }

  function checkPattern(re, samples) {
    return new Promise((resolve) => {
      let worker;
      try {
        worker = new Worker(new URL('viewer-check.js', SCRIPT_URL));
      } catch (err) {
        resolve('unchecked');
        return;
      }
      const timer = setTimeout(() => { worker.terminate(); resolve('slow'); }, CHECK_MS);
      worker.onmessage = () => { clearTimeout(timer); worker.terminate(); resolve('ok'); };
      worker.onerror = () => { clearTimeout(timer); worker.terminate(); resolve('unchecked'); };
      worker.postMessage({ source: re.source, flags: re.flags, samples });
    });
  }

  let checkSeq = 0;
  function refilter() {
    const compiled = compileFilter();
    const seq = ++checkSeq;
    filterGen += 1;
    filterByWorker = false;
    resetMatcher();
    if (compiled && regexEl.checked) {
      filter = null; // everything shown while the pattern is on trial
      body.dataset.filter = 'checking';
      applyFilter();
      const samples = [];
      for (let i = entries.length - 1; i >= 0 && samples.length < 500; i -= 1) {
        if (entries[i].text !== null) samples.push(entries[i].text);
      }
      if (tail) samples.push(tail);
      checkPattern(compiled, samples.concat(probes(compiled.source))).then((verdict) => {
        if (seq !== checkSeq) return; // the pattern changed meanwhile
        if (verdict === 'slow') {
          filterEl.classList.add('invalid');
          filterEl.title = 'This pattern takes too long (it backtracks without end): not applied.';
          body.dataset.filter = 'refused';
          return;
        }
        filter = compiled;
        filterByWorker = true;
        filterGen += 1;
        body.dataset.filter = 'on';
        applyFilter();
      });
      return;
    }
    filter = compiled;
    body.dataset.filter = compiled ? 'on' : 'off';
    applyFilter();
  }

  // ---- the regex filter's Worker ---------------------------------------------

  // Lines (and the partial line) wait in `matchWaiting` until the end of the
  // task that made them, then go to the Worker in batches; `matcher.sent`
  // holds the batches sent, answered in order. The oldest unanswered batch
  // has MATCH_MS from when the Worker could start it: past that, the pattern
  // explodes on one of its lines, and the filter is turned off.
  let matcher = null; // {worker, sent: [{id, items}], timer}
  let matchWaiting = [];
  let matchSendScheduled = false;
  let matchSeq = 0;
  let partialMatch = null; // {gen, text, ranges}: the Worker's answer for the partial line
  let partialAsked = null; // {gen, text}: the partial line last asked about

  function requestMatch(item) {
    matchWaiting.push(item);
    if (matchSendScheduled) return;
    matchSendScheduled = true;
    Promise.resolve().then(sendMatches);
  }

  function sendMatches() {
    matchSendScheduled = false;
    // A line dropped from the page meanwhile is not asked about: what waits
    // stays as bounded as the page.
    const items = matchWaiting.filter((it) => it.entry === undefined || it.entry.el.parentNode === logEl);
    matchWaiting = [];
    if (!items.length || !filter || !filterByWorker) return;
    if (!matcher) {
      let worker;
      try {
        worker = new Worker(new URL('viewer-match.js', SCRIPT_URL));
      } catch (err) {
        turnFilterOff('Regular expressions need Web Workers, which this page cannot start: not applied.');
        return;
      }
      matcher = { worker, sent: [], timer: null };
      // A Worker already replaced (terminated) is not listened to any more.
      worker.onmessage = (ev) => { if (matcher && matcher.worker === worker) answered(ev.data); };
      worker.onerror = () => {
        if (matcher && matcher.worker === worker) turnFilterOff('The pattern could not be run: not applied.');
      };
    }
    for (let i = 0; i < items.length; i += MATCH_BATCH) {
      const batch = items.slice(i, i + MATCH_BATCH);
      const id = ++matchSeq;
      matcher.sent.push({ id, items: batch });
      if (matcher.sent.length === 1) armMatchTimer();
      matcher.worker.postMessage({ id, source: filter.source, flags: filter.flags, lines: batch.map((it) => (
        it.entry === undefined ? [it.partial, null]
          : [it.entry.text, it.entry.raw !== it.entry.text ? it.entry.raw : null])) });
    }
  }

  function armMatchTimer() {
    clearTimeout(matcher.timer);
    matcher.timer = setTimeout(() => turnFilterOff(
      'This pattern takes too long on a line (it backtracks without end): turned off.'), MATCH_MS);
  }

  function answered({ id, results }) {
    const batch = matcher.sent.shift();
    if (!batch || batch.id !== id) return; // cannot happen: one Worker answers in order
    clearTimeout(matcher.timer);
    if (matcher.sent.length) armMatchTimer();
    let partialChanged = false;
    batch.items.forEach((it, i) => {
      if (it.entry === undefined) {
        partialMatch = { gen: filterGen, text: it.partial, ranges: results[i] };
        partialChanged = true;
      } else {
        matched(it.entry, results[i]);
      }
    });
    if (partialChanged && !paused) paintPartial();
    updateCount();
    if (!paused) scrollToEnd();
  }

  // Paint a line with the Worker's answer; it shows if it matches, or if the
  // line it continues shows (answered before it: answers come in order).
  function matched(entry, ranges) {
    if (entry.el.parentNode !== logEl) return; // dropped from the page meanwhile
    entry.matchGen = filterGen;
    entry.found = ranges !== null;
    entry.ranges = ranges || [];
    render(entry.textEl, entry.text, entry.runs, entry.ranges);
    const visible = entry.found || (entry.head !== null && entry.head.visible === true);
    if (visible === entry.visible) return;
    entry.visible = visible;
    entry.el.hidden = !visible;
    shown += visible ? 1 : -1;
  }

  function resetMatcher() {
    if (matcher) {
      clearTimeout(matcher.timer);
      if (matcher.sent.length) {
        // Busy with the previous pattern (which may never end): a new Worker.
        matcher.worker.terminate();
        matcher = null;
      }
    }
    matchWaiting = [];
    partialMatch = null;
    partialAsked = null;
  }

  // The Worker could not answer in time (or at all): it is terminated, the
  // filter box says why, and every line shows unfiltered.
  function turnFilterOff(why) {
    if (matcher) {
      clearTimeout(matcher.timer);
      matcher.worker.terminate();
      matcher = null;
    }
    filterGen += 1;
    filter = null;
    filterByWorker = false;
    resetMatcher();
    filterEl.classList.add('invalid');
    filterEl.title = why;
    body.dataset.filter = 'refused';
    applyFilter();
  }

  function applyFilter() {
    shown = 0;
    for (const e of entries) {
      if (e.text === null) continue;
      e.visible = paint(e) || (e.head !== null && e.head.visible === true);
      e.el.hidden = !e.visible;
      if (e.visible) shown += 1;
    }
    if (!paused) paintPartial();
    updateCount();
    if (!paused) scrollToEnd();
  }

  function updateCount() {
    countEl.textContent = filter ? `${shown} of ${plural(lineCount, 'line')}` : plural(lineCount, 'line');
    body.dataset.lines = String(lineCount);
  }

  function publishTop() {
    const top = entries.find((e) => e.text !== null);
    body.dataset.top = top && top.start !== null ? String(top.start) : '';
  }

  // ---- scroll back -------------------------------------------------------------

  let loadingBefore = false;
  // Bumped whenever the page's lines are replaced (a match opened, back to the
  // end): a block asked for before that belongs to the page that was, and must
  // not land on top of the new one.
  let pageGen = 0;

  // Where the page's oldest line starts, and in which file: the lines before
  // it are what scrolling back asks for. A notice on top (a rotation) ends it.
  function anchor() {
    if (!entries.length) {
      // Emptied for a match being opened (emptying it scrolls to the top): the
      // lines before the live tail are not that page's, and would land on top.
      if (detached) return null;
      const at = tailStart !== null ? tailStart : offset;
      return at === null ? null : { start: at, file: fileId, entry: null };
    }
    const top = entries[0];
    if (top.text === null || top.start === null || top.fragment) return null;
    return { start: top.start, file: top.file, entry: top };
  }

  // Lines (items) from a block of whole lines read at byte `start`; the k-th
  // "\n" of the text is the k-th 0x0A byte (UTF-8 never hides one inside a
  // character, and U+FFFD replaces only invalid bytes).
  function blockItems(bytes, start, fragment, file) {
    const text = new TextDecoder('utf-8').decode(bytes);
    const items = [];
    let from = 0;
    let at = start;
    let p = -1;
    while (from <= text.length) {
      const nl = text.indexOf('\n', from);
      const piece = nl === -1 ? text.slice(from) : text.slice(from, nl);
      p = nl === -1 ? -1 : bytes.indexOf(10, p + 1);
      if (nl === -1 && !piece) break;
      const end = nl === -1 ? start + bytes.length : start + p;
      const cut = piece.length > LINE_MAX;
      let raw = cut ? piece.slice(0, LINE_MAX) : piece;
      if (!cut && raw.charCodeAt(raw.length - 1) === 13) raw = raw.slice(0, -1);
      items.push({ raw, start: at, end, file, cut, fragment: fragment && !items.length });
      if (nl === -1) break;
      at = end + 1;
      from = nl + 1;
    }
    return items;
  }

  // Bytes to ask for: about a quarter of maxLines at the page's mean line
  // length, so one block never pushes out the lines in view.
  function blockBytes() {
    let bytes = 0;
    let n = 0;
    for (let i = 0; i < entries.length && n < 200; i += 1) {
      const e = entries[i];
      if (e.text !== null && e.start !== null && e.end !== null) { bytes += e.end - e.start + 1; n += 1; }
    }
    const mean = n ? bytes / n : 120;
    return Math.round(Math.min(1048576, Math.max(4096, mean * Math.max(50, maxLines / 4))));
  }

  async function fetchBlock(kind, at, file, bytes) {
    const res = await fetch(endpoint(kind, { offset: at, file, bytes }), { cache: 'no-store' });
    if (res.status === 409) return { gone: true };
    if (!res.ok) throw new Error(`HTTP ${res.status}: ${(await res.text()).trim()}`);
    const start = Number(res.headers.get('X-Pine-Start'));
    const cut = res.headers.get('X-Pine-Cut') === '1';
    const data = new Uint8Array(await res.arrayBuffer());
    return { items: blockItems(data, start, kind === 'before' && cut, res.headers.get('X-Pine-File')), start };
  }

  // Load the lines before the page's oldest and put them on top. `keep`:
  // 'top' when the user scrolls back (the newest lines go past maxLines),
  // 'bottom' when the end is being refilled (the oldest go).
  async function loadBefore(keep) {
    if (loadingBefore) return;
    const at = anchor();
    if (!at || at.start === 0) return;
    loadingBefore = true;
    body.dataset.loading = 'before';
    const gen = pageGen;
    try {
      const got = await fetchBlock('before', at.start, at.file, blockBytes());
      // The page changed meanwhile: replaced, or other lines put on top.
      if (gen !== pageGen || (at.entry ? entries[0] !== at.entry : entries.length)) return;
      if (got.gone) {
        prependElements([noticeElement('Earlier lines were in a file that is no longer at this path (rotated).')],
          [{ el: null, text: null }]);
        return;
      }
      const ctx = newContext();
      const made = got.items.map((item) => makeEntry(item, ctx));
      for (const e of made) e.el.hidden = !e.visible;
      prependElements(made.map((e) => e.el), made);
      lineCount += made.length;
      shown += made.filter((e) => e.visible).length;
      if (keep === 'top') trimBottom(); else trim();
      publishTop();
      updateCount();
      if (keep !== 'top' && !paused) scrollToEnd();
    } catch (err) {
      setState(body.dataset.state, stateEl.textContent, `could not load earlier lines: ${err.message || err}`);
    } finally {
      loadingBefore = false;
      delete body.dataset.loading;
    }
  }

  function prependElements(els, made) {
    const height = logEl.scrollHeight;
    const frag = document.createDocumentFragment();
    for (const el of els) frag.appendChild(el);
    logEl.insertBefore(frag, logEl.firstChild);
    made.forEach((e, i) => { if (!e.el) e.el = els[i]; });
    entries = made.concat(entries);
    logEl.scrollTop += logEl.scrollHeight - height; // what was in view stays in view
    lastTop = logEl.scrollTop;
  }

  // Back to the live end from a page that holds older lines: the queue (the
  // newest lines) then the lines before them, read from the server.
  function reattach() {
    pageGen += 1;
    detached = false;
    delete body.dataset.detached;
    for (const e of entries) e.el.remove();
    entries = [];
    lineCount = 0;
    shown = 0;
    liveContext = newContext();
    flush();
    loadBefore('bottom');
  }

  // ---- opening a search match in its context ------------------------------------------

  async function openAt(at, file) {
    pause('history');
    detached = true;
    body.dataset.detached = '1';
    partialEl.hidden = true;
    for (const e of entries) e.el.remove();
    entries = [];
    lineCount = 0;
    shown = 0;
    pageGen += 1;
    const gen = pageGen;
    try {
      const [before, after] = await Promise.all([
        fetchBlock('before', at, file, 16384), fetchBlock('after', at, file, 32768)]);
      if (gen !== pageGen) return; // another match was opened meanwhile: the page is its
      if (before.gone || after.gone) {
        const el = noticeElement('That match was in a file that is no longer at this path (rotated).');
        entries.push({ el, text: null });
        logEl.insertBefore(el, partialEl);
        return;
      }
      const ctx = newContext();
      const made = before.items.concat(after.items).map((item) => makeEntry(item, ctx));
      const frag = document.createDocumentFragment();
      for (const e of made) {
        frag.appendChild(e.el);
        if (e.visible) shown += 1;
      }
      logEl.insertBefore(frag, partialEl);
      entries = made;
      lineCount = made.length;
      publishTop();
      updateCount();
      const target = made.find((e) => e.start === at);
      if (target) {
        target.el.classList.add('target');
        target.el.hidden = false;
        target.el.scrollIntoView({ block: 'center' });
        lastTop = logEl.scrollTop;
      }
    } catch (err) {
      setState(body.dataset.state, stateEl.textContent, `could not open the match: ${err.message || err}`);
    }
  }

  // ---- follow and pause ------------------------------------------------------

  let paused = null; // null (following), 'scroll', 'button' or 'history'

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
    if (detached) reattach();
    else flush();
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
    const down = top > lastTop;
    lastTop = top;
    if (atEnd()) {
      // Older lines in the page: only a real move down to the end goes back
      // (the page emptied for a match also scrolls, and is "at the end").
      if (paused === 'scroll' || (paused === 'history' && down && !loadingBefore)) resume();
    } else if (!paused && up) {
      pause('scroll');
    }
    if (up && top < logEl.clientHeight) loadBefore('top');
  });
  // A page too short to scroll: a wheel upwards at the top asks for more.
  logEl.addEventListener('wheel', (ev) => {
    if (ev.deltaY < 0 && logEl.scrollTop === 0) {
      if (!paused) pause('scroll');
      loadBefore('top');
    }
  }, { passive: true });
  // Following means the end stays in view whatever changes the log's size.
  new ResizeObserver(() => {
    if (!paused) scrollToEnd();
  }).observe(logEl);
  pauseEl.addEventListener('click', () => (paused ? resume() : pause('button')));
  jumpEl.addEventListener('click', () => resume());

  // ---- text from bytes -------------------------------------------------------

  let decoder = new TextDecoder('utf-8'); // invalid bytes become U+FFFD
  // The text after the last "\n": a line not finished yet, kept to LINE_MAX
  // characters (the rest is counted, not held: it is fetched on demand).
  let tail = '';
  let tailCut = false;
  let tailStart = null; // byte offset where it starts (null: a plain socket)

  function addTail(piece) {
    if (!piece) return;
    const room = LINE_MAX - tail.length;
    if (piece.length > room) {
      if (room > 0) tail += piece.slice(0, room);
      tailCut = true;
    } else {
      tail += piece;
    }
  }

  function finishLine(end) {
    let raw = tail;
    if (!tailCut && raw.charCodeAt(raw.length - 1) === 13) raw = raw.slice(0, -1); // "\r\n"
    const item = { raw, start: tailStart, end, file: fileId, cut: tailCut };
    tail = '';
    tailCut = false;
    tailStart = end === null ? null : end + 1;
    return item;
  }

  // Text decoded from bytes; `nls`: the byte offsets of its "\n"s (null on
  // a plain socket). Only the new text is scanned: a long unfinished line
  // costs nothing per message.
  function feed(text, nls) {
    if (!text) return;
    const out = [];
    let start = 0;
    let k = 0;
    let nl;
    while ((nl = text.indexOf('\n', start)) !== -1) {
      addTail(text.slice(start, nl));
      out.push(finishLine(nls ? nls[k] : null));
      k += 1;
      start = nl + 1;
    }
    addTail(start ? text.slice(start) : text);
    enqueue(out, out.length); // the partial line too is shown at the flush
  }

  function feedBytes(buffer) {
    const bytes = new Uint8Array(buffer);
    const nls = [];
    if (offset !== null) {
      let p = -1;
      while ((p = bytes.indexOf(10, p + 1)) !== -1) nls.push(offset + p);
    }
    if (tailStart === null && offset !== null && !tail) tailStart = offset;
    feed(decoder.decode(bytes, { stream: true }), offset !== null ? nls : null);
  }

  // The file ended without a newline and another begins: the tail is a whole line.
  function endOfFile() {
    const rest = decoder.decode();
    decoder = new TextDecoder('utf-8');
    addTail(rest);
    if (tail || tailCut) enqueue([finishLine(offset)], 1);
    tail = '';
    tailCut = false;
    tailStart = null;
  }

  // A file whose first bytes hold a NUL is binary: said, not shown as noise.
  let checkedBinary = false;
  function looksBinary(buffer) {
    const head = new Uint8Array(buffer, 0, Math.min(buffer.byteLength, 8192));
    return head.indexOf(0) !== -1;
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
        else feed(ev.data, null); // a server without the subprotocol: plain text, no resume
      } else {
        const n = ev.data.byteLength;
        if (!checkedBinary && n) {
          checkedBinary = true;
          if (looksBinary(ev.data)) {
            ws = null;
            sock.close(1000, 'binary');
            showBinary();
            return;
          }
        }
        if (unexplained) {
          unexplained = false;
          notice(`Reconnected: the file changed while away; showing it from byte ${offset}.`);
        }
        feedBytes(ev.data);
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

  function showBinary() {
    const el = noticeElement('This file is binary: it is not shown as text. ');
    el.classList.add('binary');
    const a = document.createElement('a');
    a.href = endpoint('download');
    a.textContent = 'Download it';
    el.appendChild(a);
    entries.push({ el, text: null });
    logEl.insertBefore(el, partialEl);
    setState('binary', 'binary file');
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

  // ---- search the whole file on the server ---------------------------------------

  const searchEl = $('search');
  const searchReEl = $('search-re');
  const searchCaseEl = $('search-case');
  const searchGoEl = $('search-go');
  const resultsEl = $('results');
  const matchesEl = $('matches');
  const searchStateEl = $('search-state');
  let searchCtl = null;

  function searchState(state, text) {
    body.dataset.search = state;
    searchStateEl.textContent = text;
  }

  function cancelSearch() {
    if (searchCtl) searchCtl.abort();
  }

  function matchItem(rec, file) {
    const li = document.createElement('li');
    const btn = document.createElement('button');
    btn.type = 'button';
    btn.className = 'match';
    btn.title = `byte ${rec.offset}`;
    const text = document.createElement('span');
    text.className = 'mtext';
    text.textContent = parseAnsi(rec.text).text + (rec.cut ? '\u2026' : '');
    btn.append(text);
    btn.dataset.offset = String(rec.offset);
    btn.addEventListener('click', () => {
      for (const other of matchesEl.querySelectorAll('.current')) other.classList.remove('current');
      btn.classList.add('current');
      openAt(rec.offset, file);
    });
    li.appendChild(btn);
    return li;
  }

  // Matches arrive as newline-delimited JSON while the server reads the
  // file; Cancel (or a new search) aborts the request, and the server stops.
  async function runSearch() {
    cancelSearch();
    const q = searchEl.value;
    if (!q) return;
    const ctl = new AbortController();
    searchCtl = ctl;
    matchesEl.replaceChildren();
    resultsEl.hidden = false;
    searchGoEl.textContent = 'Cancel';
    let found = 0;
    let file = null;
    let scanned = 0;
    let size = 0;
    searchState('running', 'searching\u2026');
    const progress = () => (size ? ` \u00b7 ${Math.floor((100 * scanned) / size)}%` : '');
    try {
      const res = await fetch(endpoint('search', { q, re: searchReEl.checked ? 1 : '', case: searchCaseEl.checked ? 1 : '' }),
        { signal: ctl.signal, cache: 'no-store' });
      if (!res.ok) {
        searchState('error', (await res.text()).trim());
        return;
      }
      const reader = res.body.getReader();
      const dec = new TextDecoder('utf-8');
      let buf = '';
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let from = 0;
        let nl;
        const frag = document.createDocumentFragment();
        while ((nl = buf.indexOf('\n', from)) !== -1) {
          const rec = JSON.parse(buf.slice(from, nl));
          from = nl + 1;
          if (rec.file !== undefined) file = rec.file;
          else if (rec.offset !== undefined) { found += 1; frag.appendChild(matchItem(rec, file)); }
          else if (rec.progress !== undefined) { scanned = rec.progress; size = rec.size; }
          else if (rec.error !== undefined) { searchState('error', `${rec.error} \u00b7 ${plural(found, 'match', 'matches')}`); return; }
          else if (rec.done) {
            const more = rec.limited ? ` (the first ${found}: narrow the search for the rest)` : '';
            searchState('done', `${plural(found, 'match', 'matches')} in ${(rec.scanned / 1048576).toFixed(1)} MB${more}`);
          }
        }
        buf = buf.slice(from);
        matchesEl.appendChild(frag);
        body.dataset.matches = String(found);
        if (body.dataset.search === 'running') searchStateEl.textContent = `${plural(found, 'match', 'matches')}${progress()}`;
      }
    } catch (err) {
      if (err.name === 'AbortError') searchState('cancelled', `cancelled \u00b7 ${plural(found, 'match', 'matches')}`);
      else searchState('error', `search failed: ${err.message || err}`);
    } finally {
      body.dataset.matches = String(found);
      if (searchCtl === ctl) {
        searchCtl = null;
        searchGoEl.textContent = 'Search';
      }
    }
  }

  searchGoEl.addEventListener('click', () => (searchCtl ? cancelSearch() : runSearch()));
  searchEl.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter') runSearch();
    if (ev.key === 'Escape') cancelSearch();
  });
  $('search-close').addEventListener('click', () => {
    cancelSearch();
    resultsEl.hidden = true;
  });
  $('download').href = endpoint('download');
  $('start').addEventListener('click', () => openAt(0, fileId));

  // ---- several files merged -------------------------------------------------------

  function startMerged() {
    // One log of several files: no offsets to search, download or start from.
    for (const el of [$('search').closest('.searchbox'), $('start'), $('download')]) el.hidden = true;
    filesEl.replaceChildren();
    merged.forEach((file, i) => {
      const tag = document.createElement('span');
      tag.className = `name tag tag-${i % 6}`;
      tag.textContent = file.name;
      filesEl.appendChild(tag);
    });
    const names = merged.map((f) => f.name);
    window.addEventListener('message', (ev) => {
      if (ev.origin !== location.origin || !ev.data || ev.data.pine !== 'lines') return;
      const i = names.indexOf(ev.data.name);
      if (i === -1) return;
      let count = 0;
      const items = [];
      for (const it of ev.data.items) {
        if (typeof it.notice === 'string') {
          items.push({ notice: `${names[i]}: ${it.notice}` });
        } else if (typeof it.raw === 'string') {
          items.push({ raw: it.raw, cut: !!it.cut, start: null, end: null, file: null, tag: names[i], tagIndex: i });
          count += 1;
        }
      }
      enqueue(items, count);
    });
    const hidden = document.createElement('div');
    hidden.hidden = true;
    for (const file of merged) hidden.appendChild(frame(file, true));
    document.body.appendChild(hidden);
    setState('live', 'live');
  }

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

  refilter();
  updateCount();
  updatePause();
  publish();
  if (merged.length) startMerged();
  else connect();
})();
