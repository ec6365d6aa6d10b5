// The neuron database schema (version 2), documented in docs/sqlite.md. Kept in its own header so the
// documentation and the code are easy to compare.
//
// Versions: 1 = the bespoke tables of the built-in analyzers; 2 adds result_tables / result_rows /
// result_figures (every other table and every figure, generically). Every statement is CREATE ... IF NOT
// EXISTS and a new version has only added tables so far, so running kSchema on an older database is its
// upgrade (the exporter then records the new version).
#pragma once

namespace nscope_sqlite {

constexpr int kSchemaVersion = 2;

constexpr const char* kSchema = R"SQL(
CREATE TABLE IF NOT EXISTS schema_version (
  version        INTEGER NOT NULL,
  created_at     TEXT NOT NULL,
  nscope_version TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS models (
  model_id     INTEGER PRIMARY KEY,
  name         TEXT NOT NULL,              -- model path or hub id as the recipe named it
  fingerprint  TEXT NOT NULL DEFAULT '',   -- sha256 of config + weight files (manifest), comma-joined
  architecture TEXT,
  n_layers     INTEGER,
  d_model      INTEGER,
  d_mlp        INTEGER,
  vocab_size   INTEGER,
  info_json    TEXT,
  UNIQUE (name, fingerprint)
);

CREATE TABLE IF NOT EXISTS runs (
  run_id         INTEGER PRIMARY KEY,
  name           TEXT NOT NULL,              -- recipe name (runs/<name>/...)
  run_key        TEXT NOT NULL,              -- run directory id (runs/<name>/<run_key>)
  label          TEXT NOT NULL DEFAULT '',   -- model label in multi-model runs, else ''
  model_id       INTEGER NOT NULL REFERENCES models (model_id),
  run_dir        TEXT NOT NULL,
  started        TEXT,
  seed           INTEGER,
  nscope_version TEXT,
  n_prompts      INTEGER NOT NULL,
  n_tokens       INTEGER NOT NULL,
  recipe_json    TEXT,
  exported_at    TEXT NOT NULL,
  UNIQUE (name, run_key, label)
);

CREATE TABLE IF NOT EXISTS analyses (
  run_id       INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
  analysis     TEXT NOT NULL,                -- analysis id in the recipe
  plugin       TEXT NOT NULL,                -- analyzer plugin (use:)
  summary_json TEXT,
  PRIMARY KEY (run_id, analysis)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS prompts (
  run_id      INTEGER NOT NULL REFERENCES runs (run_id) ON DELETE CASCADE,
  prompt      INTEGER NOT NULL,              -- global prompt index in the run
  text        TEXT NOT NULL,
  labels_json TEXT,
  n_tokens    INTEGER NOT NULL,
  PRIMARY KEY (run_id, prompt)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS tokens (
  run_id   INTEGER NOT NULL,
  prompt   INTEGER NOT NULL,
  position INTEGER NOT NULL,
  token_id INTEGER,                          -- NULL when the ids were not seen
  token    TEXT NOT NULL,                    -- decoded token text
  PRIMARY KEY (run_id, prompt, position),
  FOREIGN KEY (run_id, prompt) REFERENCES prompts (run_id, prompt) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tokens_by_token ON tokens (token, run_id);
CREATE INDEX IF NOT EXISTS tokens_by_id ON tokens (token_id, run_id);

CREATE TABLE IF NOT EXISTS neurons (
  neuron_id INTEGER PRIMARY KEY,
  model_id  INTEGER NOT NULL REFERENCES models (model_id),
  hook      TEXT NOT NULL,                   -- blocks.3.mlp.hook_post
  layer     INTEGER NOT NULL,                -- 3; -1 outside the blocks
  neuron    INTEGER NOT NULL,                -- index in the hook's last (flattened) dimension
  UNIQUE (model_id, hook, neuron)
);
CREATE INDEX IF NOT EXISTS neurons_by_layer ON neurons (layer, hook, neuron);
CREATE INDEX IF NOT EXISTS neurons_by_hook ON neurons (hook, neuron);

CREATE TABLE IF NOT EXISTS neuron_stats (    -- from `stats` results
  run_id        INTEGER NOT NULL,
  analysis      TEXT NOT NULL,
  neuron_id     INTEGER NOT NULL REFERENCES neurons (neuron_id),
  count         INTEGER,
  mean          REAL,
  std           REAL,
  min           REAL,
  max           REAL,
  frac_active   REAL,
  frac_positive REAL,
  skewness      REAL,
  kurtosis      REAL,
  threshold     REAL,
  PRIMARY KEY (run_id, analysis, neuron_id),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS neuron_stats_by_neuron ON neuron_stats (neuron_id, run_id);

CREATE TABLE IF NOT EXISTS neuron_flags (    -- from `dead` results: one row per neuron and category
  run_id      INTEGER NOT NULL,
  analysis    TEXT NOT NULL,
  neuron_id   INTEGER NOT NULL REFERENCES neurons (neuron_id),
  category    TEXT NOT NULL CHECK (category IN ('dead', 'always_on', 'flat')),
  max         REAL,
  frac_active REAL,
  mean        REAL,
  std         REAL,
  PRIMARY KEY (run_id, analysis, neuron_id, category),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS neuron_flags_by_category ON neuron_flags (category, run_id);
CREATE INDEX IF NOT EXISTS neuron_flags_by_neuron ON neuron_flags (neuron_id);

CREATE TABLE IF NOT EXISTS hook_health (     -- from `dead` results: counts per hook, zeros included
  run_id    INTEGER NOT NULL,
  analysis  TEXT NOT NULL,
  hook      TEXT NOT NULL,
  layer     INTEGER NOT NULL,
  neurons   INTEGER NOT NULL,
  tokens    INTEGER NOT NULL,
  dead      INTEGER NOT NULL,
  always_on INTEGER NOT NULL,
  flat      INTEGER NOT NULL,
  PRIMARY KEY (run_id, analysis, hook),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS top_examples (    -- from `topk` results (top_activations)
  run_id    INTEGER NOT NULL,
  analysis  TEXT NOT NULL,
  source    TEXT NOT NULL,                   -- hook, or group:<name>
  neuron    INTEGER NOT NULL,                -- neuron index, -1 for groups
  rank      INTEGER NOT NULL,                -- 1 = highest
  neuron_id INTEGER REFERENCES neurons (neuron_id),   -- NULL for groups
  value     REAL,
  prompt    INTEGER NOT NULL,
  position  INTEGER NOT NULL,
  token_id  INTEGER,
  token     TEXT,
  before    TEXT,                            -- context text before the token
  after     TEXT,                            -- context text after the token
  context   TEXT,                            -- before || token || after
  PRIMARY KEY (run_id, analysis, source, neuron, rank),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE,
  FOREIGN KEY (run_id, prompt) REFERENCES prompts (run_id, prompt)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS top_examples_by_neuron ON top_examples (neuron_id, rank);
CREATE INDEX IF NOT EXISTS top_examples_by_token ON top_examples (token, value);
CREATE INDEX IF NOT EXISTS top_examples_by_token_id ON top_examples (token_id);
CREATE INDEX IF NOT EXISTS top_examples_by_prompt ON top_examples (run_id, prompt);

CREATE TABLE IF NOT EXISTS top_ngrams (      -- from `topk` results (top_ngrams_max / top_ngrams_mean)
  run_id    INTEGER NOT NULL,
  analysis  TEXT NOT NULL,
  source    TEXT NOT NULL,
  neuron    INTEGER NOT NULL,
  kind      TEXT NOT NULL CHECK (kind IN ('max', 'mean')),
  n         INTEGER NOT NULL,
  rank      INTEGER NOT NULL,
  neuron_id INTEGER REFERENCES neurons (neuron_id),
  ngram     TEXT,
  ids       TEXT,                            -- space-separated token ids
  value     REAL,                            -- max or mean activation
  count     INTEGER,                         -- mean lists: occurrences
  exact     INTEGER,                         -- mean lists: 1 if no occurrence was evicted
  prompt    INTEGER,                         -- max lists: where the max occurred
  position  INTEGER,
  PRIMARY KEY (run_id, analysis, source, neuron, kind, n, rank),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS top_ngrams_by_ngram ON top_ngrams (ngram, kind, n);
CREATE INDEX IF NOT EXISTS top_ngrams_by_neuron ON top_ngrams (neuron_id);

CREATE TABLE IF NOT EXISTS prompt_comparisons (   -- from `compare` results (pairs)
  run_id   INTEGER NOT NULL,
  analysis TEXT NOT NULL,
  pair     INTEGER NOT NULL,
  a        INTEGER NOT NULL,
  b        INTEGER NOT NULL,
  hook     TEXT NOT NULL,
  layer    INTEGER NOT NULL,
  cosine   REAL,
  mse      REAL,
  PRIMARY KEY (run_id, analysis, pair, hook),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE,
  FOREIGN KEY (run_id, a) REFERENCES prompts (run_id, prompt),
  FOREIGN KEY (run_id, b) REFERENCES prompts (run_id, prompt)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS comparison_neurons (   -- from `compare` results (top_neurons)
  run_id    INTEGER NOT NULL,
  analysis  TEXT NOT NULL,
  pair      INTEGER NOT NULL,
  hook      TEXT NOT NULL,
  rank      INTEGER NOT NULL,
  neuron_id INTEGER NOT NULL REFERENCES neurons (neuron_id),
  a_value   REAL,
  b_value   REAL,
  diff      REAL,                            -- b_value - a_value
  PRIMARY KEY (run_id, analysis, pair, hook, rank),
  FOREIGN KEY (run_id, analysis, pair, hook) REFERENCES prompt_comparisons (run_id, analysis, pair, hook)
    ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS comparison_neurons_by_neuron ON comparison_neurons (neuron_id);

-- Version 2: every table of every analysis that no bespoke table above stores, and every figure
-- (sdk/include/nscope/result.h: data["tables"][name], data["figures"][name]).
CREATE TABLE IF NOT EXISTS result_tables (
  run_id       INTEGER NOT NULL,
  analysis     TEXT NOT NULL,
  name         TEXT NOT NULL,                -- table name in the result (pair_effects)
  title        TEXT,                         -- optional caption
  columns_json TEXT NOT NULL,                -- JSON array of the column names, in order
  n_rows       INTEGER NOT NULL,
  PRIMARY KEY (run_id, analysis, name),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS result_tables_by_name ON result_tables (analysis, name);

-- Key order (analysis, name, run_id, row): "this table of that analysis, across runs" is a key prefix,
-- and so is the (run_id, analysis, name) lookup of the cascade from result_tables.
CREATE TABLE IF NOT EXISTS result_rows (
  run_id      INTEGER NOT NULL,
  analysis    TEXT NOT NULL,
  name        TEXT NOT NULL,
  row         INTEGER NOT NULL,              -- 0-based, in the result's order
  values_json TEXT NOT NULL,                 -- {"column": value, ...} in column order
  PRIMARY KEY (analysis, name, run_id, row),
  FOREIGN KEY (run_id, analysis, name) REFERENCES result_tables (run_id, analysis, name) ON DELETE CASCADE
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS result_figures (
  run_id    INTEGER NOT NULL,
  analysis  TEXT NOT NULL,
  name      TEXT NOT NULL,                   -- figure name in the result (kl_by_pair)
  kind      TEXT,                            -- bar, line, scatter, heatmap, histogram (NULL if not a string)
  title     TEXT,
  spec_json TEXT NOT NULL,                   -- the whole figure object
  PRIMARY KEY (run_id, analysis, name),
  FOREIGN KEY (run_id, analysis) REFERENCES analyses (run_id, analysis) ON DELETE CASCADE
) WITHOUT ROWID;
)SQL";

}  // namespace nscope_sqlite
