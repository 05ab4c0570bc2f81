#!/usr/bin/env python3
"""Writes the bad-input corpus: one folder per case with `command` (the dptrain arguments;
{case} is the case folder, {out} a fresh output folder) and `expected` (a substring the
error message must contain), plus the case's input files. Run from this folder:
    python3 make_corpus.py
The corpus is committed; this script documents how it was made."""
import gzip, hashlib, os, shutil, struct

HERE = os.path.dirname(os.path.abspath(__file__))
GOOD = '''name = "bad"
seed = 0

[data]
dataset = "mnist"
dir = "datasets/mnist"

[model]
kind = "logreg"

[privacy]
target_epsilon = 3.0
delta = 1e-5
clip_norm = 1.0

[training]
epochs = 0.01
expected_batch_size = 256
optimizer = { name = "sgd", learning_rate = 0.3 }
'''

def case(name, command, expected, files=None):
    d = os.path.join(HERE, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    with open(os.path.join(d, "command"), "w") as f:
        f.write(command + "\n")
    with open(os.path.join(d, "expected"), "w") as f:
        f.write(expected + "\n")
    for fname, content in (files or {}).items():
        mode = "wb" if isinstance(content, bytes) else "w"
        with open(os.path.join(d, fname), mode) as f:
            f.write(content)

def config(name, old, new, expected):
    text = GOOD.replace(old, new)
    assert text != GOOD or old == new, name
    case(name, "train {case}/config.toml --out {out}", expected, {"config.toml": text})

# --- configs
config("config-unknown-top-level-key", 'seed = 0', 'seed = 0\nseeds = 1', "unknown field `seeds`")
config("config-unknown-privacy-key", 'delta = 1e-5', 'delta = 1e-5\nepsilon = 3', "unknown field `epsilon`")
config("config-wrong-type-epochs", 'epochs = 0.01', 'epochs = "ten"', 'config.toml:line 17, column 10: invalid type: string "ten", expected f64')
config("config-missing-delta", 'delta = 1e-5\n', '', "missing field `delta`")
config("config-delta-zero", 'delta = 1e-5', 'delta = 0.0', "invalid delta = 0")
config("config-delta-above-one", 'delta = 1e-5', 'delta = 1.5', "invalid delta = 1.5")
config("config-negative-target", 'target_epsilon = 3.0', 'target_epsilon = -1.0', "config.toml:validation: invalid target_epsilon = -1")
config("config-target-and-noise", 'target_epsilon = 3.0', 'target_epsilon = 3.0\nnoise_multiplier = 1.0', "both")
config("config-neither-target-nor-noise", 'target_epsilon = 3.0\n', '', "neither")
config("config-clip-norm-zero", 'clip_norm = 1.0', 'clip_norm = 0.0', "invalid clip_norm = 0")
config("config-batch-zero", 'expected_batch_size = 256', 'expected_batch_size = 0', "training.expected_batch_size = 0")
config("config-epochs-zero", 'epochs = 0.01', 'epochs = 0.0', "training.epochs = 0")
config("config-negative-learning-rate", 'learning_rate = 0.3', 'learning_rate = -0.3', "learning_rate = -0.3")
config("config-momentum-one", 'learning_rate = 0.3 }', 'learning_rate = 0.3, momentum = 1.0 }', "momentum = 1")
config("config-unknown-optimizer", 'name = "sgd"', 'name = "lbfgs"', "unknown variant `lbfgs`")
config("config-unknown-model", 'kind = "logreg"', 'kind = "resnet"', "unknown variant `resnet`")
config("config-batch-norm", 'kind = "logreg"', 'kind = "logreg"\nextra_layers = ["batch_norm"]', "`batch_norm` mixes examples")
config("config-exponential-without-rate", 'clip_norm = 1.0', 'clip_norm = 1.0\nnoise_schedule = { kind = "exponential" }', "privacy.noise_schedule.rate = missing")
config("config-plateau-without-validation", 'clip_norm = 1.0', 'clip_norm = 1.0\nnoise_schedule = { kind = "plateau", factor = 0.5, patience = 1, floor = 0.5 }', "public validation split")
case("config-count-noise-too-small", "train {case}/config.toml --out {out}", "privacy.adaptive_clipping.count_noise = 0.1",
     {"config.toml": GOOD.replace('target_epsilon = 3.0', 'noise_multiplier = 1.0').replace('clip_norm = 1.0', 'clip_norm = 1.0\nadaptive_clipping = { count_noise = 0.1 }')})
config("config-adaptive-per-layer", 'clip_norm = 1.0', 'clip_norm = 1.0\nclipping = "per_layer"\nadaptive_clipping = {}', "flat clipping with adaptive clipping")
config("config-noise-warmup", 'clip_norm = 1.0', 'clip_norm = 1.0\nnoise_schedule = { kind = "constant", warmup = 10 }', "only the learning rate has one")
config("config-validation-not-public", 'dir = "datasets/mnist"', 'dir = "datasets/mnist"\nvalidation = 1000', "data.validation_public")
config("config-missing-data-dir", 'dir = "datasets/mnist"', 'dir = "datasets/nowhere"', "datasets/nowhere/SHA256SUMS")
config("config-holdout-too-large", 'dir = "datasets/mnist"', 'dir = "datasets/mnist"\nholdout = 60000', "data.holdout + data.validation = 60000")
config("config-syntax-error", '[model]', '[model', "config.toml:line 8, column 7: unclosed table")
config("config-unknown-dataset", 'dataset = "mnist"', 'dataset = "cifar"', "unknown variant `cifar`")
config("config-max-epsilon-zero", 'clip_norm = 1.0', 'clip_norm = 1.0\nmax_epsilon = 0.0', "privacy.max_epsilon = 0")
case("config-missing-file", "train {case}/nowhere.toml --out {out}", "nowhere.toml: No such file")
case("config-bad-set-path", "train {case}/config.toml --set privacy.delta.x=1 --out {out}", "`delta` is not a table", {"config.toml": GOOD})

# --- data: tiny MNIST-shaped folders
def idx(magic, dims, payload):
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + payload

def mnist_dir(images=None, labels=None, sums=True, corrupt_sum=False, raw=False):
    n = 3
    img = idx(0x00000803, [n, 28, 28], bytes(n * 784)) if images is None else images
    lab = idx(0x00000801, [n], bytes([1, 2, 3])) if labels is None else labels
    test_img = idx(0x00000803, [n, 28, 28], bytes(n * 784))
    test_lab = idx(0x00000801, [n], bytes([4, 5, 6]))
    files = {}
    for name, content in [("train-images-idx3-ubyte.gz", img), ("train-labels-idx1-ubyte.gz", lab),
                          ("t10k-images-idx3-ubyte.gz", test_img), ("t10k-labels-idx1-ubyte.gz", test_lab)]:
        files[name] = content if (raw and name.startswith("train-images")) else gzip.compress(content, mtime=0)
    if sums:
        lines = []
        for name, content in files.items():
            h = hashlib.sha256(content).hexdigest()
            if corrupt_sum and name.startswith("train-labels"):
                h = "0" * 64
            lines.append(f"{h}  {name}\n")
        files["SHA256SUMS"] = "".join(lines)
    return files

def data_case(name, expected, **kw):
    files = mnist_dir(**kw)
    text = GOOD.replace('dir = "datasets/mnist"', 'dir = "{case}"').replace("epochs = 0.01", "epochs = 1").replace("expected_batch_size = 256", "expected_batch_size = 2")
    files["config.toml"] = text
    case(name, "train {case}/config.toml --set data.dir=\"{case}\" --out {out}", expected, files)

data_case("data-wrong-idx-magic", "wrong IDX magic 00000804: expected 00000803", images=idx(0x00000804, [3, 28, 28], bytes(3 * 784)))
data_case("data-truncated-images", "truncated: dimensions [3, 28, 28] need 2352 bytes of data, found 700", images=idx(0x00000803, [3, 28, 28], bytes(700)))
data_case("data-checksum-mismatch", "train-labels-idx1-ubyte.gz:contents: SHA-256 mismatch", corrupt_sum=True)
data_case("data-label-out-of-range", "label 12 is out of range: expected a digit 0-9", labels=idx(0x00000801, [3], bytes([1, 12, 3])))
data_case("data-label-count-mismatch", "2 labels for 3 images", labels=idx(0x00000801, [2], bytes([1, 2])))
data_case("data-garbage-file", "train-images-idx3-ubyte.gz:byte 0: wrong IDX magic 74686973", raw=True, images=b"this is neither gzip nor IDX\n")
data_case("data-missing-checksums", "SHA256SUMS: No such file", sums=False)

# --- ledgers (account --events)
def events(name, text, expected):
    case(name, "account --events {case}/events.csv --delta 1e-5", expected, {"events.csv": text})
events("events-wrong-header", "q,sigma,steps\n0.01,1.0,10\n", "expected the header")
events("events-not-a-number", "sample_rate,noise_multiplier,steps\n0.01,1.O,10\n", "column 2 (noise_multiplier): expected a number")
events("events-zero-sample-rate", "sample_rate,noise_multiplier,steps\n0.0,1.0,10\n", "line 2, column 1 (sample_rate): invalid sample_rate = 0")
events("events-empty-file", "", "events.csv:line 1")
events("events-ragged-row", "sample_rate,noise_multiplier,steps\n0.01,1.0\n", "expected 3 fields")
events("events-count-below-total", "sample_rate,noise_multiplier,steps,count_noise_multiplier\n0.01,2.0,10,1.5\n", "count_noise_multiplier")

# --- flags
case("flags-account-delta-zero", "account --sample-rate 0.01 --noise-multiplier 1 --steps 10 --delta 0", "invalid delta = 0")
case("flags-calibrate-negative-target", "calibrate --target-epsilon -1 --sample-rate 0.01 --steps 10 --delta 1e-5", "target_epsilon")
case("flags-bench-infinite-duration", "bench --model logreg --min-seconds inf", "--min-seconds")
case("flags-sweep-over-without-values", "sweep configs/quickstart.toml --over privacy.target_epsilon --out {out}", "expected KEY=V1,V2")
case("flags-report-not-a-run", "report {case}", "config.toml: No such file")
case("flags-resume-without-checkpoint", "train configs/quickstart.toml --resume {case}", "no complete checkpoint")
case("flags-plan-batch-zero", "plan --dataset-size 100 --batch-size 0 --delta 1e-5 --out {out}", "invalid batch_size = 0")

# --- secure mode and seeds
config("config-secure-with-seed", 'clip_norm = 1.0', 'clip_norm = 1.0\nsecure_noise = true', "invalid seed = 0: expected no seed with privacy.secure_noise = true")
config("config-seed-missing", 'seed = 0\n', '', "invalid seed = missing")
config("config-secure-adaptive", 'clip_norm = 1.0', 'clip_norm = 1.0\nsecure_noise = true\nadaptive_clipping = { target_quantile = 0.5 }', "privacy.adaptive_clipping")
events("events-unknown-mechanism", "sample_rate,noise_multiplier,steps,mechanism\n0.01,1.0,10,laplace\n", "column 4 (mechanism): expected `gaussian`, `discrete_gaussian` or nothing")

# --- CSV tables
CSV = '''name = "bad"
seed = 0

[data]
dataset = "csv"
train = { path = "PLACEHOLDER" }
test = { path = "PLACEHOLDER" }
header = true
missing = ["?"]
columns = [
    { name = "a", kind = "numeric", range = [0, 10] },
    { name = "b", kind = "categorical", values = ["x", "y"] },
    { name = "label", kind = "label", positive = ["1"], negative = ["0"] },
]

[model]
kind = "logreg"

[privacy]
target_epsilon = 3.0
delta = 1e-5

[training]
epochs = 1
expected_batch_size = 1
optimizer = { name = "sgd", learning_rate = 0.3 }
'''
def csv_case(name, rows, expected, config_text=CSV):
    case(name, "train {case}/config.toml --set data.train.path=\"{case}/t.csv\" "
         "--set data.test.path=\"{case}/t.csv\" --out {out}", expected,
         {"config.toml": config_text, "t.csv": rows})
csv_case("csv-ragged-row", "a,b,label\n1,x,1\n2,y\n", "t.csv:line 3: 2 fields, expected 3 (a, b, label)")
csv_case("csv-nan", "a,b,label\nNaN,x,1\n", "t.csv:line 2, column 1 (a): expected a finite number, found `NaN`")
csv_case("csv-empty-field", "a,b,label\n,x,1\n", "t.csv:line 2, column 1 (a): expected a number, found ``")
csv_case("csv-unknown-category", "a,b,label\n1,z,1\n", "t.csv:line 2, column 2 (b): unknown category `z`")
csv_case("csv-unknown-label", "a,b,label\n1,x,maybe\n", "t.csv:line 2, column 3 (label): label `maybe` is neither positive (1) nor negative (0)")
csv_case("csv-missing-value", "a,b,label\n1,?,1\n", "t.csv:line 2, column 2 (b): missing value `?`; set data.on_missing")
csv_case("csv-header-mismatch", "a,c,label\n1,x,1\n", "the header is `a,c,label`, but data.columns declares `a,b,label`")
csv_case("csv-empty-file", "a,b,label\n", "t.csv:line 1: no rows")
csv_case("csv-two-labels", "a,b,label\n1,x,1\n", "exactly one column of kind \"label\"",
         CSV.replace('{ name = "b", kind = "categorical", values = ["x", "y"] }', '{ name = "b", kind = "label", positive = ["x"] }'))
print(len([d for d in os.listdir(HERE) if os.path.isdir(os.path.join(HERE, d))]), "cases")
