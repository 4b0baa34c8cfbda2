// What Grafana does around a datasource plugin, modelled for Node: the plugin's own
// code runs unchanged, and only Grafana's side is written here.
//
// * GrafanaBackendSrv.fetch: BackendSrv through the datasource proxy ("Server" access).
//   The plugin calls `/api/datasources/proxy/uid/<uid>/<path>`; Grafana joins the
//   datasource URL and <path> as util.JoinURLFragments does, adds the configured
//   headers (Authorization: Bearer <token>), rewrites a 401 from the datasource into a
//   400 "Bad Request" whose body is "Authentication to data source failed" (ds_proxy.go
//   modifyResponse), and hands any 3xx with its Location to the browser. The browser
//   follows it (fetch's redirect: 'follow') straight to that URL, with the plugin's
//   headers only; a cross-origin answer without Access-Control-Allow-Origin is a
//   network error ("Failed to fetch"). Bodies are parsed as BackendSrv does (JSON if
//   it parses, else text) and errors shaped as its processRequestError does.
// * TemplateSrv: $var, ${var}, ${var:fmt}, [[var]] with Grafana's regex/json/glob/...
//   formats over the dashboard's variables (current values) and scopedVars.
// * annotationsFromFrames: the default field mapping of Grafana's standard annotation
//   support (time, timeEnd, title, text, tags).
'use strict';

const http = require('node:http');
const { Observable } = require('rxjs');

const GRAFANA_ORIGIN = 'http://grafana.test:3000';
const GRAFANA_VERSION = '11.2.2';

/** Grafana's util.JoinURLFragments (pkg/util/url.go). */
function joinURLFragments(a, b) {
  if (b.length === 0) {
    return a;
  }
  const aslash = a.endsWith('/');
  const bslash = b.startsWith('/');
  if (aslash && bslash) {
    return a + b.slice(1);
  }
  if (!aslash && !bslash) {
    return a + '/' + b;
  }
  return a + b;
}

function send(url, { method, headers, body }) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, agent: false }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () =>
        resolve({ status: res.statusCode, headers: res.headers, text: Buffer.concat(chunks).toString('utf8') })
      );
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(60_000, () => req.destroy(new Error(`timeout: ${method} ${url}`)));
    if (body !== undefined) {
      req.write(body);
    }
    req.end();
  });
}

/** BackendSrv's parseResponseBody: JSON when it parses, else the text. */
function parseBody(text) {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** BackendSrv's processRequestError. */
function processRequestError(err) {
  err.data = err.data ?? { message: 'Unexpected error' };
  if (typeof err.data === 'string') {
    err.data = { message: err.data, error: err.statusText, response: err.data };
  }
  if (err.data && !err.data.message && typeof err.data.error === 'string') {
    err.data.message = err.data.error;
  }
  return err;
}

class GrafanaBackendSrv {
  /**
   * @param {object} ds  the datasource as configured in Grafana
   * @param {string} ds.url  its URL field, e.g. http://127.0.0.1:8080/datasource
   * @param {object} ds.headers  the custom HTTP headers (httpHeaderName1/Value1, ...)
   * @param {string} ds.proxyBase  the path the plugin sees as instanceSettings.url
   */
  constructor(ds) {
    this.ds = ds;
    this.exchanges = []; // every HTTP exchange, for the tests to inspect
  }

  fetch(options) {
    return new Observable((subscriber) => {
      this.request(options).then(
        (response) => {
          subscriber.next(response);
          subscriber.complete();
        },
        (err) => subscriber.error(err)
      );
    });
  }

  async request(options) {
    const method = (options.method || 'GET').toUpperCase();
    let body;
    const browserHeaders = { ...(options.headers || {}) };
    // Grafana's BackendSrv (public/app/core/utils/fetch.ts, defaultHeaderParser) sets this
    // Accept on every request that names none; the proxy passes it on.
    if (!Object.keys(browserHeaders).some((name) => name.toLowerCase() === 'accept')) {
      browserHeaders['Accept'] = 'application/json, text/plain, */*';
    }
    if (options.data !== undefined && method !== 'GET') {
      body = typeof options.data === 'string' ? options.data : JSON.stringify(options.data);
      browserHeaders['Content-Type'] = browserHeaders['Content-Type'] || 'application/json';
    }
    const url = options.url;
    if (!url.startsWith(this.ds.proxyBase)) {
      throw new Error(`the plugin called ${url}, not the datasource proxy ${this.ds.proxyBase}`);
    }
    // The proxy route is .../uid/:uid/*: the wildcard is the path after the uid.
    const proxyPath = url.slice(this.ds.proxyBase.length).replace(/^\/+/, '');
    const target = new URL(this.ds.url);
    target.pathname = joinURLFragments(target.pathname, proxyPath);
    const proxyHeaders = {
      ...browserHeaders,
      ...this.ds.headers,
      'User-Agent': `Grafana/${GRAFANA_VERSION}`,
      'X-Grafana-Org-Id': '1',
    };
    if (body !== undefined) {
      proxyHeaders['Content-Length'] = Buffer.byteLength(body);
    }
    let answer = await send(target, { method, headers: proxyHeaders, body });
    const exchange = { via: 'proxy', method, path: target.pathname, status: answer.status };
    this.exchanges.push(exchange);
    if (answer.status === 401) {
      exchange.rewritten_to = 400;
      const msg = 'Authentication to data source failed';
      answer = { status: 400, headers: {}, text: msg };
    }
    let finalUrl = `${GRAFANA_ORIGIN}${url}`;
    let redirected = false;
    let followMethod = method;
    let followBody = body;
    for (let hops = 0; answer.status >= 300 && answer.status < 400 && answer.headers.location; hops++) {
      if (hops >= 5) {
        throw this.networkError(options, 'too many redirects');
      }
      // The browser follows the redirect itself: not through the proxy, so without
      // the configured headers. 301/302/303 turn a POST into a GET without body.
      const location = new URL(answer.headers.location, finalUrl);
      exchange.location = answer.headers.location;
      if ([301, 302, 303].includes(answer.status) && followMethod !== 'GET') {
        followMethod = 'GET';
        followBody = undefined;
      }
      const headers = { ...browserHeaders, Origin: GRAFANA_ORIGIN };
      if (followBody === undefined) {
        delete headers['Content-Type'];
      } else {
        headers['Content-Length'] = Buffer.byteLength(followBody);
      }
      redirected = true;
      finalUrl = location.href;
      try {
        answer = await send(location, { method: followMethod, headers, body: followBody });
      } catch (e) {
        this.exchanges.push({ via: 'browser', method: followMethod, url: location.href, error: String(e) });
        throw this.networkError(options, 'Failed to fetch');
      }
      this.exchanges.push({ via: 'browser', method: followMethod, url: location.href, status: answer.status });
      const crossOrigin = location.origin !== GRAFANA_ORIGIN;
      const allowed = answer.headers['access-control-allow-origin'];
      if (crossOrigin && allowed !== '*' && allowed !== GRAFANA_ORIGIN) {
        throw this.networkError(options, 'Failed to fetch'); // CORS blocks the answer
      }
    }
    const response = {
      data: parseBody(answer.text),
      status: answer.status,
      statusText: http.STATUS_CODES[answer.status] || '',
      ok: answer.status >= 200 && answer.status < 300,
      headers: answer.headers,
      redirected,
      type: 'basic',
      url: finalUrl,
      config: options,
    };
    if (!response.ok) {
      throw processRequestError(response);
    }
    return response;
  }

  networkError(options, message) {
    const err = new TypeError(message);
    err.config = options;
    return processRequestError(err);
  }
}

// --- template service ------------------------------------------------------------------

// Grafana's variableRegex (public/app/features/variables/utils.ts).
const VARIABLE_REGEX = /\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\${(\w+)(?:\.([^:^}]+))?(?::([^}]+))?}/g;

