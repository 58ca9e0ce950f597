"""Inference latency of one window, batch throughput and model size, in each runtime, with one and two threads.

The runtimes: the Flax model under jit, the StableHLO artifact, and onnxruntime on the float32, int8 and float16
ONNX models.

    python benchmarks/inference.py [--window_steps=256 --calls=300 --batch_size=256]
    python benchmarks/inference.py --config=configs/student.py --channels=6 --window_steps=250   # the edge student
    python benchmarks/inference.py --smoke                     # a tiny model, a few calls: checks it runs

Trains the config's model (configs/full.py by default: MMAct sizes, d_v 4096, 12 channels) for one step on
synthetic data, exports it as a bundle in every serving format, then, for each runtime and thread count in a fresh
process (XLA's thread pool is fixed when JAX starts): p50 and p99 latency of one window [1, T, C] over --calls calls
after warm-up, and examples/s at --batch_size. Inputs are standardised windows (what each runtime's function
takes). Prints a table and, last, one JSON line. Targets (2-core CPU, one thread): p99 under 5 ms for the full
model; the student's int8 model at most 500 KB and 1 ms p99 for a 5 s window at 50 Hz.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from harjax import cli  # noqa: E402

RUNTIMES = ("flax", "stablehlo", "onnx", "onnx_int8", "onnx_fp16")
_SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

flags.DEFINE_integer("window_steps", 256, "sensor steps per window (5 s at 50 Hz)")
flags.DEFINE_integer("calls", 300, "timed calls of one window, after warm-up")
flags.DEFINE_integer("batch_size", 256, "windows per call for examples/s")
flags.DEFINE_bool("smoke", False, "a tiny model and a few calls: checks it runs")
flags.DEFINE_string("config", "configs/full.py", "the model's config file")
flags.DEFINE_integer("channels", 12, "sensor channels (a phone or watch: 6)")
flags.DEFINE_enum("runtime", None, RUNTIMES, "internal: measure one runtime in this process")
flags.DEFINE_integer("threads", 1, "internal: --runtime's thread count")
flags.DEFINE_string("bundle", None, "internal: --runtime's bundle")


def _inputs(bundle, rows: int, steps: int):
    import numpy as np

    rng = np.random.default_rng(0)
    inputs = [
        rng.normal(size=(rows, steps, len(bundle.channel_names))).astype(np.float32),
        np.ones((rows, steps), bool),
    ]
    if bundle.uses_video:
        inputs += [rng.normal(size=(rows, *bundle.video_shape)).astype(np.float32), np.ones(rows, bool)]
    return inputs


def _runner(runtime: str, bundle_dir: str, threads: int):
    """f(*inputs) -> logits as numpy, for one runtime."""
    import numpy as np

    from harjax.serving import bundle as bundle_lib, predictor as predictor_lib

    bundle = bundle_lib.Bundle.load(bundle_dir)
    if runtime == "flax":
        import jax

        model = bundle_lib.inference_model(bundle.meta)
        variables = jax.device_put(bundle.variables)
        compiled = jax.jit(lambda *inputs: predictor_lib.forward(model, bundle.ensemble_size, variables, *inputs))
        return bundle, lambda *inputs: np.asarray(compiled(*inputs))
    if runtime == "stablehlo":
        import jax

        exported = jax.export.deserialize(open(os.path.join(bundle_dir, "stablehlo", "model.jax_export"), "rb").read())
        stored = np.load(os.path.join(bundle_dir, "stablehlo", "params.npz"))
        parameters = [jax.device_put(stored[key]) for key in sorted(stored.files)]
        call = jax.jit(exported.call)
        return bundle, lambda *inputs: np.asarray(call(parameters, *inputs))
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(os.path.join(bundle_dir, runtime, "model.onnx"), options)
    names = [node.name for node in session.get_inputs()]
    return bundle, lambda *inputs: session.run(None, dict(zip(names, inputs, strict=True)))[0]


def _size_kb(bundle_dir: str, runtime: str) -> float:
    """The runtime's model file: params.msgpack (flax), params.npz (stablehlo), model.onnx."""
    path = {
        "flax": "params.msgpack",
        "stablehlo": os.path.join("stablehlo", "params.npz"),
    }.get(runtime, os.path.join(runtime, "model.onnx"))
    return round(os.path.getsize(os.path.join(bundle_dir, path)) / 1024, 1)


