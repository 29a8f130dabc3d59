// Runs sign-time.wasm (filter/sign-time) in node's V8 through WASI and
// prints, per algorithm, the microseconds per token: the range of each
// run's best round, and the median round. Several modules (builds to
// compare) run in turns, RUNS times each (a fresh instance each time), so
// the machine's load falls on all of them alike.
// Usage: RUNS=5 node filter/sign-time/run.mjs A.wasm [B.wasm ...]
import { readFileSync, openSync, closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WASI } from 'node:wasi';

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error('usage: RUNS=5 run.mjs SIGN_TIME_WASM...');
  process.exit(2);
}
const runs = Number(process.env.RUNS ?? 5);
// CLOCK=cpu (default): the module's monotonic clock reads this process's CPU
// time (process.cpuUsage, microseconds), so other processes on a busy
// machine do not count; CLOCK=wall: the real monotonic clock.
const cpuClock = (process.env.CLOCK ?? 'cpu') === 'cpu';
const MONOTONIC = 1;

/** The filter's proxy-wasm glue is linked in too: its imports are never called here. */
function stubs(module) {
  const env = {};
  for (const { module: from, name } of WebAssembly.Module.imports(module)) {
    if (from === 'env') {
      env[name] = () => {
        throw new Error(`${name} called outside a proxy`);
      };
    }
  }
  return env;
}

/** One run of `module`: the lines `<alg> <ns per token>` it printed. */
async function once(module, dir) {
  const out = join(dir, 'out');
  const fd = openSync(out, 'w');
  try {
    const wasi = new WASI({ version: 'preview1', args: ['sign-time'], stdout: fd, returnOnExit: true });
    const imports = wasi.getImportObject();
    let memory;
    if (cpuClock) {
      const preview1 = { ...imports.wasi_snapshot_preview1 };
      const clock = preview1.clock_time_get;
      preview1.clock_time_get = (id, precision, out) => {
        if (id !== MONOTONIC) return clock(id, precision, out);
        const { user, system } = process.cpuUsage();
        new DataView(memory.buffer).setBigUint64(out, BigInt(user + system) * 1000n, true);
        return 0;
      };
      imports.wasi_snapshot_preview1 = preview1;
    }
    const instance = await WebAssembly.instantiate(module, { ...imports, env: stubs(module) });
    memory = instance.exports.memory;
    // start() refuses a module that also exports the filter's `_initialize`.
    const code = wasi.start({ exports: { memory, _start: instance.exports._start } });
    if (code !== 0) throw new Error(`sign-time exited with ${code}`);
  } finally {
    closeSync(fd);
  }
  return readFileSync(out, 'utf8').trim().split('\n').map((line) => line.split(' '));
}

const modules = await Promise.all(files.map(async (f) => WebAssembly.compile(readFileSync(f))));
const times = files.map(() => new Map());
const dir = mkdtempSync(join(tmpdir(), 'sign-time-'));
try {
  for (let run = 0; run < runs; run++) {
    for (const [i, module] of modules.entries()) {
      const best = new Map();
      for (const [alg, ns] of await once(module, dir)) {
        const us = Number(ns) / 1000;
        if (!times[i].has(alg)) times[i].set(alg, { rounds: [], bests: [] });
        times[i].get(alg).rounds.push(us);
        best.set(alg, Math.min(best.get(alg) ?? Infinity, us));
      }
      for (const [alg, us] of best) times[i].get(alg).bests.push(us);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}
// The machine may be shared: a run's best round is its least disturbed one.
const f = (us) => us.toFixed(1);
for (const [i, file] of files.entries()) {
  if (files.length > 1) console.log(file);
  if (i === 0) console.log(`(${cpuClock ? 'CPU time of this process' : 'wall-clock time'})`);
  for (const [alg, { rounds, bests }] of times[i]) {
    rounds.sort((a, b) => a - b);
    bests.sort((a, b) => a - b);
    const median = rounds[Math.floor(rounds.length / 2)];
    console.log(
      `  ${alg.padEnd(6)} best of each run ${f(bests[0])}-${f(bests[bests.length - 1])} us per token, ` +
        `median round ${f(median)} (${runs} runs x ${rounds.length / runs} rounds)`,
    );
  }
}
