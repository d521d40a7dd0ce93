// ONNX Runtime peer of `make bench-peers`: times a BERT exported by
// export_onnx.py on ONNX Runtime's CPU execution provider (onnxruntime-node,
// whose CPU library ships inside the npm package, so it is installed with
// --ignore-scripts: the install script only fetches GPU extras).
//
//   node bench/peers/ort_peer.mjs --model M.onnx --preset base --shapes 8x128,1x128 --threads 2 [--ref R.json]
//       [--dtype int8 --max-err E --min-cosine C]
//
// With --ref the outputs are checked against PyTorch's before anything is
// timed: at most --max-err apart and cosine similarity at least --min-cosine
// (defaults for float32; quantize_onnx.py's INT8 model gets its own, from
// the driver). --dtype only labels the results.
// prints one JSON object per shape. --shapes - reads one shape (BxT) per
// line from stdin and answers each as soon as it is timed, which lets the
// Go driver interleave engines shape by shape while this process keeps its
// sessions. --ops adds "graph_ops" to each result: the operators of the
// graph after ONNX Runtime's optimizations, which show the fusions that
// applied.
//
// --spin both (the default) keeps two sessions, one whose intra-op threads
// spin between tasks (ONNX Runtime's default, the faster on an idle machine)
// and one whose threads block (the faster when other work shares the
// cores), alternates their runs and reports the faster: the peer is the
// baseline to beat, so it gets whichever setting suits the machine.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import ort from 'onnxruntime-node';

const VOCAB = 30522;

const { values: opt } = parseArgs({
  options: {
    model: { type: 'string' },
    preset: { type: 'string' },
    shapes: { type: 'string' },
    threads: { type: 'string', default: '2' },
    warmup: { type: 'string', default: '2' },
    runs: { type: 'string', default: '10' },
    'max-seconds': { type: 'string', default: '30' },
    ops: { type: 'boolean', default: false },
    ref: { type: 'string' },
    spin: { type: 'string', default: 'both' },
    dtype: { type: 'string', default: 'f32' },
    'max-err': { type: 'string', default: '1e-3' },
    'min-cosine': { type: 'string', default: '0.99999' },
  },
});

function die(msg) {
  process.stderr.write(`ort_peer: ${msg}\n`);
  process.exit(1);
}

function count(name) {
  const v = Number(opt[name]);
  if (!Number.isInteger(v) || v < 0) die(`--${name} ${opt[name]}: want a non-negative integer`);
  return v;
}

if (!opt.model || !opt.preset || !opt.shapes) die('--model, --preset and --shapes are required');
const threads = count('threads');
const warmup = count('warmup');
const runs = Math.max(1, count('runs'));
const maxSeconds = Number(opt['max-seconds']);
const spins = { both: [true, false], 1: [true], 0: [false] }[opt.spin];
if (!spins) die(`--spin ${opt.spin}: want both, 1 or 0`);
const maxErr = Number(opt['max-err']);
const minCosine = Number(opt['min-cosine']);
if (!(maxErr > 0) || !(minCosine > 0 && minCosine <= 1)) die('--max-err wants a positive number, --min-cosine one in (0, 1]');

async function open(spin, opsDir) {
  const options = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    extra: { session: { 'intra_op.allow_spinning': spin ? '1' : '0' } },
  };
  if (opsDir) {
    // The optimized graph goes to a file with its weights beside it, so
    // that only the small graph has to be read back.
    options.optimizedModelFilePath = join(opsDir, 'optimized.onnx');
    Object.assign(options.extra.session, {
      optimized_model_external_initializers_file_name: 'weights.bin',
      optimized_model_external_initializers_min_size_in_bytes: '1024',
    });
  }
  try {
    return await ort.InferenceSession.create(opt.model, options);
  } catch (e) {
    die(`loading ${opt.model}: ${e.message}`);
  }
}

// check compares the outputs with the reference (--ref, from export_onnx.py,
// computed by PyTorch in float32) where the mask is 1: the largest
// difference, and the cosine similarity of each output (the lower one is
// reported). A fusion that changed the results would make a fast peer
// worthless; a quantized model is held to its own bounds.
async function check(session, ref) {
  const batch = ref.input_ids.length;
  const seq = ref.input_ids[0].length;
  const tensor = (rows) => new ort.Tensor('int64', BigInt64Array.from(rows.flat(), BigInt), [batch, seq]);
  const out = await session.run({
    input_ids: tensor(ref.input_ids),
    attention_mask: tensor(ref.attention_mask),
    token_type_ids: tensor(ref.token_type_ids),
  });
  const mask = ref.attention_mask.flat();
  const hidden = out.last_hidden_state.data;
  const width = hidden.length / mask.length;
  let err = 0;
  const cosine = (got, want, use) => {
    let dot = 0;
    let gg = 0;
    let ww = 0;
    got.forEach((v, i) => {
      if (!use(i)) return;
      err = Math.max(err, Math.abs(v - want[i]));
      dot += v * want[i];
      gg += v * v;
      ww += want[i] * want[i];
    });
    return dot / Math.sqrt(gg * ww);
  };
  // Padded positions are free to differ: nothing attends to them.
  const cos = Math.min(
    cosine(hidden, ref.last_hidden_state, (i) => mask[Math.floor(i / width)]),
    cosine(out.pooler_output.data, ref.pooler_output, () => true),
  );
  return { err, cos };
}