def measure(args: types.SimpleNamespace) -> dict:
    """In a fresh process: one runtime at one thread count."""
    import numpy as np

    bundle, run = _runner(args.runtime, args.bundle, args.threads)
    window = _inputs(bundle, 1, args.window_steps)
    for _ in range(20):
        run(*window)
    latencies = []
    for _ in range(args.calls):
        start = time.perf_counter()
        run(*window)
        latencies.append(time.perf_counter() - start)
    batch = _inputs(bundle, args.batch_size, args.window_steps)
    run(*batch)
    start = time.perf_counter()
    repeats = 3
    for _ in range(repeats):
        run(*batch)
    throughput = repeats * args.batch_size / (time.perf_counter() - start)
    milliseconds = np.asarray(latencies) * 1e3
    return {
        "runtime": args.runtime,
        "threads": args.threads,
        "size_kb": _size_kb(args.bundle, args.runtime),
        "p50_ms": round(float(np.percentile(milliseconds, 50)), 3),
        "p99_ms": round(float(np.percentile(milliseconds, 99)), 3),
        "examples_per_s": round(throughput, 1),
    }


def build_bundle(directory: str, smoke: bool, window_steps: int, config: str, channels: int) -> str:
    """A bundle of the config's model (trained one step on synthetic data), exported in every serving format."""
    env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"} | {"JAX_PLATFORMS": "cpu"}
    student = config.endswith("student.py")
    size = ",size=tiny" if smoke and not student else ""  # --smoke: the tiny size (configs/common.py)
    sizes = [] if smoke else ["--config.data.synthetic.video_dim=4096"]
    if student:  # its own sizes; its int8 calibration needs more than one batch of windows
        sizes = ["--config.data.validation_fraction=0", "--config.train.min_epochs=0"]
    workdir, bundle = os.path.join(directory, "workdir"), os.path.join(directory, "bundle")
    for command in (
        [
            "harjax.main",
            f"--config={config}:synthetic{size}",
            f"--workdir={workdir}",
            "--config.train.num_steps=1",
            f"--config.data.synthetic.channels={channels}",
            "--config.data.synthetic.num_train=128",
            "--config.data.synthetic.num_eval=16",
            f"--config.data.synthetic.seq_len={window_steps}",
            "--config.train.eval_batch_size=16",
            *sizes,
        ],
        [
            "harjax.export",
            f"--workdir={workdir}",
            f"--output={bundle}",
            "--step=latest",
            f"--format={','.join(RUNTIMES[1:])}",
        ],
    ):
        done = subprocess.run(
            [sys.executable, "-m", *command],
            env=env,
            capture_output=True,
            text=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        if done.returncode:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return bundle


def main(argv: list[str]) -> None:
    del argv
    names = ("window_steps", "calls", "batch_size", "smoke", "config", "channels", "runtime", "threads", "bundle")
    args = types.SimpleNamespace(**{name: flags.FLAGS[name].value for name in names})
    if args.runtime:
        print(json.dumps(measure(args)))
        return
    if args.smoke:
        args.window_steps, args.calls, args.batch_size = 32, 20, 8
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        bundle = build_bundle(scratch, args.smoke, args.window_steps, args.config, args.channels)
        for runtime in RUNTIMES:
            for threads in (1, 2):
                env = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
                env |= {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": _SINGLE_THREAD_XLA if threads == 1 else ""}
                result = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        f"--runtime={runtime}",
                        f"--threads={threads}",
                        f"--bundle={bundle}",
                        f"--window_steps={args.window_steps}",
                        f"--calls={args.calls}",
                        f"--batch_size={args.batch_size}",
                    ],
                    capture_output=True,
                    text=True,
                    env=env,
                )
                if result.returncode:
                    raise RuntimeError(f"{runtime} with {threads} thread(s) failed:\n{result.stderr[-3000:]}")
                rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    throughput = f"examples/s at batch {args.batch_size}"
    print(f"{'runtime':<12} {'size KB':>9} {'threads':>7} {'p50 ms':>8} {'p99 ms':>8} {throughput:>24}")
    for row in rows:
        print(
            f"{row['runtime']:<12} {row['size_kb']:>9.1f} {row['threads']:>7} {row['p50_ms']:>8.3f} "
            f"{row['p99_ms']:>8.3f} {row['examples_per_s']:>24.1f}"
        )
    print(
        json.dumps(
            {
                "benchmark": "inference",
                "config": args.config,
                "channels": args.channels,
                "window_steps": args.window_steps,
                "batch_size": args.batch_size,
                "smoke": args.smoke,
                "cpu_count": os.cpu_count(),
                "results": rows,
            }
        )
    )


if __name__ == "__main__":
    cli.run(main)
