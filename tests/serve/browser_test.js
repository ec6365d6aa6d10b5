// Drives the nscope serve dashboard in headless Chromium with puppeteer-core (run by tests/serve/test_serve.cpp):
//   node browser_test.js URL SCREENSHOT_DIR      (NODE_PATH has puppeteer-core, CHROMIUM the browser)
// Types a prompt, waits for the heatmap, clicks a cell, checks the neuron page, runs an edit, opens the
// attention and logit-lens tabs; a screenshot of each page; fails on any console error or page error.
'use strict';
const puppeteer = require('puppeteer-core');
const fs = require('fs');
const os = require('os');
const path = require('path');

const [url, shots] = process.argv.slice(2);
const errors = [];

async function main() {
  fs.mkdirSync(shots, {recursive: true});
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'nscope-chromium-'));
  // The flags this machine needs (no sandbox as root, no background connections to a closed network).
  const browser = await puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync',
           '--user-data-dir=' + profile],
  });
  try {
    const page = await browser.newPage();
    await page.setViewport({width: 1400, height: 1000});
    page.on('console', (m) => { if (m.type() === 'error') errors.push('console: ' + m.text()); });
    page.on('pageerror', (e) => errors.push('page error: ' + e.message));
    page.on('requestfailed', (r) => errors.push('request failed: ' + r.url()));
    page.on('response', (r) => { if (r.status() >= 400) errors.push('HTTP ' + r.status() + ': ' + r.url()); });

    page.setDefaultTimeout(120000);  // generous: CI machines run this beside other tests
    await page.goto(url, {waitUntil: 'load', timeout: 120000});
    await page.waitForFunction(() => document.getElementById('status').textContent === 'ready', {timeout: 120000});

    // Prompt -> heatmap.
    await page.click('#prompt', {clickCount: 3});
    await page.keyboard.type('In the beginning God created the heaven and the earth. And the earth was without form');
    await page.click('#run');
    await page.waitForSelector('.layer-plot .nsewdrag', {timeout: 120000});
    const layers = await page.$$eval('.layer-plot', (els) => els.length);
    if (layers !== 4) throw new Error('expected 4 layer heatmaps, got ' + layers);
    await page.screenshot({path: path.join(shots, 'serve-heatmap.png')});

    // Hover a cell: the tooltip names token, neuron and value.
    const plot = (await page.$$('.layer-plot'))[1];
    const drag = await plot.$('.nsewdrag');
    const box = await drag.boundingBox();
    const x = box.x + box.width * 0.1, y = box.y + box.height * 0.3;
    await page.mouse.move(x, y);
    await page.waitForSelector('.hoverlayer .hovertext', {timeout: 60000});
    const hover = await page.$eval('.hoverlayer .hovertext', (e) => e.textContent);
    if (!/token/.test(hover) || !/neuron n\d+/.test(hover) || !/value/.test(hover))
      throw new Error('hover text lacks token / neuron / value: ' + hover);

    // Click it -> the neuron page.
    await page.mouse.click(x, y);
    await page.waitForFunction(() => /neuron \d+/.test((document.querySelector('#neuron-page h2') || {}).textContent || ''),
                               {timeout: 120000});
    const title = await page.$eval('#neuron-page h2', (e) => e.textContent);
    if (!title.startsWith('blocks.1.mlp.hook_post')) throw new Error('clicked layer 1 but opened ' + title);
    await page.waitForSelector('#neuron-page .js-plotly-plot', {timeout: 60000});
    const promotes = await page.$$eval('#neuron-page table', (ts) => ts.some((t) => /promotes/.test(t.textContent)));
    if (!promotes) throw new Error('the neuron page has no direct-effect table');
    await page.screenshot({path: path.join(shots, 'serve-neuron.png'), fullPage: true});

    // Edit this neuron (scale by 25) -> before / after and KL.
    await page.click('#n-edit');
    await page.select('#e-op', 'scale');
    await page.click('#e-number', {clickCount: 3});
    await page.keyboard.type('25');
    await page.click('#e-run');
    await page.waitForFunction(() => /KL\(before/.test(document.getElementById('edit-result').textContent), {timeout: 120000});
    await page.screenshot({path: path.join(shots, 'serve-edit.png'), fullPage: true});

    // Attention and logit lens tabs.
    await page.click('nav button[data-tab=attention]');
    await page.click('#a-run');
    await page.waitForSelector('#head-scores .js-plotly-plot', {timeout: 120000});
    await page.screenshot({path: path.join(shots, 'serve-attention.png'), fullPage: true});
    await page.click('nav button[data-tab=lens]');
    await page.click('#l-run');
    await page.waitForSelector('#lens .js-plotly-plot', {timeout: 120000});
    await page.screenshot({path: path.join(shots, 'serve-lens.png'), fullPage: true});

    const boxes = await page.$$eval('.error-box', (els) => els.map((e) => e.textContent));
    if (boxes.length) throw new Error('error boxes on the page: ' + boxes.join(' | '));
  } finally {
    await browser.close();
    fs.rmSync(profile, {recursive: true, force: true});
  }
  console.log('console errors: ' + errors.length);
  errors.forEach((e) => console.log(e));
  if (errors.length) process.exit(1);
}

main().catch((e) => {
  console.log('FAILED: ' + (e.stack || e));
  errors.forEach((x) => console.log(x));
  process.exit(1);
});
