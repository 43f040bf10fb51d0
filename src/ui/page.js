// buntime debug UI. Plain script, no build step, nothing loaded from
// elsewhere. Everything that comes from a sandbox (ids, subjects, rules,
// output) is put in the page with textContent only, never as markup.
'use strict';

const token = new URLSearchParams(location.search).get('token') || '';
const MAX_RECORDS = 5000;
const MAX_OUTPUT = 200000;

const $ = (id) => document.getElementById(id);

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function withToken(path) {
  if (!token) return path;
  return path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token);
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h['X-Buntime-Token'] = token;
  return h;
}

async function getJSON(path) {
  const r = await fetch(withToken(path), { headers: headers() });
  if (!r.ok) throw new Error(path + ': ' + r.status);
  return r.json();
}

async function postJSON(path, body) {
  const r = await fetch(withToken(path), {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
  });
  const v = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(v.error || (path + ': ' + r.status));
  return v;
}

function bytes(n) {
  if (n === null || n === undefined) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + ' ' + units[i];
}

function duration(s) {
  if (s === null || s === undefined) return '';
  if (s < 60) return s + 's';
  if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
  return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
}

function usage(u, fmt) {
  if (!u) return '';
  return fmt(u.current) + (u.limit ? ' / ' + fmt(u.limit) : '');
}

// ---- state ----

let info = { only: null, roots: [] };
let selected = null;
let source = null;
let records = [];
let outputNext = 0;
let outputTimer = null;

function setStatus(text) { $('status').textContent = text; }

// ---- sandbox list ----

async function refreshList() {
  let rows;
  try {
    rows = await getJSON('/api/sandboxes');
    setStatus('');
  } catch (e) {
    setStatus('cannot reach the UI server: ' + e.message);
    return;
  }
  const body = $('sandboxes').tBodies[0];
  body.replaceChildren();
  for (const s of rows) {
    const tr = el('tr', null, 'sandbox');
    tr.dataset.id = s.id;
    if (s.id === selected) tr.classList.add('selected');
    const policy = s.policy.name + (s.policy.sha256 ? ' ' + s.policy.sha256.slice(0, 12) : '');
    const sup = s.supervisor.alive ? 'alive' : (s.supervisor.pid ? 'gone' : 'none');
    const cells = [
      [s.id], [s.status], [policy], [s.pid || ''], [duration(s.uptime_s)],
      [usage(s.memory, bytes)], [usage(s.pids, String)],
      [sup + (s.supervisor.pid ? ' (' + s.supervisor.pid + ')' : ''), s.supervisor.alive ? 'alive' : 'dead'],
      [s.pending ? s.pending + ' pending' : ''],
    ];
    for (const [text, cls] of cells) tr.append(el('td', text, cls));
    tr.title = s.policy.origin;
    tr.addEventListener('click', () => { location.hash = encodeURIComponent(s.id); });
    body.append(tr);
  }
  $('empty').hidden = rows.length > 0;
  if (info.only && !selected && rows.some((s) => s.id === info.only)) {
    location.hash = encodeURIComponent(info.only);
  }
}

// ---- one sandbox ----

function select(id) {
  if (id === selected) return;
  if (source) { source.close(); source = null; }
  clearInterval(outputTimer);
  selected = id;
  records = [];
  outputNext = 0;
  $('decisions').tBodies[0].replaceChildren();
  $('output').textContent = '';
  $('why').hidden = true;
  $('asks').replaceChildren();
  const kind = $('f-kind');
  while (kind.options.length > 1) kind.remove(1);
  for (const tr of document.querySelectorAll('tr.sandbox')) {
    tr.classList.toggle('selected', tr.dataset.id === id);
  }
  $('detail').hidden = !id;
  if (!id) return;
  $('d-id').textContent = id;
  loadDetail(id);
  openStream(id);
  pollOutput(id);
  outputTimer = setInterval(() => pollOutput(id), 1000);
}

