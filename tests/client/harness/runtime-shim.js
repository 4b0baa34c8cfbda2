// Stands in for the index of @grafana/runtime 11.2.2, which pulls in React and
// @grafana/ui. The plugin gets the package's own service singletons and helpers.
export { getBackendSrv, setBackendSrv, isFetchError } from '@grafana/runtime/dist/esm/services/backendSrv.js';
export { getTemplateSrv, setTemplateSrv } from '@grafana/runtime/dist/esm/services/templateSrv.js';
export { toDataQueryError } from '@grafana/runtime/dist/esm/utils/toDataQueryError.js';