// opTypes counts the nodes of an ONNX ModelProto by domain and op_type with
// a minimal protobuf walk (model.graph = field 7, graph.node = 1,
// node.op_type = 4, node.domain = 7), which spares a dependency on an ONNX
// parser for one look at the graph.
function opTypes(buf) {
  const counts = {};
  for (const [f, graph] of fields(buf)) {
    if (f !== 7) continue;
    for (const [g, node] of fields(graph)) {
      if (g !== 1) continue;
      let op = '';
      let domain = '';
      for (const [n, v] of fields(node)) {
        if (n === 4) op = v.toString('utf8');
        if (n === 7) domain = v.toString('utf8');
      }
      const key = domain && domain !== 'ai.onnx' ? `${domain}.${op}` : op;
      counts[key] = (counts[key] || 0) + 1;
    }
  }
  return Object.fromEntries(Object.entries(counts).sort());
}

// fields yields [field number, Buffer] for the length-delimited fields of a
// message and skips the others.
function* fields(buf) {
  let i = 0;
  const varint = () => {
    let v = 0;
    let mul = 1;
    for (;;) {
      const b = buf[i++];
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 128;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    switch (key & 7) {
      case 0: varint(); break;
      case 1: i += 8; break;
      case 2: {
        const n = varint();
        yield [field, buf.subarray(i, i + n)];
        i += n;
        break;
      }
      case 5: i += 4; break;
      default: throw new Error(`protobuf wire type ${key & 7} at byte ${i}`);
    }
  }
}

function feeds(batch, seq) {
  const n = batch * seq;
  const ids = new BigInt64Array(n);
  // A fixed LCG: the same tokens every run, no padding (the throughput case).
  let s = 12345;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) % 2147483648;
    ids[i] = BigInt(1000 + (s % (VOCAB - 1000)));
  }
  const dims = [batch, seq];
  return {
    input_ids: new ort.Tensor('int64', ids, dims),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), dims),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), dims),
  };
}

function quantile(sorted, q) {
  const x = q * (sorted.length - 1);
  const lo = Math.floor(x);
  const hi = Math.ceil(x);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (x - lo);
}

const sessions = [];
let graphOps;
let checkErr;
let checkCos;
for (const spin of spins) {
  const opsDir = opt.ops && sessions.length === 0 ? mkdtempSync(join(tmpdir(), 'ort-peer-')) : undefined;
  const session = await open(spin, opsDir);
  if (opsDir) {
    graphOps = opTypes(readFileSync(join(opsDir, 'optimized.onnx')));
    rmSync(opsDir, { recursive: true, force: true });
  }
  if (opt.ref) {
    const { err, cos } = await check(session, JSON.parse(readFileSync(opt.ref, 'utf8')));
    if (!(err <= maxErr) || !(cos >= minCosine)) {
      die(`${opt.model}: outputs differ from ${opt.ref} by up to ${err} (bound ${maxErr}), cosine ${cos} (bound ${minCosine})`);
    }
    checkErr = Math.max(checkErr ?? 0, err);
    checkCos = Math.min(checkCos ?? 1, cos);
  }
  sessions.push({ spin, session });
}

async function time(shape) {
  const m = /^(\d+)x(\d+)$/.exec(shape.trim());
  if (!m) die(`shape ${JSON.stringify(shape)}: want BxT, e.g. 8x128`);
  const batch = Number(m[1]);
  const seq = Number(m[2]);
  const f = feeds(batch, seq);
  for (const s of sessions) {
    s.ms = [];
    for (let i = 0; i < warmup; i++) await s.session.run(f);
  }
  const start = process.hrtime.bigint();
  // The sessions take turns run by run, so that a change in load hits both.
  // At least three timed runs each; past that, stop at --max-seconds so
  // that the largest shapes don't take the whole session.
  for (let n = 0; n < runs; n++) {
    let now;
    for (const s of sessions) {
      const t = process.hrtime.bigint();
      await s.session.run(f);
      now = process.hrtime.bigint();
      s.ms.push(Number(now - t) / 1e6);
    }
    if (n >= 2 && Number(now - start) / 1e9 > maxSeconds) break;
  }
  for (const s of sessions) {
    s.ms.sort((a, b) => a - b);
    s.median = quantile(s.ms, 0.5);
  }
  const [best, other] = [...sessions].sort((a, b) => a.median - b.median);
  process.stdout.write(JSON.stringify({
    engine: 'onnxruntime',
    dtype: opt.dtype,
    version: ort.env.versions.node,
    preset: opt.preset,
    batch,
    seq,
    threads,
    ms_per_batch: best.median,
    ms_p10: quantile(best.ms, 0.1),
    ms_p90: quantile(best.ms, 0.9),
    seq_per_s: batch / (best.median / 1000),
    runs: best.ms.length,
    spinning: best.spin,
    other_spinning_ms: other?.median,
    check_max_abs_err: checkErr,
    check_cosine: checkCos,
    graph_ops: graphOps,
  }) + '\n');
}

if (opt.shapes === '-') {
  for await (const line of createInterface({ input: process.stdin })) {
    if (line.trim()) await time(line);
  }
} else {
  for (const s of opt.shapes.split(',')) await time(s);
}