async function loadDetail(id) {
  let d;
  try {
    d = await getJSON('/api/sandboxes/' + encodeURIComponent(id));
  } catch (e) {
    $('d-meta').textContent = 'not found: ' + e.message;
    return;
  }
  if (id !== selected) return;
  const s = d.sandbox;
  $('d-meta').textContent = [
    s.status, s.pid ? 'pid ' + s.pid : '', 'root ' + s.root,
    d.bundle ? 'bundle ' + d.bundle : '', 'ask timeout ' + Math.round(d.ask_timeout_ms / 1000) + 's',
  ].filter(Boolean).join(' · ');
  $('policy-origin').textContent = 'policy ' + s.policy.name + ' · ' + s.policy.origin +
    (s.policy.sha256 ? ' · sha256 ' + s.policy.sha256 : '');
  $('policy-text').textContent = d.policy_text || '(no policy recorded)';
  $('policy-json').textContent = d.policy ? JSON.stringify(d.policy, null, 2) : '';
  const l = d.learned;
  $('learned').hidden = !l;
  if (l) {
    $('learned-summary').textContent = l.error || l.summary;
    const a = $('learned-download');
    a.hidden = !l.download;
    if (l.download) a.href = withToken(l.download);
  }
}

function openStream(id) {
  const es = new EventSource(withToken('/api/sandboxes/' + encodeURIComponent(id) + '/events'));
  source = es;
  $('stream').textContent = 'live';
  es.addEventListener('decision', (e) => addRecord(JSON.parse(e.data)));
  es.addEventListener('asks', (e) => { renderAsks(id, JSON.parse(e.data)); refreshList(); });
  es.addEventListener('end', () => {
    es.close();
    $('stream').textContent = 'ended: the supervisor is gone';
  });
  es.onerror = () => {
    if (es.readyState !== EventSource.CLOSED) $('stream').textContent = 'reconnecting…';
  };
  es.onopen = () => { $('stream').textContent = 'live'; };
}

function wanted(r) {
  const k = $('f-kind').value;
  const d = $('f-decision').value;
  return (!k || r.kind === k) && (!d || r.decision === d);
}

function recordRow(r) {
  const tr = el('tr', null, 'decision ' + r.decision);
  tr.append(el('td', (r.time || '').slice(11, 23)));
  tr.append(el('td', r.kind));
  tr.append(el('td', r.subject, 'subject'));
  const d = el('td', r.decision, r.decision);
  if (r.why) {
    const b = el('button', 'why?', 'why-btn');
    b.type = 'button';
    b.addEventListener('click', () => showWhy(r));
    d.append(' ', b);
  }
  tr.append(d);
  tr.append(el('td', r.rule, 'rule'));
  tr.append(el('td', r.latency_us + ' µs'));
  return tr;
}

function addRecord(r) {
  records.push(r);
  if (records.length > MAX_RECORDS) records.shift();
  const kind = $('f-kind');
  if (![...kind.options].some((o) => o.value === r.kind)) {
    const o = el('option', r.kind);
    o.value = r.kind;
    kind.append(o);
  }
  if (wanted(r)) {
    const body = $('decisions').tBodies[0];
    body.insertBefore(recordRow(r), body.firstChild);
    while (body.rows.length > MAX_RECORDS) body.deleteRow(-1);
  }
  renderCounts();
}

function renderRows() {
  const body = $('decisions').tBodies[0];
  body.replaceChildren();
  for (let i = records.length - 1; i >= 0; i--) {
    if (wanted(records[i])) body.append(recordRow(records[i]));
  }
  renderCounts();
}

function renderCounts() {
  const by = {};
  let total = 0;
  for (const r of records) {
    const n = r.count || 1; // a tally or a quota line stands for n events
    by[r.decision] = (by[r.decision] || 0) + n;
    total += n;
  }
  const shown = $('decisions').tBodies[0].rows.length;
  const parts = Object.keys(by).sort().map((k) => k + ' ' + by[k]);
  $('counts').textContent = total + ' decisions (' + parts.join(', ') + '), ' + shown + ' shown';
}

