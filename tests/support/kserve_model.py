"""A KServe ModelServer with one classifier model, for tests/grpc_kserve.rs.

Usage: kserve_model.py GRPC_PORT HTTP_PORT VERSION VARIANT

VARIANT is one of:
  typed  - outputs in the typed `contents` fields of the gRPC answer
  raw    - the same outputs as `raw_output_contents` (little-endian bytes)
  differ - typed, but the classifier scores of row 2 favour another class

The model reads the batch size from the first input's shape and answers two
outputs: `probabilities` (FP32, [batch, 3]) and `label` (INT64, [batch]).
Scores depend only on the row number, so two servers with the same variant
give the same numbers whatever their version. The answer's model_version is
VERSION, so two servers differ in it on every answer.

Prints "ready" on stdout once the gRPC port accepts connections.
"""

import socket
import sys
import threading
import time

import numpy as np
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

MODEL = "classifier"


def scores(batch, variant):
    rows = []
    for r in range(batch):
        favoured = r % 3
        row = [0.1, 0.1, 0.1]
        row[favoured] = 0.8
        if variant == "differ" and r == 2:
            row = [0.7, 0.2, 0.1]
        rows.append(row)
    return np.array(rows, dtype=np.float32)


class Classifier(Model):
    def __init__(self, version, variant):
        super().__init__(MODEL)
        self.version = version
        self.variant = variant
        self.ready = True

    async def predict(self, payload, headers=None, response_headers=None):
        request = payload if isinstance(payload, InferRequest) else None
        batch = int(request.inputs[0].shape[0]) if request and request.inputs else 1
        probabilities = scores(batch, self.variant)
        labels = probabilities.argmax(axis=1).astype(np.int64)
        outputs = [
            InferOutput("probabilities", list(probabilities.shape), "FP32"),
            InferOutput("label", list(labels.shape), "INT64"),
        ]
        outputs[0].set_data_from_numpy(probabilities)
        outputs[1].set_data_from_numpy(labels)
        return InferResponse(
            response_id=request.id if request else "",
            model_name=MODEL,
            model_version=self.version,
            infer_outputs=outputs,
            use_binary_outputs=self.variant == "raw",
        )


def announce_when_listening(port):
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                print("ready", flush=True)
                return
        except OSError:
            time.sleep(0.1)


if __name__ == "__main__":
    grpc_port, http_port, version, variant = sys.argv[1:5]
    grpc_port, http_port = int(grpc_port), int(http_port)
    threading.Thread(
        target=announce_when_listening, args=(grpc_port,), daemon=True
    ).start()
    ModelServer(grpc_port=grpc_port, http_port=http_port, workers=1).start(
        [Classifier(version, variant)]
    )
