// Node's @grpc/grpc-js-xds as a client of the mesh: unary calls to /demo.Reviews/Get.
//
// The backends (examples/reviews_server.py) answer their name as raw bytes, so no
// generated code: identity serializers and an empty request.
//
// One shot (GRPC_XDS_BOOTSTRAP names the bootstrap from `meshctl bootstrap`):
//
//   node xds_client.js xds:///reviews.default.svc.cluster.local:50051 100 [x-canary=true ...]
//     -> {"counts":{"reviews-v1-a":50,...},"errors":{}}
//
// Driven (tests/e2e/test_node_xds.py), as tests/e2e/native_driver.py: with no
// arguments, each stdin line is a JSON command and each stdout line its JSON result:
//
//   {"op": "calls", "target": "xds:///...", "n": 100, "metadata": [["k", "v"]],
//    "wait_for_ready": true, "timeout": 5}   -> {"counts": {...}, "errors": {...}}
//   {"op": "wait_for", "target": ..., "backend": "reviews-v2", "timeout": 10,
//    "consecutive": 20}                      -> {"ok": true, "seconds": 0.4}
//   {"op": "quit"}
'use strict';

const grpc = require('@grpc/grpc-js');
const readline = require('node:readline');

require('@grpc/grpc-js-xds').register();

const METHOD = '/demo.Reviews/Get';
const identity = (x) => x;
const clients = new Map();

function client(target) {
  if (!clients.has(target)) {
    clients.set(target, new grpc.Client(target, grpc.credentials.createInsecure()));
  }
  return clients.get(target);
}

// One call: resolves to [answer, null] or [null, status name]; never rejects.
function call(target, pairs, timeoutS, waitForReady) {
  const metadata = new grpc.Metadata({ waitForReady });
  for (const [key, value] of pairs) metadata.add(key, value);
  const deadline = new Date(Date.now() + timeoutS * 1000);
  return new Promise((resolve) => {
    client(target).makeUnaryRequest(METHOD, identity, identity, Buffer.alloc(0), metadata,
      { deadline }, (err, answer) => {
        if (err) resolve([null, grpc.status[err.code] ?? String(err.code)]);
        else resolve([answer.toString(), null]);
      });
  });
}

async function calls(cmd) {
  const counts = {};
  const errors = {};
  for (let i = 0; i < cmd.n; i++) {
    const [answer, error] = await call(cmd.target, cmd.metadata ?? [], cmd.timeout ?? 5,
      cmd.wait_for_ready ?? false);
    if (error) errors[error] = (errors[error] ?? 0) + 1;
    else counts[answer] = (counts[answer] ?? 0) + 1;
  }
  return { counts, errors };
}

// Call until `consecutive` (default 1) answers in a row come from `backend` (a prefix),
// or `timeout` seconds pass.
async function waitFor(cmd) {
  const start = Date.now();
  const deadline = start + (cmd.timeout ?? 10) * 1000;
  const wanted = cmd.consecutive ?? 1;
  let last = '';
  let streak = 0;
  while (Date.now() < deadline) {
    const [answer, error] = await call(cmd.target, cmd.metadata ?? [], 2, true);
    last = answer ?? error;
    streak = answer !== null && answer.startsWith(cmd.backend) ? streak + 1 : 0;
    if (streak >= wanted) return { ok: true, seconds: (Date.now() - start) / 1000 };
    if (!streak) await new Promise((r) => setTimeout(r, 10));
  }
  return { ok: false, last };
}

const OPS = { calls, wait_for: waitFor };

async function driven() {
  const lines = readline.createInterface({ input: process.stdin, terminal: false });
  for await (const line of lines) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    if (cmd.op === 'quit') break;
    process.stdout.write(JSON.stringify(await OPS[cmd.op](cmd)) + '\n');
  }
}

async function oneShot([target, n = '10', ...pairs]) {
  const metadata = pairs.map((p) => [p.slice(0, p.indexOf('=')), p.slice(p.indexOf('=') + 1)]);
  const result = await calls({ target, n: Number(n), metadata, wait_for_ready: true });
  process.stdout.write(JSON.stringify(result) + '\n');
}

(process.argv.length > 2 ? oneShot(process.argv.slice(2)) : driven()).then(
  () => process.exit(0),
  (err) => { console.error(err); process.exit(1); });
