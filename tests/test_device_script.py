"""benchmarks/device.sh at toy size on the CPU, in an environment that holds only what the GPU
machines' image holds (the packages below, taken from this environment) and the wheels of
`make device-wheels`: whatever mia, run.py, the benchmarks or the GPU tests import and the image
lacks, this finds before a GPU machine's minutes are spent on it."""

import importlib.metadata
import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from benchmarks import device_wheels

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
# The Python packages of the GPU machines' image (the lending service's description of its kinds).
IMAGE = """
    absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs
    botorch build certifi charset-normalizer chex click cloudpickle cmake colorama contourpy
    coverage cuda-bindings cuda-core cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython
    diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools formulaic
    frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize
    hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
    jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities
    linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl
    meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind
    narwhals networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti
    nvidia-cuda-nvrtc nvidia-cuda-runtime nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile
    nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13 nvidia-ml-py
    nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime
    onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint
    packaging pandas pathspec patsy peft pillow pip pluggy portalocker prometheus-client
    propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
    pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
    python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors
    scikit-build-core scikit-image scikit-learn scipy seaborn sentencepiece
    sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels
    sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
    tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics
    torchvision tqdm transformers treescope triton typer typing-extensions typing-inspect
    urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split()
PARTS = ["install", "machine", "bench_tiny", "bench_vit_b32", "bench_loader", "gpu_tests", "e2e"]
E2E_ATTACKS = {
    "csa",
    "gradnorm",
}  # the toy run's; the GPU run adds mcd, aea, txtagree and paramgrad


def _closure(names) -> set:
    """Distributions `names` and what they require, recursively, as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        key = device_wheels._norm(dist.metadata["Name"])
        if key in seen:
            continue
        seen.add(key)
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def bare_python(tmp: Path) -> Path:
    """A venv's python that sees the image's packages (links into this environment) and nothing
    else."""
    image = tmp / "image"
    image.mkdir()
    for key in sorted(_closure(IMAGE)):
        dist = importlib.metadata.distribution(key)
        for top in {Path(f).parts[0] for f in dist.files or []} - {"..", "__pycache__"}:
            source, link = Path(dist.locate_file(top)), image / top
            if source.exists() and not link.exists():
                link.symlink_to(source)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "image.pth").write_text(f"{image}\n")
    return venv / "bin" / "python3"


@pytest.fixture(scope="module")
def wheels():
    """.whl/ of this checkout, downloaded as `make device-wheels` does if it is not there yet."""
    whl = ROOT / ".whl"
    if not list(whl.glob("*.whl")):
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.device_wheels", str(whl)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0:
            pytest.skip(
                f".whl/ is empty and `make device-wheels` could not fill it (PyPI unreachable?): "
                f"{done.stderr.strip().splitlines()[-1:]}"
            )
    return whl


def test_the_wheels_are_what_the_image_lacks_and_fit_the_budget(wheels):
    names = {device_wheels._norm(w.name.split("-")[0]) for w in wheels.glob("*.whl")}
    assert {device_wheels._norm(n) for n in device_wheels.RUNTIME} <= names
    assert not names & _closure(IMAGE)  # nothing the image holds is sent again
    for w in wheels.rglob(
        "*.whl"
    ):  # pure Python, or a stable-ABI x86-64 Linux build: CPython 3.12 takes it
        assert w.name.endswith("-none-any.whl") or ("-abi3-" in w.name and "x86_64" in w.name), (
            w.name
        )
    assert sum(w.stat().st_size for w in wheels.rglob("*.whl")) <= device_wheels.BUDGET


def test_device_script_at_toy_size_in_the_images_environment(wheels, tmp_path):
    python = bare_python(tmp_path)
    lacking = subprocess.run(
        [str(python), "-c", "import open_clip"], capture_output=True, text=True
    )
    assert (
        lacking.returncode != 0 and "open_clip" in lacking.stderr
    )  # the environment is bare indeed
    env = {
        k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "MIA_ROOT")
    }
    env.update(
        PATH=f"{python.parent}:{env['PATH']}",
        PYTHON=str(python),
        MIA_DEVICE_TOY="1",
        MIA_DEVICE_SITE=str(tmp_path / "site"),
        MIA_DEVICE_BUDGET_S="900",
    )
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "device.sh"), str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    logs = {p.name: p.read_text()[-2000:] for p in (out / "logs").glob("*.log")}
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:], logs)

    parts = json.loads((out / "device.json").read_text())["parts"]
    assert list(parts) == PARTS
    failed = {
        name: logs.get(f"{name}.log")
        for name, p in parts.items()
        if p["rc"] != 0 and not p["skipped"]
    }
    assert not failed
    assert parts["bench_vit_b32"]["skipped"] and not any(p["timed_out"] for p in parts.values())

    machine = json.loads((out / "machine.json").read_text())
    assert machine["gpu"] is None and machine["cores"] >= 1
    tiny = json.loads((out / "train_tiny.json").read_text())
    for key in (
        "eager_train_samples_per_s",
        "pipeline_train_samples_per_s",
        "pipeline_vs_eager",
        "train_flops_per_sample",
        "eager_mfu",
        "pipeline_mfu",
        "pipeline_features_images_per_s",
    ):
        assert key in tiny, key
    assert (
        tiny["pipeline_train_samples_per_s"] > 0 and tiny["pipeline_mfu"] is None
    )  # no GPU peak on a CPU
    loader = json.loads((out / "loader.json").read_text())
    assert loader["images"] == 64 and loader["pipeline_loader_images_per_s_2_workers"] > 0
    assert (out / "gpu_tests.xml").is_file()
    results = json.loads((out / "e2e_results.json").read_text())
    assert set(results["attacks"]) == E2E_ATTACKS
    target = json.loads((out / "e2e_target.json").read_text())
    assert (target["device"], target["precision"]) == ("cpu", "32-true")
