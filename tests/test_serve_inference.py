"""serve/inference.py: the SageMaker handler contract, every image kind, every malformed request."""

from __future__ import annotations

import base64
import inspect
import json
import subprocess
import sys
import tarfile
import textwrap
from http import HTTPStatus
from pathlib import Path

import pytest
import torch
from image_bytes import encode, png_header_only
from PIL import Image

from serve import inference
from serve.inference import (
    Limits,
    RequestError,
    decode_image,
    decode_request,
    input_fn,
    model_fn,
    output_fn,
    predict_fn,
)


def odd_images() -> dict[str, tuple[bytes, tuple[int, int, int] | None]]:
    """Image kinds a user may upload: (encoded bytes, expected RGB of pixel (0, 0) or None)."""
    gray16 = Image.new("I;16", (40, 30), 65535)
    rgba = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red → white
    palette = Image.new("RGB", (40, 30), (0, 0, 255)).convert("P")
    palette_t = Image.new("P", (40, 30), 0)
    palette_t.putpalette([0, 255, 0] * 256)
    return {
        "16-bit grayscale PNG": (encode(gray16, "PNG"), (255, 255, 255)),
        "CMYK JPEG": (encode(Image.new("CMYK", (40, 30), (0, 0, 0, 0)), "JPEG"), None),
        "RGBA PNG": (encode(rgba, "PNG"), (255, 255, 255)),
        "grayscale JPEG": (encode(Image.new("L", (40, 30), 128), "JPEG"), None),
        "LA PNG": (encode(Image.new("LA", (40, 30), (0, 255)), "PNG"), (0, 0, 0)),
        "palette PNG": (encode(palette, "PNG"), (0, 0, 255)),
        "palette PNG with transparency": (encode(palette_t, "PNG", transparency=0), (255, 255, 255)),
        "1-bit PNG": (encode(Image.new("1", (40, 30), 1), "PNG"), (255, 255, 255)),
        "WebP": (encode(Image.new("RGB", (40, 30), (10, 200, 10)), "WEBP", lossless=True), (10, 200, 10)),
    }


def held_out(root: Path) -> list[tuple[Path, str]]:
    return [(img, cls.name) for cls in sorted((root / "test").iterdir()) for img in sorted(cls.iterdir())]


@pytest.fixture(scope="module")
def model_dir(trained_run) -> Path:
    return Path(trained_run["output_dir"]) / "model"


@pytest.fixture(scope="module")
def model(model_dir):
    return model_fn(str(model_dir))


def test_handler_signatures_are_what_the_sagemaker_toolkit_calls():
    # The toolkit passes (model_dir,), (body, content_type), (data, model), (prediction, accept) and
    # appends its context when a handler takes one more parameter: extra parameters would break it.
    for fn, n in ((model_fn, 1), (input_fn, 2), (predict_fn, 2), (output_fn, 2)):
        assert len(inspect.signature(fn).parameters) == n, fn.__name__


def test_sagemaker_chain_matches_the_library_predictor(model, trained_run, synthetic_root):
    from dogbreed.predict import load_model

    images = held_out(synthetic_root)
    library = load_model(Path(trained_run["output_dir"]) / "model" / "model.pt").predict(
        [p for p, _ in images], top_k=3
    )
    # The toolkit's chain, as SageMaker runs it: one JSON request carrying every held-out image ...
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p, _ in images], "top_k": 3}
    )
    answer = json.loads(output_fn(predict_fn(input_fn(body, "application/json"), model), "application/json"))
    for pred, expected in zip(answer["predictions"], library, strict=True):
        assert pred["label"] == expected.label
        assert pred["probability"] == pytest.approx(expected.probability, abs=1e-4)
        assert [t["label"] for t in pred["top_k"]] == [label for label, _ in expected.top_k]
    # ... and one raw JPEG.
    (single,) = json.loads(
        output_fn(predict_fn(input_fn(images[0][0].read_bytes(), "image/jpeg"), model), None)
    )["predictions"]
    assert single["label"] == library[0].label
    correct = sum(p.label == truth for p, (_, truth) in zip(library, images, strict=True))
    assert correct / len(images) == pytest.approx(
        trained_run["test_acc"], abs=0.07
    )  # the right classes come back


def test_json_batch_keeps_order_and_accepts_text_bodies(model, synthetic_root):
    # For application/json the toolkit hands input_fn a str (UTF-8 decoded), not bytes.
    (a, _), (b, _) = held_out(synthetic_root)[0], held_out(synthetic_root)[-1]
    body = json.dumps(
        {"instances": [{"b64": base64.b64encode(p.read_bytes()).decode()} for p in (a, b, a)], "top_k": 2}
    )
    preds = predict_fn(input_fn(body, "application/json; charset=utf-8"), model)
    single = [predict_fn(input_fn(p.read_bytes(), "application/x-image"), model)[0] for p in (a, b)]
    assert [p["label"] for p in preds] == [single[0]["label"], single[1]["label"], single[0]["label"]]
    assert all(len(p["top_k"]) == 2 for p in preds)


