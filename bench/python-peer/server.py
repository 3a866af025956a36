"""The plain Python peer of `vitrine bench --peer`: FastAPI and onnxruntime
serving one ONNX model at Vitrine's inference route, with Vitrine's JSON
tensors in and out, and nothing else (no accounts, payments, log or usage).
What a creator could run instead of a marketplace; `compare` measures both
with the same clients in one run.

    python server.py MODEL.onnx --port 8077
"""

import argparse

import numpy as np
import onnxruntime
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

DTYPES = {"f32": np.float32, "f64": np.float64, "i32": np.int32, "i64": np.int64}
NAMES = {np.dtype(v): k for k, v in DTYPES.items()}


def build(model_path: str) -> FastAPI:
    options = onnxruntime.SessionOptions()
    # One thread per call, as Vitrine runs each call on one thread.
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(model_path, options, providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/v1/models/{owner}/{name}/infer")
    async def infer(owner: str, name: str, request: Request) -> JSONResponse:
        body = await request.json()
        feeds = {
            name: np.asarray(tensor["data"], dtype=DTYPES[tensor["dtype"]]).reshape(tensor["shape"])
            for name, tensor in body["inputs"].items()
        }
        names = [output.name for output in session.get_outputs()]
        results = session.run(names, feeds)
        outputs = {
            name: {"dtype": NAMES[value.dtype], "shape": list(value.shape), "data": value.ravel().tolist()}
            for name, value in zip(names, results)
        }
        return JSONResponse({"model": f"{owner}/{name}", "outputs": outputs})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--port", type=int, default=8077)
    args = parser.parse_args()
    uvicorn.run(build(args.model), host="127.0.0.1", port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
