// Bundles the plugin's own sources (src/DataSource.ts and what it imports) with
// esbuild for Node (cjs). npm packages stay external and load from ../node_modules,
// except @grafana/runtime's index (see runtime-shim.js) and the React editor.
'use strict';

const path = require('node:path');
const Module = require('node:module');
const esbuild = require('esbuild');

const HERE = __dirname;

function resolverPlugin() {
  return {
    name: 'grafana-in-node',
    setup(build) {
      build.onResolve({ filter: /^@grafana\/runtime$/ }, () => ({
        path: path.join(HERE, 'runtime-shim.js'),
      }));
      build.onResolve({ filter: /^@grafana\/runtime\/dist\/esm\// }, (args) => ({
        path: require.resolve(args.path, { paths: [HERE] }),
      }));
      build.onResolve({ filter: /(^|\/)Component\/VariableQueryEditor$/ }, () => ({
        path: path.join(HERE, 'VariableQueryEditor.stub.js'),
      }));
      // Every other bare import (an npm package) is required at run time.
      build.onResolve({ filter: /^[^./]/ }, (args) =>
        args.kind === 'entry-point' ? undefined : { path: args.path, external: true }
      );
    },
  };
}

/** The plugin's DataSource class plus the runtime service setters, loaded in this process. */
async function loadPlugin(pluginSrcDir) {
  const dataSourceTs = path.join(pluginSrcDir, 'src', 'DataSource.ts');
  const entry = [
    `export { DataSource } from ${JSON.stringify(dataSourceTs)};`,
    "export { setBackendSrv, setTemplateSrv, toDataQueryError } from '@grafana/runtime';",
  ].join('\n');
  const result = await esbuild.build({
    stdin: { contents: entry, resolveDir: HERE, sourcefile: 'entry.js', loader: 'js' },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node18',
    write: false,
    logLevel: 'silent',
    plugins: [resolverPlugin()],
  });
  const filename = path.join(HERE, 'plugin.bundle.js'); // never written: resolution base only
  const mod = new Module(filename, module);
  mod.filename = filename;
  mod.paths = Module._nodeModulePaths(HERE);
  mod._compile(result.outputFiles[0].text, filename);
  return mod.exports;
}

module.exports = { loadPlugin };