function renderAsks(id, d) {
  if (id !== selected) return;
  const approver = {
    connected: 'This page is the approver: the sandbox\'s questions appear here.',
    replaced: 'Another approver took over the questions.',
    closed: 'The supervisor is gone.',
    failed: 'Could not connect to the supervisor\'s approver socket.',
  }[d.approver] || 'Not the approver of this sandbox.';
  const p = $('approver');
  p.replaceChildren(el('span', approver));
  if (d.approver === 'replaced' || d.approver === 'failed') {
    const b = el('button', 'Take over');
    b.type = 'button';
    b.addEventListener('click', () => {
      postJSON('/api/sandboxes/' + encodeURIComponent(id) + '/approver', {})
        .catch((e) => setStatus(e.message));
    });
    p.append(' ', b);
  }
  const list = $('asks');
  list.replaceChildren();
  if (!d.pending.length) list.append(el('li', 'none', 'muted none'));
  for (const a of d.pending) {
    const li = el('li', null, 'ask');
    li.dataset.ask = String(a.id);
    li.append(el('b', a.kind), ' ', el('code', a.subject), ' ');
    li.append(el('span', 'pid ' + a.pid + ' · denied in ' + Math.ceil(a.expires_in_ms / 1000) + 's unless answered', 'muted'));
    for (const [label, result, cls] of [['Allow', 'allow', 'allow-btn'], ['Deny', 'deny', 'deny-btn'], ['Always allow', 'always', 'allow-btn']]) {
      const b = el('button', label, cls + ' answer-' + result);
      b.type = 'button';
      b.addEventListener('click', () => {
        for (const x of li.querySelectorAll('button')) x.disabled = true;
        postJSON('/api/asks/' + encodeURIComponent(id) + '/' + a.id, { result })
          .then(() => { li.classList.add('answered'); })
          .catch((e) => { setStatus(e.message); li.remove(); });
      });
      li.append(b);
    }
    list.append(li);
  }
  $('always').textContent = d.always.length
    ? 'Always allowed here: ' + d.always.map(([k, s]) => k + ' ' + s).join(', ')
    : '';
}

// ---- why denied ----

function showWhy(r) {
  const w = r.why;
  $('why-what').textContent = r.kind + ' ' + r.subject + ': ' + r.decision;
  $('why-rule').textContent = w.rule;
  $('why-reason').textContent = w.reason ? '(' + w.reason + ')' : '';
  $('why-explanation').textContent = w.explanation;
  $('why-fix').hidden = !w.entry;
  $('why-entry').textContent = w.entry || '';
  $('why-flag-box').hidden = !w.flag;
  $('why-flag').textContent = w.flag || '';
  $('copied').textContent = '';
  $('why').hidden = false;
  $('why').scrollIntoView({ block: 'nearest' });
}

function copy(text) {
  const done = () => { $('copied').textContent = 'copied'; };
  const fallback = () => {
    const t = el('textarea', text);
    document.body.append(t);
    t.select();
    try { document.execCommand('copy'); done(); } catch (e) { $('copied').textContent = 'select and copy by hand'; }
    t.remove();
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, fallback);
  } else {
    fallback();
  }
}

// ---- output ----

async function pollOutput(id) {
  let o;
  try {
    o = await getJSON('/api/sandboxes/' + encodeURIComponent(id) + '/output?from=' + outputNext);
  } catch (e) {
    return;
  }
  if (id !== selected) return;
  let text = '';
  if (o.skipped) text += '[… ' + o.skipped + ' bytes skipped …]\n';
  text += o.text;
  outputNext = o.next;
  if (!text) return;
  const pre = $('output');
  let all = pre.textContent + text;
  if (all.length > MAX_OUTPUT) all = all.slice(all.length - MAX_OUTPUT);
  pre.textContent = all;
}

// ---- start ----

function fromHash() {
  const id = decodeURIComponent(location.hash.slice(1));
  select(id || null);
}

$('f-kind').addEventListener('change', renderRows);
$('f-decision').addEventListener('change', renderRows);
$('why-close').addEventListener('click', () => { $('why').hidden = true; });
$('copy-entry').addEventListener('click', () => copy($('why-entry').textContent));
$('copy-flag').addEventListener('click', () => copy($('why-flag').textContent));
window.addEventListener('hashchange', fromHash);

(async () => {
  try {
    info = await getJSON('/api/info');
    $('roots').textContent = info.roots.join(', ');
  } catch (e) {
    setStatus('cannot reach the UI server: ' + e.message);
  }
  fromHash();
  await refreshList();
  setInterval(refreshList, 2000);
})();