def test_model_tar_handler_needs_only_torch_and_pillow(model_dir, synthetic_root, tmp_path):
    with tarfile.open(model_dir / "model.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    image, _ = held_out(synthetic_root)[0]
    script = textwrap.dedent(
        """
        import json, sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("dogbreed", "serve", "fastapi", "uvicorn", "starlette", "litserve"):
                    raise ImportError(name + " is blocked: code/inference.py must need only torch + Pillow")
        sys.meta_path.insert(0, Block())
        sys.path.insert(0, sys.argv[1] + "/code")
        import inference
        model = inference.model_fn(sys.argv[1])
        data = inference.input_fn(open(sys.argv[2], "rb").read(), "image/jpeg")
        print(inference.output_fn(inference.predict_fn(data, model), "application/json"))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path), str(image)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from dogbreed.predict import load_model

    # The same answer as the library's predictor (a few-epoch model may get this one image wrong).
    expected = load_model(model_dir / "model.pt").predict([image])[0].label
    assert json.loads(result.stdout.splitlines()[-1])["predictions"][0]["label"] == expected


@pytest.mark.parametrize("kind", list(odd_images()))
def test_every_image_kind_becomes_uint8_rgb(kind):
    data, expected = odd_images()[kind]
    tensor = decode_image(data)
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (3, 30, 40)
    if expected is not None:
        assert tuple(tensor[:, 0, 0].tolist()) == expected


def test_large_jpeg_is_decoded_at_reduced_scale_like_the_data_loader():
    data = encode(Image.new("RGB", (1200, 900), (90, 60, 30)), "JPEG")
    full, reduced = decode_image(data), decode_image(data, min_side=224)
    assert tuple(full.shape) == (3, 900, 1200)
    assert 224 <= reduced.shape[1] < 900 and reduced.shape[1] * 4 == reduced.shape[2] * 3


def truncated_jpeg() -> bytes:
    noisy = Image.effect_noise((64, 64), 60).convert("RGB")
    data = encode(noisy, "JPEG", quality=95)
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"", 400, "empty"),
        (b"this is not an image at all", 400, "is not a JPEG, PNG, WebP, BMP, GIF, TIFF or PPM image"),
        (truncated_jpeg(), 400, "truncated"),
        (encode(Image.new("L", (2000, 1000)), "PNG"), 413, "pixels"),  # over our limit (1,000,000 below)
        (
            png_header_only(100_000, 100_000),
            413,
            "over the limit of 1,000,000 pixels",
        ),  # 10 gigapixels: Pillow's own bomb guard
    ],
    ids=["empty", "non-image", "truncated-jpeg", "over-pixel-limit", "decompression-bomb"],
)
def test_bad_images_get_a_clear_status(body, status, words):
    with pytest.raises(RequestError) as info:
        decode_image(body, "body", Limits(max_image_pixels=1_000_000))
    assert info.value.status == status and words in str(info.value)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "words"),
    [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (b'["a list"]', "application/json", 400, "must be an object"),
        (b'{"instances": []}', "application/json", 400, "'instances'"),
        (
            json.dumps({"instances": [{"b64": b64(b"x")}, {"image": "x"}]}).encode(),
            "application/json",
            400,
            "instances[1]",
        ),
        (
            b'{"instances": [{"b64": "@@not base64@@"}]}',
            "application/json",
            400,
            "instances[0].b64 is not valid base64",
        ),
        (
            json.dumps({"instances": [{"b64": b64(b"not an image")}]}).encode(),
            "application/json",
            400,
            "instances[0] is not a JPEG",
        ),
        (
            json.dumps({"instances": [{"b64": "eA=="}] * 3}).encode(),
            "application/json",
            413,
            "split the batch",
        ),
        (json.dumps({"instances": [{"b64": "eA=="}], "top_k": 0}).encode(), "application/json", 400, "top_k"),
        (b"hello", "text/plain", 415, "unsupported Content-Type 'text/plain'"),
        (b"hello", None, 415, "(none)"),
    ],
    ids=[
        "bad-json",
        "not-an-object",
        "no-instances",
        "no-b64-field",
        "bad-base64",
        "b64-not-image",
        "too-many-instances",
        "bad-top-k",
        "wrong-content-type",
        "no-content-type",
    ],
)
def test_malformed_requests_name_the_field(body, content_type, status, words):
    with pytest.raises(RequestError) as info:
        decode_request(body, content_type, Limits(max_instances=2))
    assert info.value.status == status and words in str(info.value)


def test_output_refuses_accept_types_it_cannot_produce():
    assert json.loads(output_fn([], "application/json, */*")) == {"predictions": []}
    with pytest.raises(RequestError) as info:
        output_fn([], "text/csv")
    assert info.value.status == 406


def test_request_error_speaks_the_toolkit_error_protocol():
    # sagemaker_inference's transformer answers with .status_code/.phrase and the .message body.
    e = RequestError(413, "too big")
    assert (e.status_code, e.phrase) == (413, HTTPStatus(413).phrase)
    assert json.loads(e.message) == {"error": "too big"}
    assert isinstance(e, inference._ErrorBase)


class _ToolkitError(Exception):
    """sagemaker_inference.errors.BaseInferenceToolkitError as sagemaker-inference 1.10 defines it."""

    def __init__(self, status_code, message, phrase):
        self.status_code, self.message, self.phrase = status_code, message, phrase
        super().__init__(status_code, message, phrase)


@pytest.fixture
def under_toolkit(monkeypatch):
    """serve/inference.py imported as the toolkit imports code/inference.py, with its error module present,
    and the toolkit's rule for turning a handler's exception into a response (Transformer.transform):
    a BaseInferenceToolkitError answers its status_code with message + traceback, anything else 500."""
    import importlib.util
    import traceback
    import types

    errors = types.ModuleType("sagemaker_inference.errors")
    errors.BaseInferenceToolkitError = _ToolkitError
    monkeypatch.setitem(sys.modules, "sagemaker_inference", types.ModuleType("sagemaker_inference"))
    monkeypatch.setitem(sys.modules, "sagemaker_inference.errors", errors)
    spec = importlib.util.spec_from_file_location("inference_in_container", inference.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    assert issubclass(module.RequestError, _ToolkitError)

    def respond(fn, *args) -> tuple[int, str]:
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 — exactly the toolkit's catch-all
            trace = traceback.format_exc()
            if isinstance(e, _ToolkitError):
                return e.status_code, f"{e.message}\n{trace}"
            return 500, f"{e}\n{trace}"
        return 200, ""

    module.respond = respond
    return module


def test_input_fn_gives_the_toolkit_the_same_status_for_every_hostile_request(under_toolkit):
    from image_bytes import malformed_requests, worst_cases

    rejected = {n: c for n, c in worst_cases().items() if c[2] != 200}
    for name, (body, content_type, expected) in {**rejected, **malformed_requests()}.items():
        if content_type == "application/json":  # the toolkit hands JSON to input_fn as text
            try:
                body = body.decode("utf-8")
            except UnicodeDecodeError:  # the toolkit's own decode fails (its 500) before input_fn runs
                continue
        status, response = under_toolkit.respond(under_toolkit.input_fn, body, content_type)
        assert status == expected, (name, response[:300])
        assert json.loads(response.split("\n", 1)[0])["error"], name
        if expected == 413:
            assert "DOGBREED_MAX_" in response.split("\n", 1)[0], name


def test_a_failing_model_is_a_500_without_its_exception_text_and_memory_is_a_503(under_toolkit):
    class Model:
        class_names = ["a", "b"]

        def __init__(self, error):
            self.error = error

        def parameters(self):
            return iter([torch.zeros(1)])

        def predict_images(self, images):
            raise self.error

    batch = under_toolkit.Batch([torch.zeros(3, 8, 8, dtype=torch.uint8)])
    status, response = under_toolkit.respond(
        under_toolkit.predict_fn, batch, Model(RuntimeError("secret /opt/ml/model internals"))
    )
    assert status == 500 and "internal error while running the model" in response
    assert "secret" not in response and "RuntimeError" not in response  # not even in the toolkit's trace
    status, response = under_toolkit.respond(under_toolkit.predict_fn, batch, Model(MemoryError()))
    assert status == 503 and "out of memory" in response
    status, _ = under_toolkit.respond(
        under_toolkit.predict_fn,
        batch,
        Model(RuntimeError("[enforce fail at alloc_cpu.cpp:121] DefaultCPUAllocator: can't allocate memory")),
    )
    assert status == 503


def test_limits_come_from_the_environment_and_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("DOGBREED_MAX_IMAGE_PIXELS", "1000")
    monkeypatch.setenv("DOGBREED_MAX_ASPECT_RATIO", "2.5")
    with pytest.raises(RequestError) as info:
        input_fn(encode(Image.new("RGB", (40, 30)), "PNG"), "image/png")
    assert info.value.status == 413 and "DOGBREED_MAX_IMAGE_PIXELS" in str(info.value)
    with pytest.raises(RequestError) as info:
        input_fn(encode(Image.new("RGB", (30, 9)), "PNG"), "image/png")
    assert info.value.status == 413 and "aspect ratio 3.3:1, over the limit of 2.5:1" in str(info.value)
    monkeypatch.setenv("DOGBREED_MAX_REQUEST_PIXELS", "lots")
    with pytest.raises(ValueError, match="DOGBREED_MAX_REQUEST_PIXELS='lots' must be a positive int"):
        inference.Limits()
