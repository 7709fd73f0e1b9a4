// kvlab dashboard: draws the KV block pool (one cell per block) from snapshots in the format of
// kvlab/dashboard/snapshot.py, live over Server-Sent Events or from a recording with a timeline.
// Plain JS + canvas, no external resources. window.kvlabDashboard exposes what was drawn (counts,
// step, redraw times) for people and for the browser test.
(function () {
  'use strict';
  var FREE = 0, PRIVATE = 1, SHARED = 2, CACHED = 3, RESERVED = 4, SLACK = 5;
  var STATE_NAMES = ['free', 'in use', 'shared', 'cached (free)', 'reserved (unwritten)', 'slack (never written)'];
  var FREE_COLOR = '#eceff1', CACHED_COLOR = '#90a4ae', SLACK_COLOR = '#f48fb1', SHARED_FRAME = '#111';
  var MEM = [['token_states', '#2e7d32', 'token states'], ['reservation', '#f9a825', 'reservation'],
    ['internal_frag', '#c62828', 'internal frag.'], ['external_frag', '#b0bec5', 'external frag. & other']];
  var QUEUES = [['running', '#1565c0', 'running'], ['waiting', '#ef6c00', 'waiting'],
    ['swapped', '#6a1b9a', 'swapped'], ['running_seqs', '#00897b', 'batch (seqs)']];
  var LIVE_HISTORY = 600;

  var grid = document.getElementById('grid');
  var ctx = grid.getContext('2d', { alpha: false });
  var tip = document.getElementById('tip');
  var snap = null;          // the decoded snapshot on screen
  var layout = { n: -1, cell: 8, cols: 1, rows: 1, gap: 1 };
  var history = [];         // stats per snapshot (live: recent; replay: whole run)
  var colorCache = new Map();
  var source = null;

  var dash = window.kvlabDashboard = {
    mode: null, step: -1, numBlocks: 0, blockSize: 0, allocator: '', counts: {}, requestsShown: 0,
    sharedBlocks: 0, crossRequestShared: 0, snapshotsSeen: 0, frame: 0, frames: 0,
    drawTimes: [], lastDrawMs: 0, error: null,
    describe: describe, blockCenter: blockCenter, redraw: draw, show: showText, pause: pause
  };

  function b64bytes(s) {
    var bin = atob(s), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }

  function decode(j) {
    return {
      step: j.step, clock: j.clock_s, n: j.num_blocks, bs: j.block_size, allocator: j.allocator,
      state: b64bytes(j.state), owner: new Uint16Array(b64bytes(j.owner).buffer),
      ref: b64bytes(j.ref), fill: new Uint16Array(b64bytes(j.fill).buffer),
      requests: j.requests, shared: j.shared || {}, stats: j.stats
    };
  }

  function hue(rid) {  // FNV-1a of the request id: a request keeps its color across snapshots
    var h = 2166136261;
    for (var i = 0; i < rid.length; i++) h = Math.imul(h ^ rid.charCodeAt(i), 16777619);
    return (h >>> 0) % 360;
  }

  function hsl(h, s, l) {  // -> [r, g, b] in 0..255
    var a = s * Math.min(l, 1 - l);
    var f = function (n) { var k = (n + h / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
    return [f(0), f(8), f(4)];
  }

  function u32(rgb) { return ((255 << 24) | (rgb[2] << 16) | (rgb[1] << 8) | rgb[0]) >>> 0; }  // RGBA bytes, little-endian
  function hex(s) { return [parseInt(s.slice(1, 3), 16), parseInt(s.slice(3, 5), 16), parseInt(s.slice(5, 7), 16)]; }

  var FREE_PX = u32(hex(FREE_COLOR)), CACHED_PX = u32(hex(CACHED_COLOR)), SLACK_PX = u32(hex(SLACK_COLOR));
  var SHARED_PX = u32(hex(SHARED_FRAME)), WHITE_PX = u32([255, 255, 255]);

  function colors(rid) {
    var c = colorCache.get(rid);
    if (!c) {
      var h = hue(rid);
      c = { solid: u32(hsl(h, 0.7, 0.42)), light: u32(hsl(h, 0.65, 0.8)) };
      colorCache.set(rid, c);
      if (colorCache.size > 20000) colorCache.clear();
    }
    return c;
  }

  var image = null, pix = null;

  function computeLayout(n) {
    var w = Math.max(200, (grid.parentElement.clientWidth || 800) - 2);
    var maxH = Math.max(260, window.innerHeight - 150);
    var cell = Math.floor(Math.sqrt(w * maxH / Math.max(n, 1)));
    cell = Math.max(2, Math.min(28, cell));
    var cols = Math.max(1, Math.floor(w / cell));
    layout = { n: n, w: w, cell: cell, cols: cols, rows: Math.ceil(n / cols), gap: cell >= 5 ? 1 : 0 };
    grid.width = cols * cell;
    grid.height = layout.rows * cell;
    image = ctx.createImageData(grid.width, grid.height);
    pix = new Uint32Array(image.data.buffer);
  }

  function rect(x, y, w, h, c) {  // fill a rectangle of the pixel buffer
    var W = grid.width;
    for (var yy = y, end = y + h; yy < end; yy++) { var o = yy * W + x; pix.fill(c, o, o + w); }
  }

  // Draws the whole pool into a pixel buffer (one putImageData): a few ms for 10,000 blocks.
  function draw() {
    if (!snap) return 0;
    var t0 = performance.now();
    if (layout.n !== snap.n || !pix) computeLayout(snap.n);
    var n = snap.n, cell = layout.cell, cols = layout.cols, sz = cell - layout.gap, bs = snap.bs;
    var st = snap.state, ow = snap.owner, ref = snap.ref, fill = snap.fill, reqs = snap.requests;
    var counts = [0, 0, 0, 0, 0, 0], inUse = 0;
    var seen = new Uint8Array(reqs.length + 1), shown = 0;
    var inset = Math.max(1, (sz / 4) | 0);
    pix.fill(WHITE_PX);
    for (var i = 0; i < n; i++) {
      var s = st[i];
      counts[s]++;
      if (ref[i] > 0) inUse++;
      var o = ow[i];
      if (o > 0 && !seen[o]) { seen[o] = 1; shown++; }
      var x = (i % cols) * cell, y = ((i / cols) | 0) * cell;
      if (s === FREE) { rect(x, y, sz, sz, FREE_PX); continue; }
      if (s === CACHED) { rect(x, y, sz, sz, CACHED_PX); continue; }
      if (s === SLACK) { rect(x, y, sz, sz, SLACK_PX); continue; }
      var c = colors(o > 0 ? reqs[o - 1] : '?');
      if (s === RESERVED) { rect(x, y, sz, sz, c.light); continue; }
      var x0 = x, y0 = y, side = sz;
      if (s === SHARED) {  // dark frame around the owner's color
        rect(x, y, sz, sz, SHARED_PX);
        if (sz > 2) { x0 += inset; y0 += inset; side = sz - 2 * inset; }
      }
      var h = Math.round(side * Math.min(fill[i], bs) / bs);  // written slots from the bottom up
      if (h < side) rect(x0, y0, side, side - h, c.light);
      if (h > 0) rect(x0, y0 + side - h, side, h, c.solid);
    }
    ctx.putImageData(image, 0, 0);
    var ms = performance.now() - t0;
    var cross = 0;
    for (var k in snap.shared) if (snap.shared[k].length > 1) cross++;
    dash.step = snap.step; dash.numBlocks = n; dash.blockSize = bs; dash.allocator = snap.allocator;
    dash.counts = { free: counts[FREE], inUse: inUse, private: counts[PRIVATE], shared: counts[SHARED],
      cached: counts[CACHED], reserved: counts[RESERVED], slack: counts[SLACK] };
    dash.requestsShown = shown; dash.sharedBlocks = counts[SHARED]; dash.crossRequestShared = cross;
    dash.lastDrawMs = ms; dash.drawTimes.push(ms);
    if (dash.drawTimes.length > 500) dash.drawTimes.shift();
    document.getElementById('drawinfo').textContent = n + ' blocks × ' + bs + ' slots · cell ' + cell +
      ' px · redraw ' + ms.toFixed(1) + ' ms';
    return ms;
  }

  function describe(i) {
    if (!snap || i < 0 || i >= snap.n) return null;
    var o = snap.owner[i], names = [];
    if (snap.shared[i] !== undefined) names = snap.shared[i].map(function (k) { return snap.requests[k]; });
    else if (o > 0) names = [snap.requests[o - 1]];
    return { block: i, state: snap.state[i], stateName: STATE_NAMES[snap.state[i]], requests: names,
      ref: snap.ref[i], fill: snap.fill[i], blockSize: snap.bs };
  }

  function blockCenter(i) {  // CSS pixels from the canvas's top-left corner
    var r = grid.getBoundingClientRect(), sx = r.width / grid.width, sy = r.height / grid.height;
    return { x: ((i % layout.cols) + 0.5) * layout.cell * sx, y: (((i / layout.cols) | 0) + 0.5) * layout.cell * sy };
  }

  grid.addEventListener('mousemove', function (ev) {
    if (!snap) return;
    var r = grid.getBoundingClientRect();
    var cx = (ev.clientX - r.left) * grid.width / r.width, cy = (ev.clientY - r.top) * grid.height / r.height;
    var col = Math.floor(cx / layout.cell), row = Math.floor(cy / layout.cell), i = row * layout.cols + col;
    var d = col < layout.cols ? describe(i) : null;
    if (!d) { tip.style.display = 'none'; return; }
    tip.textContent = 'block ' + d.block + ' · ' + d.stateName +
      '\nrequest' + (d.requests.length === 1 ? '' : 's') + ': ' + (d.requests.length ? d.requests.join(', ') : '—') +
      '\nref ' + d.ref + ' · fill ' + d.fill + '/' + d.blockSize;
    tip.style.display = 'block';
    tip.style.left = (ev.clientX + 14) + 'px';
    tip.style.top = (ev.clientY + 12) + 'px';
  });
  grid.addEventListener('mouseleave', function () { tip.style.display = 'none'; });

  function chart(canvas, series, keys, stacked, cursor) {
    var w = canvas.clientWidth || 360, h = canvas.clientHeight || 120;
    if (canvas.width !== w) canvas.width = w;
    if (canvas.height !== h) canvas.height = h;
    var c = canvas.getContext('2d');
    c.fillStyle = '#fff'; c.fillRect(0, 0, w, h);
    var m = series.length;
    if (m < 1) return;
    var xs = function (k) { return m === 1 ? w / 2 : k * (w - 1) / (m - 1); };
    if (stacked) {
      var base = new Float64Array(m);
      for (var q = 0; q < keys.length; q++) {
        c.fillStyle = keys[q][1];
        c.beginPath();
        for (var k = 0; k < m; k++) c.lineTo(xs(k), h - h * (base[k] + (series[k][keys[q][0]] || 0)) / Math.max(series[k].total_slots, 1));
        for (k = m - 1; k >= 0; k--) c.lineTo(xs(k), h - h * base[k] / Math.max(series[k].total_slots, 1));
        c.closePath(); c.fill();
        for (k = 0; k < m; k++) base[k] += series[k][keys[q][0]] || 0;
      }
    } else {
      var top = 1;
      for (k = 0; k < m; k++) for (q = 0; q < keys.length; q++) top = Math.max(top, series[k][keys[q][0]] || 0);
      for (q = 0; q < keys.length; q++) {
        c.strokeStyle = keys[q][1]; c.lineWidth = 1.5; c.beginPath();
        for (k = 0; k < m; k++) c.lineTo(xs(k), h - 2 - (h - 4) * (series[k][keys[q][0]] || 0) / top);
        c.stroke();
      }
      c.fillStyle = '#777'; c.fillText('max ' + top, 4, 11);
    }
    if (cursor !== undefined && cursor !== null) {
      c.strokeStyle = '#000'; c.lineWidth = 1; c.beginPath(); c.moveTo(xs(cursor), 0); c.lineTo(xs(cursor), h); c.stroke();
    }
  }

  function legend(el, items) {
    el.innerHTML = '';
    items.forEach(function (it) {
      var s = document.createElement('span'), sw = document.createElement('i');
      sw.className = 'sw'; sw.style.background = it[1];
      s.appendChild(sw); s.appendChild(document.createTextNode(it[2]));
      el.appendChild(s);
    });
  }

  function numbers() {
    var s = snap.stats, c = dash.counts;
    var hit = s.prefix_query_tokens ? (100 * s.prefix_hit_tokens / s.prefix_query_tokens).toFixed(1) + ' %' : '—';
    var rows = [['step', snap.step], ['engine clock', snap.clock.toFixed(2) + ' s'],
      ['blocks in use', c.inUse + ' / ' + snap.n], ['requests shown', dash.requestsShown],
      ['shared blocks', c.shared + ' (' + dash.crossRequestShared + ' across requests)'], ['cached free blocks', c.cached],
      ['reserved / slack blocks', c.reserved + ' / ' + c.slack],
      ['running · waiting · swapped', s.running + ' · ' + s.waiting + ' · ' + s.swapped],
      ['batch', s.running_seqs + ' seqs, ' + s.batch_tokens + ' tokens'], ['preemptions', s.num_preemptions],
      ['prefix hit rate', hit], ['finished', s.num_finished], ['redraw', dash.lastDrawMs.toFixed(1) + ' ms']];
    var t = document.getElementById('nums');
    t.innerHTML = '';
    rows.forEach(function (r) {
      var tr = t.insertRow();
      tr.insertCell().textContent = r[0];
      var v = tr.insertCell(); v.className = 'v'; v.textContent = r[1];
    });
  }

  function show(j, cursor) {
    snap = decode(j);
    dash.snapshotsSeen++;
    draw();
    if (dash.mode === 'live') {
      var last = history[history.length - 1];
      if (!last || last.step !== j.step || last.num_finished !== j.stats.num_finished) {
        history.push(Object.assign({ step: j.step }, j.stats));
        if (history.length > LIVE_HISTORY) history.shift();
      }
    }
    chart(document.getElementById('memChart'), history, MEM, true, cursor);
    chart(document.getElementById('queueChart'), history, QUEUES, false, cursor);
    numbers();
    document.getElementById('title').textContent = (snap.allocator || 'allocator') + ' · ' + snap.n +
      ' blocks of ' + snap.bs + ' slots';
  }

  function showText(text) { show(typeof text === 'string' ? JSON.parse(text) : text); }

  function pause() { if (source) { source.close(); source = null; } }

  function setStatus(t) { document.getElementById('status').textContent = t; }

  function startLive(info) {
    setStatus('live (≤ ' + info.max_hz + ' snapshots/s)');
    source = new EventSource('/dashboard/stream');
    source.onmessage = function (e) {
      try { show(JSON.parse(e.data)); } catch (err) { dash.error = String(err); }
    };
    source.onerror = function () { setStatus('reconnecting…'); };
    source.onopen = function () { setStatus('live (≤ ' + info.max_hz + ' snapshots/s)'); };
  }

  function startReplay(info) {
    dash.frames = info.frames;
    var slider = document.getElementById('slider'), label = document.getElementById('frameLabel');
    var play = document.getElementById('play'), timer = null, wanted = 0;
    document.getElementById('timeline').style.display = 'flex';
    slider.max = String(info.frames - 1);
    setStatus('replay of ' + info.path);
    function load(i) {
      wanted = i;
      return fetch('/dashboard/frame/' + i).then(function (r) { return r.json(); }).then(function (j) {
        if (i !== wanted) return;
        dash.frame = i;
        show(j, i);
        label.textContent = 'frame ' + (i + 1) + '/' + info.frames + ' · step ' + j.step;
      });
    }
    dash.goto = function (i) { slider.value = String(i); return load(i); };
    slider.addEventListener('input', function () { load(parseInt(slider.value, 10)); });
    play.addEventListener('click', function () {
      if (timer) { clearInterval(timer); timer = null; play.textContent = '▶'; return; }
      play.textContent = '⏸';
      timer = setInterval(function () {
        var v = parseInt(slider.value, 10) + 1;
        if (v >= info.frames) { clearInterval(timer); timer = null; play.textContent = '▶'; return; }
        slider.value = String(v); load(v);
      }, 125);
    });
    fetch('/dashboard/series').then(function (r) { return r.json(); }).then(function (s) {
      history = s; return load(0);
    });
  }

  legend(document.getElementById('legend'), [[0, FREE_COLOR, 'free'], [0, CACHED_COLOR, 'cached (free, evictable)'],
    [0, 'hsl(210,70%,42%)', 'in use (color = request; light = unwritten slots)'], [0, SHARED_FRAME, 'shared (dark frame)'],
    [0, 'hsl(210,65%,80%)', 'reserved, unwritten'], [0, SLACK_COLOR, 'slack (never written)']]);
  legend(document.getElementById('memLegend'), MEM.map(function (m) { return [0, m[1], m[2]]; }));
  legend(document.getElementById('queueLegend'), QUEUES.map(function (m) { return [0, m[1], m[2]]; }));
  window.addEventListener('resize', function () { layout.n = -1; draw(); });

  fetch('/dashboard/info').then(function (r) { return r.json(); }).then(function (info) {
    dash.mode = info.mode;
    if (info.mode === 'replay') startReplay(info); else startLive(info);
  }).catch(function (err) { dash.error = String(err); setStatus('error: ' + err); });
})();
