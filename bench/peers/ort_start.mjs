// ONNX Runtime's start-up, the peer of `bertstream bench --load --ort-model`:
// one process that loads onnxruntime-node, creates a session for a BERT
// exported by export_onnx.py and answers one input of --seq tokens (batch 1,
// one segment, [CLS] ... [SEP]), as `bertstream predict` answers one
// sentence. The Go driver times the process from outside (wall time from
// its start, peak RSS from the kernel) and interleaves it with bertstream's
// runs; this script prints one JSON line with its own view: the
// onnxruntime-node version, and the milliseconds since the process started
// at which the import, the session and the answer were done.
//
//   node bench/peers/ort_start.mjs --model M.onnx --seq 13 --threads 2

import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: opt } = parseArgs({
  options: {
    model: { type: 'string' },
    seq: { type: 'string', default: '13' },
    threads: { type: 'string', default: '2' },
  },
});

function die(msg) {
  process.stderr.write(`ort_start: ${msg}\n`);
  process.exit(1);
}

// Milliseconds since the process started, as the driver's clock counts.
const sinceStart = () => process.uptime() * 1e3;

if (!opt.model) die('--model is required');
const seq = Number(opt.seq);
const threads = Number(opt.threads);
if (!Number.isInteger(seq) || seq < 2) die(`--seq ${opt.seq}: want an integer of at least 2`);
if (!Number.isInteger(threads) || threads < 1) die(`--threads ${opt.threads}: want a positive integer`);

const { default: ort } = await import('onnxruntime-node');
const imported = sinceStart();
const version = JSON.parse(readFileSync(new URL('./node_modules/onnxruntime-node/package.json', import.meta.url))).version;

const session = await ort.InferenceSession.create(opt.model, {
  intraOpNumThreads: threads,
  interOpNumThreads: 1,
  graphOptimizationLevel: 'all',
});
const created = sinceStart();

// [CLS], ids of ordinary word pieces, [SEP]: the values do not change the
// work, only the length does.
const ids = new BigInt64Array(seq);
ids[0] = 101n;
for (let i = 1; i < seq - 1; i++) ids[i] = BigInt(1000 + i);
ids[seq - 1] = 102n;
const feeds = {
  input_ids: new ort.Tensor('int64', ids, [1, seq]),
  attention_mask: new ort.Tensor('int64', new BigInt64Array(seq).fill(1n), [1, seq]),
  token_type_ids: new ort.Tensor('int64', new BigInt64Array(seq), [1, seq]),
};
const out = await session.run(feeds);
const answered = sinceStart();
const pooled = out.pooler_output?.data;
if (!pooled || !Number.isFinite(pooled[0])) die('the session gave no finite pooler_output');

process.stdout.write(JSON.stringify({
  ort_version: version,
  seq,
  threads,
  import_ms: imported,
  session_ms: created,
  first_answer_ms: answered,
}) + '\n');
