// Many concurrent SSE streams through a proxy (tollgate or nginx), for
// bench/proxy/run.sh.
//
// Opens `--streams` chat streams through the proxy over `--ramp-ms`: each
// asks the mock for `--chunks` content chunks `--delay-ms` apart, and a
// stream that ends is replaced at once, so the count stays at its target.
// Once every stream has its response head, for `--seconds`:
//   - `--probe-loops` loops of probes alternate between the mock directly and
//     the proxy: the same short stream (`--probe-chunks` chunks, same pace),
//     timed from the call to the response head (TTFB) and to the first
//     `data:` event. The two probes of a pair run back to back under the
//     same background load, so their difference is the time the proxy adds
//     (reported as percentiles of the per-pair differences);
//   - the proxy's resident memory (VmRSS of `--pid`) is sampled every 50 ms;
//     idle is its level before the streams open (after a short warm-up).
// Prints one JSON object on stdout. Node's own http module, no packages; the
// whole run is bounded by a hard time limit.
//
//   node streams.mjs --proxy URL --key BEARER --direct URL --pid PID
//                    [--streams 1000] [--chunks 200] [--delay-ms 100]
//                    [--seconds 10] [--ramp-ms 1000] [--probe-chunks 1] [--probe-loops 16]
import http from 'node:http';
import fs from 'node:fs';

const opts = {
  proxy: '', key: '', direct: '', pid: 0,
  streams: 1000, chunks: 200, 'delay-ms': 100, seconds: 10, 'ramp-ms': 1000, 'probe-chunks': 1, 'probe-loops': 16,
};
for (let i = 2; i < process.argv.length; i += 2) {
  const name = process.argv[i].replace(/^--/, '');
  if (!(name in opts) || i + 1 >= process.argv.length) {
    console.error(`streams.mjs: unknown or incomplete option ${process.argv[i]}`);
    process.exit(2);
  }
  opts[name] = typeof opts[name] === 'number' ? Number(process.argv[i + 1]) : process.argv[i + 1];
}
if (!opts.proxy || !opts.key || !opts.direct || !opts.pid) {
  console.error('streams.mjs: --proxy, --key, --direct and --pid are required');
  process.exit(2);
}

// Hard bound on the whole run, whatever happens to the servers.
const hardStopMs = (opts.seconds + 30) * 1000 + opts.chunks * opts['delay-ms'] * 4;
setTimeout(() => { console.error('streams.mjs: hard time limit reached'); process.exit(1); }, hardStopMs).unref();

const rssKiB = () => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${opts.pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
};
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const pct = (xs, p) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
};

const body = (chunks) => JSON.stringify({
  model: 'openai/gpt-4o-mini',
  messages: [{ role: 'user', content: 'Say hello in five words.' }],
  max_tokens: chunks,
  stream: true,
});

// One stream request. Resolves with its timings; never rejects. `onHead`,
// if given, is called when the response head arrives.
function streamOnce(url, bearer, agent, chunks, delayMs, onHead) {
  return new Promise((resolve) => {
    const payload = body(chunks);
    const t0 = nowMs();
    let head = NaN;
    let firstData = NaN;
    let bytes = 0;
    let prev = null;  // the last two reads: enough to find "[DONE]" even if a read splits it
    let last = null;
    const req = http.request(url, {
      method: 'POST',
      agent,
      headers: {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(payload),
        authorization: `Bearer ${bearer}`,
        'x-mock-tokens': String(chunks),
        'x-mock-delay-ms': String(delayMs),
      },
    }, (res) => {
      head = nowMs() - t0;
      if (onHead) onHead();
      res.on('data', (b) => {
        bytes += b.length;
        if (Number.isNaN(firstData)) {
          const s = b.toString('latin1');
          if (s.includes('data:')) firstData = nowMs() - t0;
        }
        prev = last;
        last = b;
      });
      res.on('end', () => {
        const tail = Buffer.concat([prev ?? Buffer.alloc(0), last ?? Buffer.alloc(0)]).toString('latin1');
        resolve({ status: res.statusCode, head, firstData, bytes, done: tail.includes('[DONE]'), error: null });
      });
      res.on('error', (e) => resolve({ status: res.statusCode, head, firstData, bytes, done: false, error: e.message }));
    });
    req.on('error', (e) => resolve({ status: 0, head, firstData, bytes, done: false, error: e.message }));
    req.end(payload);
  });
}

const result = { options: opts };

// Warm up: connections in both pools, the proxy's upstream pool, the heap.
const warmAgent = new http.Agent({ keepAlive: true, maxSockets: 16 });
await Promise.all(Array.from({ length: 64 }, () => streamOnce(opts.proxy, opts.key, warmAgent, 4, 0)));
await Promise.all(Array.from({ length: 64 }, () => streamOnce(opts.direct, 'sk-or-v1-bench', warmAgent, 4, 0)));
warmAgent.destroy();
await sleep(500);
const idleSamples = [];
for (let i = 0; i < 5; i++) { idleSamples.push(rssKiB()); await sleep(20); }
result.rss_idle_kib = Math.max(...idleSamples);

