"""A model on an NVIDIA Triton Inference Server as a backend: `--backend triton://HOST:PORT/NAME`.

The server runs the bundle's ONNX model (written by `sperm-edge export BUNDLE --triton REPO --name NAME`); this
client sends each batch over gRPC (the default; `?protocol=http` for HTTP) and returns the same named outputs
as a local engine, so the runtime applies the bundle's temperature, drift and framing to them as usual. At
activation it checks that the server holds a ready model whose inputs and outputs fit the bundle (input
shape, one logit per class), and refuses a mismatch. Each request has a deadline (`?timeout=SECONDS`, default
10); a request that fails (the server restarting, unreachable or overloaded) is sent again, with growing pauses,
until the server answers or `?wait=SECONDS` (default 30) has passed, which ends the run with a clear error. A
batch is classified once whatever the retries, so a server restarted mid-run loses and doubles no cell.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from urllib.parse import parse_qs, urlsplit

import numpy as np

from sperm_edge.engines.base import OUTPUTS, Backend, InputSpec, Outputs, missing
from sperm_edge.errors import SpermEdgeError

log = logging.getLogger(__name__)

SCHEME = "triton://"
PROTOCOLS = ("grpc", "http")
INSTALL = "pip install 'tritonclient[grpc,http]'"


def is_triton(name: str) -> bool:
    return name.startswith(SCHEME)


class TritonBackend(Backend):
    """Inference on a Triton server's model; `url` is triton://HOST:PORT/NAME[?protocol=http&timeout=S&wait=S]."""

    name = "triton"

    def __init__(self, url: str, classes: list[str], img_size: int) -> None:
        super().__init__("fp32")
        parts = urlsplit(url)
        options = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.model = parts.path.strip("/")
        if parts.scheme != "triton" or not parts.netloc or not self.model or "/" in self.model:
            raise SpermEdgeError(f"backend {url!r}: expected triton://HOST:PORT/MODEL")
        self.address = parts.netloc
        self.protocol = options.pop("protocol", "grpc")
        if self.protocol not in PROTOCOLS:
            raise SpermEdgeError(f"backend {url!r}: protocol must be grpc or http, not {self.protocol!r}")
        try:
            self.timeout = float(options.pop("timeout", 10.0))
            self.wait = float(options.pop("wait", 30.0))
        except ValueError as err:
            raise SpermEdgeError(f"backend {url!r}: {err}") from err
        if options:
            raise SpermEdgeError(f"backend {url!r}: unknown option(s) {', '.join(sorted(options))}")
        self.classes, self.img_size = list(classes), img_size
        self._client = None
        self._module = None
        self._deadline: dict = {}  # the request deadline as the protocol's client takes it
        self._input = ""  # the served model's input name (read at activation)

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if importlib.util.find_spec("tritonclient") is None:
            return False, f"tritonclient is not installed; {INSTALL}"
        return True, ""

    def describe(self) -> dict:
        return super().describe() | {"server": self.address, "model": self.model, "protocol": self.protocol}

    # -- hooks ---------------------------------------------------------------------------------------
    def _activate_impl(self) -> InputSpec:
        if not self.available()[0]:
            raise missing("tritonclient", INSTALL)
        if self.protocol == "grpc":
            import tritonclient.grpc as module
        else:
            import tritonclient.http as module
        self._module = module
        if self.protocol == "grpc":  # gRPC takes a deadline per call, HTTP per connection
            self._client, self._deadline = module.InferenceServerClient(self.address), {"client_timeout": self.timeout}
        else:
            timeouts = {"connection_timeout": self.timeout, "network_timeout": self.timeout}
            self._client, self._deadline = module.InferenceServerClient(self.address, **timeouts), {}
        where = f"Triton server {self.address}"
        try:
            if not self._client.is_server_ready():
                raise SpermEdgeError(f"{where} is not ready")
            if not self._client.is_model_ready(self.model):
                raise SpermEdgeError(f"{where} has no ready model {self.model!r}{self._models_there()}")
            metadata, config = self._client.get_model_metadata(self.model), self._client.get_model_config(self.model)
        except SpermEdgeError:
            raise
        except Exception as err:  # tritonclient raises its own exception types, or the transport's
            raise SpermEdgeError(f"{where} did not answer ({type(err).__name__}: {_reason(err)})") from err
        metadata, config = _as_dict(metadata), _as_dict(config)
        config = config.get("config", config)  # gRPC wraps the configuration
        return self._check(metadata, int(config.get("max_batch_size", 0)) or None)

    def _check(self, metadata: dict, max_batch: int | None) -> InputSpec:
        """The model's tensors against the bundle's: one image input at the bundle's size, a logit per class."""
        where = f"model {self.model!r} on {self.address}"
        inputs = metadata.get("inputs", [])
        expected = [3, self.img_size, self.img_size]
        if len(inputs) != 1 or [int(d) for d in inputs[0]["shape"][1:]] != expected:
            shapes = [(i["name"], [int(d) for d in i["shape"]]) for i in inputs]
            raise SpermEdgeError(f"{where} takes {shapes}, but the bundle gives images of shape [-1, {expected}]")
        outputs = {o["name"]: [int(d) for d in o["shape"]] for o in metadata.get("outputs", [])}
        if outputs.get("logits", [None, None])[1:] != [len(self.classes)]:
            raise SpermEdgeError(
                f"{where} outputs {outputs}, but the bundle names {len(self.classes)} classes "
                f"({', '.join(self.classes)})"
            )
        self.output_names = tuple(name for name in OUTPUTS if name in outputs)
        self._input = inputs[0]["name"]
        return InputSpec(self._input, (-1, *expected), "float32", max_batch)

    def _models_there(self) -> str:
        try:
            index = _as_dict(self._client.get_model_repository_index())
            models = index if isinstance(index, list) else index.get("models", [])
            names = sorted({m["name"] for m in models})
            return f" (it has: {', '.join(names) or 'none'})"
        except Exception:  # the index is a courtesy in an error message
            return ""

    def _deactivate_impl(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def _infer_impl(self, batch: np.ndarray) -> Outputs:
        module = self._module
        request = module.InferInput(self._input, list(batch.shape), "FP32")
        request.set_data_from_numpy(batch)
        wanted = [module.InferRequestedOutput(name) for name in self.output_names]
        give_up, pause, tries = time.monotonic() + self.wait, 0.25, 0
        while True:
            tries += 1
            try:
                reply = self._client.infer(self.model, [request], outputs=wanted, **self._deadline)
                return Outputs.from_named({name: reply.as_numpy(name) for name in self.output_names})
            except Exception as err:  # tritonclient's InferenceServerException, or the transport's errors
                if time.monotonic() + pause > give_up:
                    raise SpermEdgeError(
                        f"Triton server {self.address} did not answer for {self.model!r} in {self.wait:.0f} s "
                        f"({tries} tries; {_reason(err)})"
                    ) from err
                if tries == 1:
                    log.warning("Triton request failed (%s); retrying for up to %.0f s", _reason(err), self.wait)
                time.sleep(pause)
                pause = min(pause * 2, 2.0)


def _as_dict(message: object) -> dict:
    """A tritonclient answer as a dict: HTTP gives dicts, gRPC protobuf messages."""
    if isinstance(message, dict | list):
        return message
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(message, preserving_proto_field_name=True)


def _reason(err: Exception) -> str:
    message = getattr(err, "message", None)
    text = message() if callable(message) else str(err)
    return " ".join(str(text).split())[:300]
