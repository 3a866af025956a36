"""Model time on each engine against onnxruntime in process, one thread.

Runs in the virtual environment `scripts/conformance --reference` makes
(onnx, numpy, onnxruntime): target/conformance-venv/bin/python
bench/engines.py BINARY LIBRARY, where LIBRARY is `scripts/onnxruntime`'s
output. For each model (an MLP 64-2048-2048-2048-10 written here, and the
MNIST MLP fixture): the median of 200 runs in onnxruntime in process, then
the median `latency_ms` of 200 calls through a server on one worker, on
tract and on ONNX Runtime (the worker round trip included: about 0.2 ms
for a tiny model in a release build).
"""

import json, sys, time, subprocess, tempfile, pathlib, statistics, urllib.request
import numpy as np, onnx
from onnx import helper, numpy_helper, TensorProto
import onnxruntime as ort

def mlp(widths, seed=0):
    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i, (a, b) in enumerate(zip(widths, widths[1:])):
        w = (rng.standard_normal((a, b)) / np.sqrt(a)).astype(np.float32); bias = np.zeros(b, np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]), helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"])]
        prev = f"a{i}"
        if i < len(widths) - 2:
            nodes.append(helper.make_node("Relu", [prev], [f"r{i}"])); prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", widths[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", widths[-1]])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]); m.ir_version = 8
    return m.SerializeToString()

def call(url, method, path, key=None, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    r = urllib.request.Request(url + path, data=data, method=method)
    if key: r.add_header("Authorization", f"Bearer {key}")
    if data is not None: r.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
    with urllib.request.urlopen(r, timeout=120) as a: return json.loads(a.read())

binary, library = sys.argv[1], sys.argv[2]
models = {"mlp-64-2048x3-10": (mlp([64, 2048, 2048, 2048, 10]), 64), "mnist-mlp": (pathlib.Path("fixtures/models/mnist_mlp.onnx").read_bytes(), 784)}
calls = 200
results = {}
for name, (model, width) in models.items():
    x = np.random.default_rng(1).standard_normal((1, width)).astype(np.float32)
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
    s = ort.InferenceSession(model, o, providers=["CPUExecutionProvider"])
    input_name = s.get_inputs()[0].name
    for _ in range(20): s.run(None, {input_name: x})
    t = []
    for _ in range(calls):
        a = time.perf_counter(); s.run(None, {input_name: x}); t.append((time.perf_counter() - a) * 1000)
    results.setdefault(name, {})["onnxruntime in process"] = statistics.median(t)
    for engine in ["tract", "onnxruntime"]:
        d = tempfile.mkdtemp()
        cmd = [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", d, "--set", "inference_threads=1", "--set", f"engine={engine}"]
        if engine == "onnxruntime": cmd += ["--set", f"onnxruntime_library={library}"]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        url = next(l.split()[-1] for l in p.stdout if l.startswith("vitrine listening on "))
        key = call(url, "POST", "/v1/accounts", body={"name": "bench"})["api_key"]
        call(url, "POST", "/v1/models", key, {"name": "m", "task": "other"})
        call(url, "POST", "/v1/models/bench/m/versions", key, raw=model)
        body = {"inputs": {input_name: {"dtype": "f32", "shape": [1, width], "data": x.reshape(-1).tolist()}}}
        for _ in range(20): call(url, "POST", "/v1/models/bench/m/infer", key, body)
        lat = [call(url, "POST", "/v1/models/bench/m/infer", key, body)["latency_ms"] for _ in range(calls)]
        results[name][f"vitrine {engine} (latency_ms)"] = statistics.median(lat)
        p.terminate(); p.wait()
print(json.dumps(results, indent=1))