/** kbn.regexEscape */
function regexEscape(value) {
  return value.replace(/[\\^$*+?.()|[\]{}/]/g, '\\$&');
}

const FORMATS = {
  regex: (v) => {
    if (typeof v === 'string') {
      return regexEscape(v);
    }
    const escaped = v.map(regexEscape);
    return escaped.length === 1 ? escaped[0] : '(' + escaped.join('|') + ')';
  },
  json: (v) => JSON.stringify(v),
  pipe: (v) => (typeof v === 'string' ? v : v.join('|')),
  csv: (v) => (Array.isArray(v) ? v.join(',') : v),
  raw: (v) => (Array.isArray(v) ? v.join(',') : v),
  glob: (v) => (Array.isArray(v) && v.length > 1 ? '{' + v.join(',') + '}' : String(v)),
};

class TemplateSrv {
  /** @param {Array<object>} variables  the dashboard's templating.list, with current values */
  constructor(variables = []) {
    this.variables = variables.map((v) => ({ id: v.name, ...v }));
    this.regex = VARIABLE_REGEX;
  }

  getVariables() {
    return this.variables;
  }

  valueOf(name, scopedVars) {
    if (scopedVars && Object.prototype.hasOwnProperty.call(scopedVars, name)) {
      return scopedVars[name].value;
    }
    const variable = this.variables.find((v) => v.name === name);
    if (!variable) {
      return undefined;
    }
    let value = variable.current.value;
    if (value === '$__all' || (Array.isArray(value) && value[0] === '$__all')) {
      value = variable.allValue || variable.options.slice(1).map((o) => o.value);
    }
    return value;
  }

  replace(target, scopedVars, format) {
    if (typeof target !== 'string') {
      return target;
    }
    this.regex.lastIndex = 0;
    return target.replace(this.regex, (match, var1, var2, fmt2, var3, _fieldPath, fmt3) => {
      const name = var1 || var2 || var3;
      const value = this.valueOf(name, scopedVars);
      if (value === undefined) {
        return match;
      }
      const fmt = fmt2 || fmt3 || format;
      if (typeof fmt === 'function') {
        return fmt(value);
      }
      const formatter = FORMATS[fmt] || FORMATS.glob;
      return formatter(value);
    });
  }

  containsTemplate(target) {
    this.regex.lastIndex = 0;
    return typeof target === 'string' && this.regex.test(target);
  }

  updateTimeRange() {}
}

// --- annotations -----------------------------------------------------------------------

/** Grafana's default annotation mapping of query frames (time, timeEnd, title, text, tags). */
function annotationsFromFrames(frames) {
  const out = [];
  for (const frame of frames) {
    const field = (name) => frame.fields.find((f) => f.name === name);
    const time = field('time') || frame.fields.find((f) => f.type === 'time');
    if (!time) {
      continue;
    }
    const timeEnd = field('timeEnd');
    const title = field('title');
    const text = field('text');
    const tags = field('tags');
    for (let i = 0; i < frame.length; i++) {
      const tagValue = tags ? tags.values[i] : undefined;
      out.push({
        time: time.values[i],
        timeEnd: timeEnd ? timeEnd.values[i] : undefined,
        title: title ? title.values[i] : undefined,
        text: text ? text.values[i] : undefined,
        tags: typeof tagValue === 'string' ? tagValue.split(',').map((t) => t.trim()) : tagValue ?? [],
      });
    }
  }
  return out;
}

module.exports = { GrafanaBackendSrv, TemplateSrv, annotationsFromFrames, joinURLFragments, GRAFANA_ORIGIN };
