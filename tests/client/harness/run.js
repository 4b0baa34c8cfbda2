// The plugin's own DataSource in Node, driven over stdin/stdout by tests/client (pytest).
//
//   node harness/run.js <simpod-plugin-src dir>
//
// Reads one JSON step per line and answers one JSON line per step: what the plugin
// returned (or what Grafana would show for its error) and every HTTP exchange it
// caused. It asserts nothing itself: the tests do.
'use strict';

// @grafana/data reads these when it loads (README of shared/contracts).
globalThis.window = globalThis;
window.grafanaBootData = { settings: { featureToggles: {} }, user: { orgId: 1 } };

const readline = require('node:readline');
const { lastValueFrom } = require('rxjs');
const { dateTime } = require('@grafana/data');
const { loadPlugin } = require('./bundle');
const { GrafanaBackendSrv, TemplateSrv, annotationsFromFrames } = require('./grafana');

const PROXY_BASE = '/api/datasources/proxy/uid/';

function frameJson(frame) {
  return {
    name: frame.name,
    refId: frame.refId,
    length: frame.length,
    meta: frame.meta,
    fields: frame.fields.map((f) => ({
      name: f.name,
      type: f.type,
      labels: f.labels,
      values: Array.from(f.values),
    })),
  };
}

function timeRange(step) {
  const from = dateTime(step.range.from_ms);
  const to = dateTime(step.range.to_ms);
  return { from, to, raw: { from, to } };
}

/** A DataQueryRequest as a dashboard panel sends it. */
function panelRequest(step) {
  const range = timeRange(step);
  const intervalMs = step.intervalMs ?? 60_000;
  return {
    app: 'dashboard',
    requestId: 'Q1',
    timezone: 'browser',
    panelId: step.panelId ?? 1,
    dashboardUID: step.dashboardUID ?? 'client-tier',
    range,
    rangeRaw: range.raw,
    interval: `${Math.round(intervalMs / 1000)}s`,
    intervalMs,
    maxDataPoints: step.maxDataPoints ?? 500,
    targets: step.targets,
    scopedVars: {
      __interval: { text: `${Math.round(intervalMs / 1000)}s`, value: `${Math.round(intervalMs / 1000)}s` },
      __interval_ms: { text: String(intervalMs), value: intervalMs },
    },
    filters: step.filters,
    startTime: Date.now(),
  };
}

/** What the user reads when a panel's query fails (Grafana's toDataQueryError). */
function shownError(plugin, err) {
  const copy = err instanceof Error ? { message: err.message, data: err.data } : { ...err };
  const shown = plugin.toDataQueryError(copy);
  return { message: shown.message, status: err.status, statusText: err.statusText, data: err.data };
}

async function runStep(plugin, step) {
  const uid = step.ds.uid ?? 'plugin-backend';
  const backendSrv = new GrafanaBackendSrv({
    url: step.ds.url,
    headers: step.ds.token === undefined ? {} : { Authorization: `Bearer ${step.ds.token}` },
    proxyBase: PROXY_BASE + uid,
  });
  plugin.setBackendSrv(backendSrv);
  const templateSrv = new TemplateSrv(step.variables ?? []);
  plugin.setTemplateSrv(templateSrv);
  const ds = new plugin.DataSource(
    {
      id: 1,
      uid,
      type: 'simpod-json-datasource',
      name: 'plugin-backend',
      url: PROXY_BASE + uid, // "Server" access: the plugin talks to Grafana's proxy
      access: 'proxy',
      jsonData: {},
      meta: { id: 'simpod-json-datasource' },
      readOnly: false,
    },
    templateSrv
  );
  const out = {};
  try {
    switch (step.op) {
      case 'testDatasource':
        out.result = await ds.testDatasource();
        break;
      case 'query': {
        const response = await ds.query(panelRequest(step));
        out.frames = response.data.map(frameJson);
        break;
      }
      case 'annotations': {
        const request = panelRequest({ ...step, targets: [{ ...step.target, refId: 'Anno' }] });
        const response = await ds.query(request);
        out.frames = response.data.map(frameJson);
        out.annotations = annotationsFromFrames(response.data);
        break;
      }
      case 'metricFindQuery':
        out.values = await ds.metricFindQuery(step.query, { range: timeRange(step) });
        break;
      case 'variableQuery': {
        const request = { ...panelRequest(step), targets: [step.query] };
        const response = await lastValueFrom(ds.variables.query(request));
        out.values = response.data;
        break;
      }
      case 'getTagKeys':
        out.values = await ds.getTagKeys(step.options ?? {});
        break;
      case 'getTagValues':
        out.values = await ds.getTagValues(step.options);
        break;
      case 'listMetrics': {
        out.metrics = await ds.listMetrics(step.target ?? '', step.payload);
        // The query builder's check of each kind's payload fields (QueryBuilder.tsx).
        const { z } = require('zod');
        const schema = z.array(z.object({ name: z.string() }).passthrough());
        out.payloadCheck = out.metrics.map((m) => {
          const parsed = schema.safeParse(m.payloads ?? []);
          return { value: m.value, ok: parsed.success, issues: parsed.success ? [] : parsed.error.issues };
        });
        break;
      }
      case 'listMetricPayloadOptions':
        out.options = await ds.listMetricPayloadOptions(step.name, step.metric, step.payload);
        break;
      case 'processTarget':
        out.target = ds.processTarget(step.target, step.scopedVars);
        break;
      default:
        throw new Error(`unknown op ${step.op}`);
    }
  } catch (err) {
    out.error = shownError(plugin, err);
  }
  out.exchanges = backendSrv.exchanges;
  return out;
}

async function main() {
  const pluginSrc = process.argv[2];
  const plugin = await loadPlugin(pluginSrc);
  process.stdout.write(JSON.stringify({ ready: true }) + '\n');
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (!line.trim()) {
      continue;
    }
    let answer;
    try {
      answer = await runStep(plugin, JSON.parse(line));
    } catch (err) {
      answer = { harnessError: String(err && err.stack ? err.stack : err) };
    }
    process.stdout.write(JSON.stringify(answer) + '\n');
  }
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
