// grpc-js-xds's own bootstrap validation over each file named on the command line:
// one JSON line per file, {"file": ..., "ok": true} or {"file": ..., "error": "..."}.
// (Its channels swallow this error: a refused bootstrap shows up only as UNAVAILABLE
// "Cannot read properties of null (reading 'clientDefaultListenerResourceNameTemplate')".)
'use strict';

const fs = require('node:fs');
const { validateBootstrapConfig } = require('@grpc/grpc-js-xds/build/src/xds-bootstrap');

for (const file of process.argv.slice(2)) {
  try {
    validateBootstrapConfig(JSON.parse(fs.readFileSync(file, 'utf8')));
    process.stdout.write(JSON.stringify({ file, ok: true }) + '\n');
  } catch (err) {
    process.stdout.write(JSON.stringify({ file, error: err.message }) + '\n');
  }
}
