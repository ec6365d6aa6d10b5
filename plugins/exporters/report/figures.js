// NeuronScope figure specs -> Plotly figures.
//
// The spec is an analyzer's data["figures"][name], whose conventions are documented at the top of
// sdk/include/nscope/result.h (kinds bar, line, scatter, heatmap, histogram; series; frames; labels).
// nscopeFigure(spec, options) returns {data, layout, frames} for Plotly.newPlot(el, {data, layout, frames,
// config}); it touches neither the DOM nor Plotly, so any viewer (report.html, a web dashboard, node) can use
// it. The report exporter embeds this file into report.html at build time.
//
// Specs come from plugins we do not control: a spec that cannot be shown (unknown kind, wrong types, a ragged
// heatmap, lengths that disagree) throws an nscopeFigure.Error with a short message for the viewer to show
// in place of the chart. Every string Plotly renders (it decodes pseudo-HTML and entities in titles, tick
// labels, legend entries and hover text) is neutralised by text(), like plot_text() in report_exporter.cpp.
(function (root) {
  'use strict';

  function FigureError(message) {
    this.name = 'NscopeFigureError';
    this.message = message;
  }
  FigureError.prototype = Object.create(Error.prototype);
  FigureError.prototype.constructor = FigureError;

  function fail(message) { throw new FigureError(message); }

  // ---- values ---------------------------------------------------------------------------------------------

  function isObject(v) { return v !== null && typeof v === 'object' && !Array.isArray(v); }
  function isNumber(v) { return typeof v === 'number' && isFinite(v); }

  function describe(v) {
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'an array';
    if (typeof v === 'object') return 'an object';
    if (typeof v === 'string') return 'a string';
    return typeof v === 'number' ? 'the number ' + v : 'a ' + typeof v;
  }

  // Plotly label text: C0 controls shown as \xNN, pseudo-HTML neutralised, newlines shown as a return arrow.
  function text(s) {
    return String(s).replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, function (c) {
      return '\\x' + ('0' + c.charCodeAt(0).toString(16)).slice(-2);
    }).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/\n/g, '\u21b5');
  }

  function optionalString(obj, key, where) {
    var v = obj[key];
    if (v === undefined || v === null) return '';
    if (typeof v !== 'string') fail(where + key + ' must be a string, not ' + describe(v));
    return text(v);
  }

  function array(v, key) {
    if (!Array.isArray(v)) fail(key + ' must be an array, not ' + describe(v));
    return v;
  }

  // Numbers (null, written for non-finite values, is a gap).
  function numbers(v, key) {
    return array(v, key).map(function (x, i) {
      if (x === null) return null;
      if (!isNumber(x)) fail(key + '[' + i + '] must be a number or null, not ' + describe(x));
      return x;
    });
  }

  // Positions or category labels: numbers, strings or null. With any string the axis is categorical: all
  // labels become (neutralised) strings, repeated ones numbered so that Plotly does not merge their points.
  function labels(v, key) {
    var list = array(v, key), categorical = false;
    list.forEach(function (x, i) {
      if (typeof x === 'string') categorical = true;
      else if (x !== null && !isNumber(x))
        fail(key + '[' + i + '] must be a number, a string or null, not ' + describe(x));
    });
    if (!categorical) return {values: list.slice(), categorical: false};
    var seen = {};
    return {categorical: true, values: list.map(function (x) {
      var s = x === null ? '' : text(x), n = seen[s] = (seen[s] || 0) + 1;
      return n === 1 ? s : s + ' (' + n + ')';
    })};
  }

  // Hover texts: numbers, strings or null, all shown as neutralised strings.
  function strings(v, key) {
    return array(v, key).map(function (x, i) {
      if (x === null) return '';
      if (typeof x !== 'string' && !isNumber(x))
        fail(key + '[' + i + '] must be a string, a number or null, not ' + describe(x));
      return text(x);
    });
  }

  function sameLength(a, aKey, b, bKey) {
    if (a.length !== b.length) fail(aKey + ' has ' + a.length + ' values but ' + bKey + ' has ' + b.length);
  }

  // Smallest and largest number in nested arrays (null when there is none).
  function extent(values, into) {
    values.forEach(function (v) {
      if (Array.isArray(v)) return extent(v, into);
      if (!isNumber(v)) return;
      into.min = into.min === null ? v : Math.min(into.min, v);
      into.max = into.max === null ? v : Math.max(into.max, v);
    });
    return into;
  }

  // ---- kinds ----------------------------------------------------------------------------------------------
  // Each returns {traces, layout (axis settings), values (the numbers along the value axis, for a common
  // range over animation frames)}.

  // bar, line, scatter: one series (x, y) or "series": [{name, y, x?}, ...]; scatter adds text, color, z.
  function xy(spec, kind) {
    var entries;
    if (spec.series !== undefined) {
      if (spec.y !== undefined) fail('give either y or series, not both');
      entries = array(spec.series, 'series').map(function (s, i) {
        if (!isObject(s)) fail('series[' + i + '] must be an object, not ' + describe(s));
        var where = 'series[' + i + '].';
        return {where: where, name: optionalString(s, 'name', where) || 'series ' + (i + 1), obj: s,
                x: s.x !== undefined ? s.x : spec.x};
      });
      if (!entries.length) fail('series is empty');
    } else {
      if (spec.y === undefined) fail(kind + ' needs y (or series)');
      entries = [{where: '', name: '', obj: spec, x: spec.x}];
    }
    var categorical = false, threeD = null, traces = [], values = [];
    entries.forEach(function (e) {
      var y = numbers(e.obj.y, e.where + 'y'), x = null;
      if (e.x !== undefined && e.x !== null) {
        x = labels(e.x, e.obj.x !== undefined ? e.where + 'x' : 'x');
        sameLength(x.values, 'x', y, e.where + 'y');
        categorical = categorical || x.categorical;
      }
      values.push(y);
      var trace = {x: x ? x.values : y.map(function (_, i) { return i; }), y: y};
      if (e.name) trace.name = e.name;
      if (kind === 'bar') {
        trace.type = 'bar';
        traces.push(trace);
        return;
      }
      trace.type = 'scatter';
      trace.mode = kind === 'line' ? 'lines+markers' : 'markers';
      if (kind === 'line') {
        traces.push(trace);
        return;
      }
      var o = e.obj;
      if (o.z !== undefined) {
        trace.z = numbers(o.z, e.where + 'z');
        sameLength(trace.z, e.where + 'z', y, e.where + 'y');
        trace.type = 'scatter3d';
        trace.marker = {size: 3};
      }
      if (threeD !== null && threeD !== (o.z !== undefined)) fail('either every series has z (3-D) or none');
      threeD = o.z !== undefined;
      if (o.text !== undefined) {
        trace.text = strings(o.text, e.where + 'text');
        sameLength(trace.text, e.where + 'text', y, e.where + 'y');
      }
      if (o.color === undefined) {
        traces.push(trace);
        return;
      }
      var color = array(o.color, e.where + 'color');
      sameLength(color, e.where + 'color', y, e.where + 'y');
      if (color.every(function (c) { return c === null || isNumber(c); })) {
        trace.marker = Object.assign(trace.marker || {}, {color: color, colorscale: 'Viridis', showscale: true});
        traces.push(trace);
        return;
      }
      // One trace (and legend entry) per category, in order of first appearance.
      var groups = {}, order = [];
      color.forEach(function (c, i) {
        if (c !== null && typeof c !== 'string') fail(e.where + 'color must be all numbers or all strings; ' +
                                                      e.where + 'color[' + i + '] is ' + describe(c));
        var key = c === null ? '(none)' : text(c);
        if (!groups[key]) groups[key] = [], order.push(key);
        groups[key].push(i);
      });
      order.forEach(function (key) {
        var t = {type: trace.type, mode: trace.mode, name: e.name ? e.name + ': ' + key : key, legendgroup: key};
        ['x', 'y', 'z', 'text'].forEach(function (k) {
          if (trace[k]) t[k] = groups[key].map(function (i) { return trace[k][i]; });
        });
        if (trace.marker) t.marker = trace.marker;
        traces.push(t);
      });
    });
    var layout = {};
    if (threeD) {
      layout.scene = {xaxis: {title: {text: optionalString(spec, 'x_label', '')}},
                      yaxis: {title: {text: optionalString(spec, 'y_label', '')}},
                      zaxis: {title: {text: optionalString(spec, 'z_label', '')}}};
      if (categorical) layout.scene.xaxis.type = 'category';
      layout.height = 480;
    } else {
      layout.xaxis = {title: {text: optionalString(spec, 'x_label', '')}, automargin: true};
      if (categorical) layout.xaxis.type = 'category';
      layout.yaxis = {title: {text: optionalString(spec, 'y_label', '')}};
      if (kind === 'bar' && entries.length > 1) layout.barmode = 'group';
    }
    return {traces: traces, layout: layout, values: threeD ? null : values, zeroBased: kind === 'bar'};
  }

  function heatmap(spec) {
    if (spec.z === undefined) fail('heatmap needs z (rows of values)');
    var rows = array(spec.z, 'z');
    if (!rows.length) fail('z has no rows');
    var z = rows.map(function (r, i) { return numbers(r, 'z[' + i + ']'); });
    z.forEach(function (r, i) {
      if (r.length !== z[0].length)
        fail('ragged heatmap: z[0] has ' + z[0].length + ' values but z[' + i + '] has ' + r.length);
    });
    var trace = {type: 'heatmap', z: z, colorscale: 'Viridis'};
    var layout = {xaxis: {title: {text: optionalString(spec, 'x_label', '')}, automargin: true},
                  yaxis: {title: {text: optionalString(spec, 'y_label', '')}, autorange: 'reversed', automargin: true}};
    [['x', z[0].length, 'columns'], ['y', z.length, 'rows']].forEach(function (a) {
      if (spec[a[0]] === undefined || spec[a[0]] === null) return;
      var l = labels(spec[a[0]], a[0]);
      if (l.values.length !== a[1]) fail(a[0] + ' has ' + l.values.length + ' labels but z has ' + a[1] + ' ' + a[2]);
      trace[a[0]] = l.values;
      if (l.categorical) layout[a[0] + 'axis'].type = 'category';
    });
    if (spec.zmid !== undefined && spec.zmid !== null) {
      if (!isNumber(spec.zmid)) fail('zmid must be a number, not ' + describe(spec.zmid));
      trace.zmid = spec.zmid;
      trace.colorscale = 'RdBu';  // Plotly's RdBu: high values red, low blue
      trace.reversescale = false;
    }
    if (spec.text !== undefined && spec.text !== null) {  // a label written in each cell (and on hover)
      var cells = array(spec.text, 'text');
      if (cells.length !== z.length) fail('text has ' + cells.length + ' rows but z has ' + z.length);
      trace.text = cells.map(function (r, i) {
        var row = strings(r, 'text[' + i + ']');
        if (row.length !== z[i].length) fail('text[' + i + '] has ' + row.length + ' labels but z[' + i + '] has ' + z[i].length);
        return row;
      });
      trace.texttemplate = '%{text}';
      trace.hovertemplate = '%{x}, %{y}: %{text} (%{z})<extra></extra>';
    }
    var zLabel = optionalString(spec, 'z_label', '');
    if (zLabel) trace.colorbar = {title: {text: zLabel}};
    layout.height = Math.min(800, Math.max(300, 110 + 18 * z.length));
    return {traces: [trace], layout: layout, values: null, zValues: z};
  }

  // "values" (binned here by Plotly) or "x" bin centres + "y" counts (+ "width").
  function histogram(spec) {
    var layout = {xaxis: {title: {text: optionalString(spec, 'x_label', '')}},
                  yaxis: {title: {text: optionalString(spec, 'y_label', '') || 'count'}}, bargap: 0};
    if (spec.values !== undefined) {
      if (spec.x !== undefined || spec.y !== undefined) fail('give either values or x + y, not both');
      return {traces: [{type: 'histogram', x: numbers(spec.values, 'values')}], layout: layout, values: null};
    }
    if (spec.x === undefined || spec.y === undefined) fail('histogram needs values, or x (bin centres) and y (counts)');
    var x = numbers(spec.x, 'x'), y = numbers(spec.y, 'y');
    sameLength(x, 'x', y, 'y');
    var trace = {type: 'bar', x: x, y: y};
    if (spec.width !== undefined && spec.width !== null) {
      if (Array.isArray(spec.width)) {
        trace.width = numbers(spec.width, 'width');
        sameLength(trace.width, 'width', x, 'x');
      } else if (isNumber(spec.width) && spec.width > 0) {
        trace.width = spec.width;
      } else {
        fail('width must be a positive number or an array of numbers, not ' + describe(spec.width));
      }
    }
    return {traces: [trace], layout: layout, values: [y], zeroBased: true};
  }

  var kinds = {bar: xy, line: xy, scatter: xy, heatmap: heatmap, histogram: histogram};

  function build(spec) {
    if (!isObject(spec)) fail('a figure must be an object, not ' + describe(spec));
    if (typeof spec.kind !== 'string') fail('kind must be a string, not ' + describe(spec.kind));
    if (!Object.prototype.hasOwnProperty.call(kinds, spec.kind))
      fail('unknown kind "' + spec.kind.slice(0, 40) + '" (known: ' + Object.keys(kinds).join(', ') + ')');
    return kinds[spec.kind](spec, spec.kind);
  }

  // ---- animation ------------------------------------------------------------------------------------------

  // A fixed value-axis range over all frames, so that the axis does not jump while the animation plays.
  function fixRange(layout, built) {
    var e = {min: null, max: null};
    built.forEach(function (b) { extent(b.values || [], e); });
    if (e.min === null) return;
    if (built[0].zeroBased) e.min = Math.min(0, e.min), e.max = Math.max(0, e.max);
    var pad = (e.max - e.min) * 0.05 || Math.abs(e.max) * 0.05 || 1;
    layout.yaxis.range = [built[0].zeroBased && e.min === 0 ? 0 : e.min - pad, e.max + pad];
    layout.yaxis.autorange = false;
  }

  // A common colour range for animated heatmaps (centred on zmid when given).
  function fixColors(built) {
    var e = {min: null, max: null};
    built.forEach(function (b) { extent(b.zValues || [], e); });
    if (e.min === null) return;
    built.forEach(function (b) {
      b.traces.forEach(function (t) {
        if (t.zmid !== undefined) {
          var m = Math.max(Math.abs(e.max - t.zmid), Math.abs(e.min - t.zmid)) || 1;
          t.zmin = t.zmid - m, t.zmax = t.zmid + m;
        } else {
          t.zmin = e.min, t.zmax = e.max;
        }
      });
    });
  }

  function animate(spec, layout) {
    var list = array(spec.frames, 'frames');
    if (!list.length) fail('frames is empty');
    var built = list.map(function (f, i) {
      if (!isObject(f)) fail('frames[' + i + '] must be an object, not ' + describe(f));
      var merged = Object.assign({}, spec, f);
      delete merged.frames;
      try {
        return build(merged);
      } catch (err) {
        if (err instanceof FigureError) fail('frames[' + i + ']: ' + err.message);
        throw err;
      }
    });
    // Plotly animates trace i of a frame into trace i of the plot: give every frame the same trace count.
    var n = Math.max.apply(null, built.map(function (b) { return b.traces.length; }));
    built.forEach(function (b) {
      while (b.traces.length < n) b.traces.push({type: b.traces[0].type, x: [], y: [], showlegend: false});
    });
    Object.assign(layout, built[0].layout);
    if (built[0].values && layout.yaxis) fixRange(layout, built);
    fixColors(built);
    var names = list.map(function (f, i) {
      return typeof f.name === 'string' || isNumber(f.name) ? text(f.name) : 'frame ' + (i + 1);
    });
    var step = {mode: 'immediate', frame: {duration: 0, redraw: true}, transition: {duration: 0}};
    layout.sliders = [{
      active: 0, x: 0.1, len: 0.9, y: 0, yanchor: 'top', pad: {t: 60},
      currentvalue: {visible: true, xanchor: 'left'},
      steps: names.map(function (name, i) { return {label: name, method: 'animate', args: [[String(i)], step]}; })
    }];
    layout.updatemenus = [{
      type: 'buttons', direction: 'left', showactive: false, x: 0.1, y: 0, xanchor: 'right', yanchor: 'top',
      pad: {t: 78, r: 10},
      buttons: [{label: '\u25b6 Play', method: 'animate',
                 args: [null, {fromcurrent: true, frame: {duration: 700, redraw: true}, transition: {duration: 0}}]},
                {label: '\u275a\u275a', method: 'animate', args: [[null], step]}]
    }];
    layout.height = (layout.height || 340) + 110;
    layout.margin.b = 150;
    return {
      data: built[0].traces,
      frames: built.map(function (b, i) { return {name: String(i), data: b.traces}; })
    };
  }

  // ---- entry point ----------------------------------------------------------------------------------------

  // options.name: shown as the title when the spec has none (e.g. the figure's key in data["figures"]).
  function nscopeFigure(spec, options) {
    var name = options && typeof options.name === 'string' ? options.name : '';
    if (!isObject(spec)) fail('a figure must be an object, not ' + describe(spec));
    var title = optionalString(spec, 'title', '') || text(name);
    // Title on the left: the mode bar sits top right.
    var layout = {title: {text: title, font: {size: 13}, x: 0.01, xanchor: 'left'}, height: 340,
                  margin: {l: 60, r: 20, t: 48, b: 60}, font: {size: 11}};
    if (spec.frames !== undefined) {
      var anim = animate(spec, layout);
      return {data: anim.data, layout: layout, frames: anim.frames};
    }
    var b = build(spec);
    Object.assign(layout, b.layout);
    return {data: b.traces, layout: layout, frames: []};
  }

  nscopeFigure.Error = FigureError;
  nscopeFigure.text = text;
  root.nscopeFigure = nscopeFigure;
  if (typeof module === 'object' && module.exports) module.exports = nscopeFigure;
})(typeof window !== 'undefined' ? window : globalThis);