// The background streams.
const bgAgent = new http.Agent({ keepAlive: true, maxSockets: Infinity, maxFreeSockets: opts.streams });
let running = true;
let open = 0;
let maxOpen = 0;
const bg = { started: 0, completed: 0, bad: 0, errors: [], head: [], firstData: [] };
let headsSeen = 0;  // background streams whose response head has arrived
async function keepOneOpen() {
  while (running) {
    open++;
    bg.started++;
    if (open > maxOpen) maxOpen = open;
    const r = await streamOnce(opts.proxy, opts.key, bgAgent, opts.chunks, opts['delay-ms'], () => { headsSeen++; });
    open--;
    if (r.status === 200 && r.done && !r.error) {
      bg.completed++;
      bg.head.push(r.head);
      bg.firstData.push(r.firstData);
    } else {
      bg.bad++;
      if (bg.errors.length < 5) bg.errors.push(`status ${r.status} done ${r.done} ${r.error ?? ''}`);
      await sleep(10);  // a failing proxy must not be hammered in a tight loop
    }
  }
}

const rss = { peak: 0, peakOpen: 0, atFull: [] };
const sampler = setInterval(() => {
  const v = rssKiB();
  if (v > rss.peak) { rss.peak = v; rss.peakOpen = open; }
  if (open >= opts.streams) rss.atFull.push(v);
}, 50);

const tStart = nowMs();
const workers = [];
for (let i = 0; i < opts.streams; i++) {
  workers.push(keepOneOpen());
  await sleep(opts['ramp-ms'] / opts.streams);
}
// The probes start once every stream of the ramp has its response head, so
// they measure the steady state (streams ending and being replaced), not the
// queue of the ramp itself.
while (headsSeen < opts.streams && nowMs() - tStart < 30000) await sleep(10);
const rampMs = nowMs() - tStart;

// Probes: `--probe-loops` loops, each alternating between the mock directly
// and the proxy on its own two keep-alive connections.
const probes = { direct: { head: [], firstData: [], bad: 0 }, proxy: { head: [], firstData: [], bad: 0 } };
const paired = { head: [], firstData: [] };
const probeAgents = [];
const probeUntil = nowMs() + opts.seconds * 1000;
async function probeLoop() {
  const agents = {
    direct: new http.Agent({ keepAlive: true, maxSockets: 1 }),
    proxy: new http.Agent({ keepAlive: true, maxSockets: 1 }),
  };
  probeAgents.push(agents.direct, agents.proxy);
  while (nowMs() < probeUntil) {
    const got = {};
    for (const name of ['direct', 'proxy']) {
      const url = name === 'direct' ? opts.direct : opts.proxy;
      const bearer = name === 'direct' ? 'sk-or-v1-bench' : opts.key;
      const r = await streamOnce(url, bearer, agents[name], opts['probe-chunks'], opts['delay-ms']);
      if (r.status === 200 && r.done) {
        probes[name].head.push(r.head);
        probes[name].firstData.push(r.firstData);
        got[name] = r;
      } else {
        probes[name].bad++;
      }
    }
    // The two probes of a pair ran back to back under the same load: their
    // difference is what the proxy added to that request.
    if (got.direct && got.proxy) {
      paired.head.push(got.proxy.head - got.direct.head);
      paired.firstData.push(got.proxy.firstData - got.direct.firstData);
    }
  }
}
await Promise.all(Array.from({ length: opts['probe-loops'] }, probeLoop));
running = false;
await Promise.all(workers);
const cpu = process.cpuUsage();
clearInterval(sampler);
const elapsedS = (nowMs() - tStart) / 1000;
bgAgent.destroy();
for (const agent of probeAgents) agent.destroy();

const summary = (xs) => ({ n: xs.length, p50: pct(xs, 50), p90: pct(xs, 90), p99: pct(xs, 99) });
result.ramp_ms = rampMs;
result.elapsed_s = elapsedS;
result.max_open = maxOpen;
result.background = {
  started: bg.started, completed: bg.completed, bad: bg.bad, errors: bg.errors,
  head_ms: summary(bg.head), first_data_ms: summary(bg.firstData),
};
result.probes = {
  direct: { bad: probes.direct.bad, head_ms: summary(probes.direct.head), first_data_ms: summary(probes.direct.firstData) },
  proxy: { bad: probes.proxy.bad, head_ms: summary(probes.proxy.head), first_data_ms: summary(probes.proxy.firstData) },
};
// Per open stream: the highest RSS seen while all the streams were open,
// above idle. The overall peak (which can come later, as the allocator
// keeps freed memory) is reported too.
result.rss_full_max_kib = rss.atFull.length ? Math.max(...rss.atFull) : NaN;
result.rss_full_samples = rss.atFull.length;
result.added_ms = { head: summary(paired.head), first_data: summary(paired.firstData) };
result.rss_peak_kib = rss.peak;
result.rss_peak_open = rss.peakOpen;
result.kib_per_stream = (result.rss_full_max_kib - result.rss_idle_kib) / opts.streams;
result.client_cpu_s = (cpu.user + cpu.system) / 1e6;
process.stdout.write(`${JSON.stringify(result)}\n`);
