// nscope serve — the dashboard. Everything it shows comes from the JSON API under /api/ (docs/serve.md);
// charts go through figures.js (the report's figure spec -> Plotly conversion). Text from the model (tokens)
// is only ever set as textContent or through figures.js, which neutralises it for Plotly.
(function () {
  'use strict';

  var state = {models: [], model: null, token: '', lastActivations: null};

  // A token given as #token=T in the URL is kept for this tab and sent as a bearer token.
  var m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) sessionStorage.setItem('nscope-token', decodeURIComponent(m[1]));
  state.token = sessionStorage.getItem('nscope-token') || '';

  function $(id) { return document.getElementById(id); }
  function el(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function fmt(v) { return typeof v === 'number' ? (Math.abs(v) >= 100 ? v.toFixed(1) : v.toPrecision(3)) : v === null ? '—' : String(v); }

  function status(text, isError) {
    var s = $('status');
    s.textContent = text;
    s.className = 'status' + (isError ? ' error' : '');
  }

  function api(path, body) {
    var opts = {method: body ? 'POST' : 'GET', headers: {}};
    if (state.token) opts.headers.Authorization = 'Bearer ' + state.token;
    if (body) {
      opts.headers['Content-Type'] = 'application/json';
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {error: 'HTTP ' + r.status}; }).then(function (j) {
        if (!r.ok) throw new Error(j.error || ('HTTP ' + r.status));
        return j;
      });
    });
  }

  function showError(container, err) {
    container.textContent = '';
    container.appendChild(el('div', err.message || String(err), 'error-box'));
    status(err.message || String(err), true);
  }

  function plot(container, spec, name, tweak) {
    var div = el('div', null, 'plot');
    container.appendChild(div);
    try {
      var f = nscopeFigure(spec, {name: name});
      if (tweak) tweak(f);
      Plotly.newPlot(div, f.data, f.layout, {responsive: true, displaylogo: false});
    } catch (e) {
      div.appendChild(el('div', 'cannot show ' + name + ': ' + e.message, 'error-box'));
    }
    return div;
  }

  function table(columns, rows) {
    var t = el('table');
    var tr = el('tr');
    columns.forEach(function (c) { tr.appendChild(el('th', c)); });
    t.appendChild(tr);
    rows.forEach(function (r) {
      var row = el('tr');
      r.forEach(function (v) {
        var td = el('td', typeof v === 'object' && v !== null ? JSON.stringify(v) : fmt(v), typeof v === 'number' ? 'num' : '');
        row.appendChild(td);
      });
      t.appendChild(row);
    });
    return t;
  }

  function tokenLabels(tokens) { return tokens.map(function (t, i) { return i + ': ' + t.text; }); }

  function promptBody(extra) {
    var body = {model: state.model, prompt: $('prompt').value};
    Object.keys(extra || {}).forEach(function (k) { body[k] = extra[k]; });
    return body;
  }

  function currentModel() {
    for (var i = 0; i < state.models.length; i++) if (state.models[i].name === state.model) return state.models[i];
    return null;
  }

  // ---- tabs ------------------------------------------------------------------------------------------------

  function showTab(name) {
    document.querySelectorAll('#tabs button').forEach(function (b) { b.classList.toggle('active', b.dataset.tab === name); });
    document.querySelectorAll('.tab').forEach(function (t) { t.classList.toggle('active', t.id === 'tab-' + name); });
    // Plotly sizes charts drawn in a hidden tab wrongly: resize them once visible.
    document.querySelectorAll('#tab-' + name + ' .js-plotly-plot').forEach(function (p) { Plotly.Plots.resize(p); });
    if (name === 'runs') loadRuns();
  }
  document.querySelectorAll('#tabs button').forEach(function (b) {
    b.addEventListener('click', function () { showTab(b.dataset.tab); });
  });

  // ---- models ----------------------------------------------------------------------------------------------

  function selectModel(name) {
    state.model = name;
    var mm = currentModel();
    var hook = $('hook');
    hook.textContent = '';
    $('a-layer').textContent = '';
    $('a-head').textContent = '';
    if (!mm || mm.status !== 'ready') {
      $('model-info').textContent = mm ? 'failed to load: ' + mm.error : '';
      return;
    }
    var i = mm.info;
    $('model-info').textContent = i.architecture + ' · ' + i.n_layers + ' layers · d_model ' + i.d_model +
        ' · d_mlp ' + i.d_mlp + ' · ' + i.n_heads + ' heads';
    mm.heatmap_hooks.forEach(function (h) {
      var o = el('option', h);
      o.value = h;
      if (h === 'mlp.hook_post') o.selected = true;
      hook.appendChild(o);
    });
    for (var l = 0; l < i.n_layers; l++) $('a-layer').appendChild(el('option', l));
    for (var h = 0; h < i.n_heads; h++) $('a-head').appendChild(el('option', h));
    $('n-hook').value = 'blocks.0.mlp.hook_post';
    $('e-hook').value = 'blocks.0.mlp.hook_post';
  }

  function loadModels() {
    return api('/api/models').then(function (j) {
      state.models = j.models;
      var sel = $('model');
      sel.textContent = '';
      var first = null;
      j.models.forEach(function (mm) {
        var o = el('option', mm.name + (mm.status === 'ready' ? '' : ' (failed to load)'));
        o.value = mm.name;
        o.disabled = mm.status !== 'ready';
        sel.appendChild(o);
        if (!first && mm.status === 'ready') first = mm.name;
      });
      if (first) {
        sel.value = first;
        selectModel(first);
        status('ready');
      } else {
        status(j.models.length ? 'no model loaded successfully' : 'no models: start nscope serve with MODEL arguments', true);
      }
    });
  }
  $('model').addEventListener('change', function () { selectModel($('model').value); });

  // ---- heatmaps ----------------------------------------------------------------------------------------------

  function runActivations() {
    var out = $('heatmaps');
    status('running…');
    return api('/api/activations', promptBody({hook: $('hook').value, top: parseInt($('top').value, 10) || 16,
                                               rank: $('rank').value}))
      .then(function (j) {
        state.lastActivations = j;
        out.textContent = '';
        var grid = el('div', null, 'grid');
        out.appendChild(grid);
        var labels = tokenLabels(j.tokens);
        j.layers.forEach(function (layer) {
          var spec = {kind: 'heatmap', title: layer.hook, z: layer.values, y: labels,
                      x: layer.neurons.map(function (n) { return 'n' + n; }), x_label: 'neuron', y_label: 'token'};
          var div = plot(grid, spec, layer.hook, function (f) {
            f.data[0].hovertemplate = 'token %{y}<br>neuron %{x}<br>value %{z:.4f}<extra>' + layer.hook + '</extra>';
            f.layout.height = Math.max(260, 22 * labels.length + 120);
          });
          div.classList.add('layer-plot');
          div.dataset.hook = layer.hook;
          div.on('plotly_click', function (ev) {
            var p = ev.points[0];
            openNeuron(layer.hook, parseInt(String(p.x).slice(1), 10));
          });
        });
        status('heatmap: ' + j.tokens.length + ' tokens, ' + j.layers.length + ' hooks');
      })
      .catch(function (e) { showError(out, e); });
  }
  $('run').addEventListener('click', function () { runActivations(); showTab('neurons'); });

  // ---- neuron page -------------------------------------------------------------------------------------------

  function openNeuron(hook, neuron) {
    $('n-hook').value = hook;
    $('n-index').value = neuron;
    showTab('neuron');
    var out = $('neuron-page');
    out.textContent = 'loading…';
    status('neuron ' + hook + ' #' + neuron + '…');
    return api('/api/neuron', promptBody({hook: hook, neuron: neuron}))
      .then(function (j) {
        out.textContent = '';
        out.appendChild(el('h2', j.hook + ' · neuron ' + j.neuron));
        var s = j.stats;
        out.appendChild(el('h3', 'On this prompt'));
        out.appendChild(table(['tokens', 'mean', 'std', 'min', 'max', 'fraction > 0'],
                              [[s.count, s.mean, s.std, s.min, s.max, s.frac_active]]));
        var grid = el('div', null, 'grid');
        out.appendChild(grid);
        plot(grid, j.figures.per_token, 'per_token');
        plot(grid, j.figures.histogram, 'histogram');
        out.appendChild(el('h3', 'Top tokens of the prompt'));
        out.appendChild(table(['rank', 'value', 'before', 'token', 'after'], j.examples.map(function (e) {
          return [e.rank, e.value, e.before, e.token, e.after];
        })));
        out.appendChild(el('h3', 'Top n-grams of the prompt (mean activation)'));
        out.appendChild(table(['n', 'n-gram', 'mean'], j.ngrams.map(function (g) { return [g.n, g.ngram, g.value]; })));
        out.appendChild(el('h3', 'Direct effect on the output'));
        var eff = j.logit_effect;
        if (eff.available) {
          out.appendChild(el('p', eff.note, 'muted'));
          var rows = [];
          for (var i = 0; i < Math.max(eff.promoted.length, eff.suppressed.length); i++) {
            var a = eff.promoted[i] || {}, b = eff.suppressed[i] || {};
            rows.push([a.text, a.value, b.text, b.value]);
          }
          out.appendChild(table(['promotes', 'logit', 'suppresses', 'logit'], rows));
        } else {
          out.appendChild(el('p', eff.reason, 'muted'));
        }
        out.appendChild(el('h3', 'From the neuron database'));
        if (!j.db) {
          out.appendChild(el('p', 'No run under --runs has a neuron database with this neuron (the prompt-based view above stands in).', 'muted'));
        } else {
          out.appendChild(el('p', 'database ' + j.db.database + ' (run ' + j.db.run + ', model ' + j.db.model + ')', 'muted'));
          if (j.db.stats.length) out.appendChild(table(Object.keys(j.db.stats[0]), j.db.stats.map(function (r) { return Object.values(r); })));
          if (j.db.flags.length) out.appendChild(el('p', 'flags: ' + j.db.flags.map(function (f) { return f.category; }).join(', ')));
          out.appendChild(el('h3', 'Top examples (corpus)'));
          out.appendChild(table(['rank', 'value', 'before', 'token', 'after', 'run'], j.db.top_examples.map(function (e) {
            return [e.rank, e.value, e.before, e.token, e.after, e.run];
          })));
          out.appendChild(el('h3', 'Top n-grams (corpus)'));
          out.appendChild(table(['kind', 'n', 'rank', 'n-gram', 'value'], j.db.top_ngrams.map(function (g) {
            return [g.kind, g.n, g.rank, g.ngram, g.value];
          })));
          out.appendChild(el('h3', 'Cluster / polysemanticity / drift entries'));
          if (!j.db.analyses.length) out.appendChild(el('p', 'none for this neuron', 'muted'));
          else out.appendChild(table(['analysis', 'plugin', 'table', 'row'], j.db.analyses.map(function (a) {
            return [a.analysis, a.plugin, a.table, a.row];
          })));
        }
        status('neuron ' + j.hook + ' #' + j.neuron);
      })
      .catch(function (e) { showError(out, e); });
  }
  $('n-open').addEventListener('click', function () {
    openNeuron($('n-hook').value.trim(), parseInt($('n-index').value, 10));
  });
  $('n-edit').addEventListener('click', function () {
    $('e-hook').value = $('n-hook').value.trim();
    $('e-neurons').value = $('n-index').value;
    $('e-heads').value = '';
    showTab('edit');
  });

  // ---- attention ------------------------------------------------------------------------------------------------

  function runAttention() {
    var out = $('attention-plot'), scores = $('head-scores');
    var layer = parseInt($('a-layer').value || '0', 10), head = parseInt($('a-head').value || '0', 10);
    status('attention…');
    return api('/api/attention', promptBody({layer: layer}))
      .then(function (j) {
        out.textContent = '';
        scores.textContent = '';
        var labels = tokenLabels(j.tokens);
        var L = j.layers[0];
        plot(out, {kind: 'heatmap', title: L.hook + ' head ' + head, z: L.heads[head], x: labels, y: labels,
                   x_label: 'key', y_label: 'query'}, 'attention', function (f) {
          f.layout.height = Math.max(320, 18 * labels.length + 160);
        });
        var grid = el('div', null, 'grid');
        scores.appendChild(grid);
        var figs = (j.scores && j.scores.figures) || {};
        Object.keys(figs).forEach(function (k) { plot(grid, figs[k], k); });
        status('attention: layer ' + layer + ', head ' + head);
      })
      .catch(function (e) { showError(out, e); });
  }
  $('a-run').addEventListener('click', runAttention);

  // ---- logit lens -----------------------------------------------------------------------------------------------

  function runLens() {
    var out = $('lens');
    status('logit lens…');
    return api('/api/logit_lens', promptBody({}))
      .then(function (j) {
        out.textContent = '';
        var figs = j.result.figures || {};
        Object.keys(figs).forEach(function (k) {
          plot(out, figs[k], k, function (f) { if (f.layout.height < 400) f.layout.height = 420; });
        });
        var tables = j.result.tables || {};
        Object.keys(tables).forEach(function (k) {
          out.appendChild(el('h3', tables[k].title || k));
          out.appendChild(table(tables[k].columns, tables[k].rows.slice(0, 200)));
        });
        status('logit lens: ' + j.tokens.length + ' tokens');
      })
      .catch(function (e) { showError(out, e); });
  }
  $('l-run').addEventListener('click', runLens);

  // ---- edit -----------------------------------------------------------------------------------------------------

  function ints(s) {
    return s.split(/[\s,]+/).filter(function (x) { return x !== ''; }).map(function (x) { return parseInt(x, 10); });
  }

  function runEdit() {
    var out = $('edit-result');
    var op = $('e-op').value, number = parseFloat($('e-number').value);
    var spec = {hook: $('e-hook').value.trim(), op: op};
    var neurons = ints($('e-neurons').value), heads = ints($('e-heads').value);
    if (neurons.length) spec.neurons = neurons;
    if (heads.length) spec.heads = heads;
    if (op === 'scale') spec.factor = isNaN(number) ? 0 : number;
    if (op === 'set') spec.value = isNaN(number) ? 0 : number;
    status('edit…');
    return api('/api/edit', promptBody({edits: [spec]}))
      .then(function (j) {
        out.textContent = '';
        out.appendChild(el('p', 'KL(before ‖ after) at position ' + j.position + ': ' + fmt(j.kl) +
                                (j.top_changed ? ' — the top token changed' : ' — same top token')));
        var rows = [];
        for (var i = 0; i < j.before.length; i++) {
          rows.push([j.before[i].text, j.before[i].p, j.before[i].p_other, j.after[i].text, j.after[i].p, j.after[i].p_other]);
        }
        out.appendChild(table(['before', 'p', 'p after', 'after', 'p', 'p before'], rows));
        var grid = el('div', null, 'grid');
        out.appendChild(grid);
        plot(grid, {kind: 'bar', title: 'next-token probabilities (top before the edit)',
                    x: j.before.map(function (t) { return t.text; }),
                    series: [{name: 'before', y: j.before.map(function (t) { return t.p; })},
                             {name: 'after', y: j.before.map(function (t) { return t.p_other; })}]}, 'edit');
        status('edit applied: KL ' + fmt(j.kl));
      })
      .catch(function (e) { showError(out, e); });
  }
  $('e-run').addEventListener('click', runEdit);

  // ---- runs -----------------------------------------------------------------------------------------------------

  function loadRuns() {
    var out = $('runs');
    return api('/api/runs').then(function (j) {
      out.textContent = '';
      if (!j.runs.length) {
        out.appendChild(el('p', 'No runs (start nscope serve with --runs DIR to browse run directories).', 'muted'));
        return;
      }
      var t = table(['run', 'name', 'status', 'started', 'model', 'report', 'databases'], []);
      j.runs.forEach(function (r) {
        var tr = el('tr');
        [r.path, r.name, r.status, r.started, typeof r.model === 'string' ? r.model : JSON.stringify(r.model)].forEach(function (v) {
          tr.appendChild(el('td', v));
        });
        var td = el('td');
        if (r.report) {
          var a = el('a', 'report.html');
          a.href = '/runs/' + r.path.split('/').map(encodeURIComponent).join('/') + '/report.html' +
                   (state.token ? '?token=' + encodeURIComponent(state.token) : '');
          a.target = '_blank';
          td.appendChild(a);
        }
        tr.appendChild(td);
        tr.appendChild(el('td', r.databases.join(', ')));
        t.appendChild(tr);
      });
      out.appendChild(t);
    }).catch(function (e) { showError(out, e); });
  }

  loadModels().catch(function (e) { status(e.message, true); });
})();
