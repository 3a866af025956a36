"""The measurements of `bench/real-models` (which fetches the models and runs
this in the peer's virtual environment: onnxruntime, numpy, FastAPI).

For each model and input shape:
1. onnxruntime in process, one thread: the median of `session.run`;
2. a Vitrine server per engine, one worker: the upload's answer (a refusal
   says why), and of calls one at a time the median of the worker's CPU
   time per call (the usage event's `cpu_us`: reading the inputs from its
   pipe, the run and writing the outputs; the model time in the worker) and
   of `latency_ms` (the server's handling, JSON parsing of the inputs and
   the worker's round trip included);
3. paid calls over HTTP against the peer serving the same model:
   `vitrine bench model FILE --body --peer` with `--clients` connections, the
   server on ONNX Runtime with its default workers (one per core).
Prints a table and writes every figure to target/real-models/results.json.
"""

import argparse
import json
import os
import pathlib
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import numpy as np
import onnxruntime

ROOT = pathlib.Path(__file__).resolve().parent.parent
#: file, the one input's shape (an image in the model's layout), label.
MODELS = [
    ("ch_ppocr_mobile_v2.0_cls_infer.onnx", [1, 3, 48, 192], "OCR direction classifier (PP-OCR v2)"),
    ("ch_PP-OCRv4_rec_infer.onnx", [1, 3, 48, 320], "OCR text recognition (PP-OCRv4)"),
    ("ch_PP-OCRv4_det_infer.onnx", [1, 3, 224, 224], "OCR text detection (PP-OCRv4)"),
]


def call(url, method, path, key=None, body=None, raw=None):
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(url + path, data=data, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    if data is not None:
        request.add_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
    try:
        with urllib.request.urlopen(request, timeout=300) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def timed(run, seconds):
    """Median milliseconds of `run()`, repeated for about `seconds` after a warm-up."""
    for _ in range(3):
        run()
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(times)


def in_process(path, x, seconds):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return timed(lambda: session.run(None, {name: x}), seconds)


def on_engine(binary, library, engine, model_bytes, body, seconds):
    """(refusal or None, median latency_ms, median worker CPU ms, calls) on
    one worker of `engine`."""
    data_dir = tempfile.mkdtemp(prefix="vitrine-real-")
    command = [binary, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir, "--set", "inference_threads=1",
               "--set", f"engine={engine}", "--set", "signups_per_address_per_hour=0",
               "--set", "calls_per_key_per_minute_max=0"]
    if engine == "onnxruntime":
        command += ["--set", f"onnxruntime_library={library}"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        url = next(line.split()[-1] for line in server.stdout if line.startswith("vitrine listening on "))
        key = call(url, "POST", "/v1/accounts", body={"name": "bench"})[1]["api_key"]
        call(url, "POST", "/v1/models", key, {"name": "m", "task": "other"})
        status, answer = call(url, "POST", "/v1/models/bench/m/versions", key, raw=model_bytes)
        if status != 201:
            return f"{status} {answer['error']['code']}: {answer['error']['message'][:160]}", None, None, 0
        latencies = []

        def one():
            status, answer = call(url, "POST", "/v1/models/bench/m/infer", key, body)
            if status != 200:
                raise RuntimeError(f"{status} {answer}")
            latencies.append(answer["latency_ms"])

        _, count = timed(one, seconds)
    finally:
        server.terminate()
        server.wait()
    # Written when the server stops, if not before.
    with sqlite3.connect(pathlib.Path(data_dir) / "vitrine.db") as db:
        cpu_us = [row[0] for row in db.execute("SELECT cpu_us FROM usage_events WHERE status = 'ok' ORDER BY id")]
    return None, statistics.median(latencies[3:]), statistics.median(cpu_us[3:]) / 1000, count


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def against_peer(binary, library, path, body_path, seconds, clients, python):
    port = free_port()
    peer = subprocess.Popen([python, str(ROOT / "bench/python-peer/server.py"), str(path), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        figures = pathlib.Path(tempfile.mkstemp(suffix=".json")[1])
        env = dict(os.environ, VITRINE_ENGINE="onnxruntime", VITRINE_ONNXRUNTIME_LIBRARY=library)
        subprocess.run([binary, "bench", "model", str(path), "--body", str(body_path), "--peer",
                        f"http://127.0.0.1:{port}", "--clients", str(clients), "--seconds", str(seconds),
                        "--figures", str(figures)], check=True, env=env, stdout=subprocess.DEVNULL)
        return json.loads(figures.read_text())
    finally:
        peer.terminate()
        peer.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin", required=True)
    parser.add_argument("--library", required=True)
    parser.add_argument("--models", required=True)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=16)
    args = parser.parse_args()
    folder = pathlib.Path(args.models)
    rng = np.random.default_rng(7)
    results = {}
    print(f"onnxruntime {onnxruntime.__version__}; {os.cpu_count()} cores; {args.clients} clients; "
          f"{args.seconds} s per measurement")
    for file, shape, label in MODELS:
        path = folder / file
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        body = {"inputs": {"x": {"dtype": "f32", "shape": shape, "data": x.reshape(-1).tolist()}}}
        body_path = folder / f"{file}.body.json"
        body_path.write_text(json.dumps(body))
        result = {"label": label, "shape": shape}
        result["in_process_ms"], _ = in_process(path, x, args.seconds)
        for engine in ["onnxruntime", "tract"]:
            refused, latency, cpu, count = on_engine(args.bin, args.library, engine, path.read_bytes(), body,
                                                     args.seconds)
            result[engine] = {"refused": refused, "latency_ms": latency, "worker_cpu_ms": cpu, "calls": count}
        figures = against_peer(args.bin, args.library, path, body_path, args.seconds, args.clients,
                               sys.executable)
        result["paid_per_second"] = figures["paid"]["per_second"]
        result["peer_per_second"] = figures["peer"]["per_second"]
        result["paid_over_peer"] = figures["paid_over_peer"]
        results[file] = result
        ort, tract = result["onnxruntime"], result["tract"]

        def engine_cell(outcome):
            if outcome["refused"]:
                return f"refused ({outcome['refused'][:90]})"
            ratio = outcome["worker_cpu_ms"] / result["in_process_ms"]
            return f"{outcome['worker_cpu_ms']:.2f} ms ({ratio:.2f}x); latency_ms {outcome['latency_ms']:.2f}"

        print(f"\n{label}, x: {shape}")
        print(f"  onnxruntime in process, one thread: {result['in_process_ms']:.2f} ms")
        print(f"  Vitrine on ONNX Runtime, worker CPU per call: {engine_cell(ort)}")
        print(f"  Vitrine on tract, worker CPU per call:        {engine_cell(tract)}")
        print(f"  paid calls {result['paid_per_second']:.1f}/s, the peer {result['peer_per_second']:.1f}/s: "
              f"paid / peer = {result['paid_over_peer']:.2f}")
    (folder / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
