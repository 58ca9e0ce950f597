"""train_and_evaluate(config, workdir) and evaluate(config, workdir): the loop, eval cadence, logs, checkpoints."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import subprocess
import time

import jax
import ml_collections
import numpy as np
import tqdm

import harjax
from harjax import augment, checkpointing, metrics as metrics_lib, parallel, robustness, step as step_lib
from harjax.data import batch as batch_lib, pipeline
from harjax.models.har_model import build_model

TEST, VALIDATION, SELECTED = "eval", "val", "eval_selected"  # metric prefixes: test split, validation, test at
# the checkpoint the validation split selected
ANALYSIS_DIR = "analysis"
ROBUSTNESS_FILE = "robustness.json"
ATTENTION_FILE = "attention.npz"
_POSITIVE_TRAIN_KEYS = ("batch_size", "eval_batch_size", "num_steps", "log_every", "eval_every", "checkpoint_every",
                        "keep_checkpoints")


def validate_train_config(train_config: ml_collections.ConfigDict) -> None:
    for key in _POSITIVE_TRAIN_KEYS:
        if not isinstance(train_config[key], int) or train_config[key] <= 0:
            raise ValueError(f"config.train.{key} must be a positive integer, got {train_config[key]!r}")
    if train_config.warmup_steps < 0 or train_config.learning_rate <= 0:
        raise ValueError("config.train.warmup_steps must be >= 0 and config.train.learning_rate > 0, got "
                         f"{train_config.warmup_steps} and {train_config.learning_rate}")


def code_version() -> str:
    """The git commit of the harjax checkout (with '+dirty' for uncommitted changes), or 'unknown'."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def write_run_config(workdir: str, config: ml_collections.ConfigDict, train: batch_lib.Split,
                     evaluation: batch_lib.Split, validation: batch_lib.Split | None, start_step: int,
                     data_cache: str, selection_metric: str) -> None:
    """config.json: what reproduces the run; every start (first or resumed) is also appended to runs.jsonl."""
    record = {"config": config.to_dict(), "seed": config.seed, "data_cache": data_cache,
              "selection_metric": selection_metric,  # what the best checkpoint is ranked by
              "harjax_version": harjax.__version__,
              "git_commit": code_version(), "jax_version": jax.__version__, "start_step": start_step,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "devices": jax.device_count(),
              "processes": jax.process_count(),
              "data": {split: {"origin": data.origin, "fingerprint": data.fingerprint, "examples": len(data),
                               "num_classes": data.num_classes,
                               "shapes": {name: shape for name, (shape, _) in data.example_spec.items()},
                               "report": dict(data.report)}
                       for split, data in (("train", train), ("eval", evaluation), ("validation", validation))
                       if data is not None},
              # What using the trained model on new data needs (harjax.export puts it in the bundle):
              "inputs": {"class_names": list(train.class_names), "channel_names": list(train.channel_names),
                         "sampling_rate_hz": train.sampling_rate_hz, "normalization": dict(train.normalization),
                         "video_source": dict(train.video_source)}}
    text = json.dumps(record, default=str)
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(json.loads(text), f, indent=2)
    with open(os.path.join(workdir, "runs.jsonl"), "a") as f:
        f.write(text + "\n")


def has_attention(config: ml_collections.ConfigDict) -> bool:
    return config.model.modalities == "both" and config.model.fusion == "attention"


def training_complete(config: ml_collections.ConfigDict, workdir: str) -> bool:
    """Whether the run in `workdir` did everything that follows its last step: the final evaluation, the test
    split at the selected checkpoint (with a validation split) and the analyses config.eval asks for. A restart
    does not repeat them, and the experiment runner counts only such runs as finished (a run preempted in its
    last step has logged that step's evaluation, not these)."""
    records = metrics_lib.read_metrics(workdir)
    if not any(record["step"] == config.train.num_steps and f"{TEST}/accuracy" in record for record in records):
        return False
    if config.data.validation_fraction and not any(f"{SELECTED}/step" in record for record in records):
        return False
    settings = config.eval
    wanted = ([ROBUSTNESS_FILE] * bool(settings.robustness)
              + [ATTENTION_FILE] * bool(settings.attention_examples and has_attention(config)))
    return all(os.path.exists(os.path.join(workdir, ANALYSIS_DIR, name)) for name in wanted)


class _Run:
    """What training and stand-alone evaluation share: data, model, mesh, initial state and checkpoints."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        validate_train_config(config.train)
        self.config, self.workdir = config, workdir
        self.mesh = parallel.make_mesh()
        self.train_data, self.eval_data = pipeline.load_splits(config)
        self.train_data, self.validation_data = pipeline.validation_split(config, self.train_data)
        pipeline.log_summary(self.train_data, self.eval_data)
        evaluated = [data for data in (self.eval_data, self.validation_data) if data is not None]
        self.cache = pipeline.choose_cache(config.data.cache, self.train_data, evaluated,
                                           config.data.cache_memory_fraction, parallel.free_device_bytes(),
                                           jax.local_device_count())
        # The splits evaluation reads (from host memory unless streamed), and the one that selects the model.
        self.evaluation_sets = {name: (data, data.columns() if self.cache != "none" else None)
                                for name, data in ((TEST, self.eval_data), (VALIDATION, self.validation_data))
                                if data is not None}
        self.selection = VALIDATION if self.validation_data is not None else TEST
        self.selection_metric = f"{self.selection}/macro_f1"
        self.model = build_model(config, self.train_data.num_classes)
        self.train_batch_size = pipeline.per_process_batch_size(
            config.train.batch_size, jax.device_count(), jax.process_count(), "config.train.batch_size")
        self.eval_batch_size = pipeline.per_process_batch_size(
            config.train.eval_batch_size, jax.device_count(), jax.process_count(), "config.train.eval_batch_size")
        example = {name: np.zeros((jax.device_count(), *shape), dtype)
                   for name, (shape, dtype) in self.train_data.example_spec.items()}
        init = functools.partial(step_lib.create_train_state, self.model,
                                 step_lib.make_optimizer(config, step_lib.learning_rate_schedule(config.train)),
                                 example, config.seed)
        self.init_state = jax.jit(init, out_shardings=parallel.replicated(self.mesh))
        self.abstract_state = parallel.replicated_abstract(jax.eval_shape(init), self.mesh)
        self.checkpointer = checkpointing.Checkpointer(
            os.path.join(os.path.abspath(workdir), "checkpoints"), config.train.keep_checkpoints,
            checkpointing.model_signature(config, self.abstract_state), best_metric=self.selection_metric)
        self.writer = metrics_lib.MetricWriter(workdir, enabled=jax.process_index() == 0)
        self.eval_step = step_lib.jit_eval_step(self.mesh, config.loss.contrastive_weight)

    def predict(self, state: step_lib.TrainState, corrupt: robustness.Corruption | None = None,
                split: str = TEST) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Every example of an evaluation split once, optionally corrupted: per-example rows (logits, label, index,
        trial and the contrastive embeddings where the model has them) and the mean losses (as 'eval/...')."""
        data, columns = self.evaluation_sets[split]
        outputs = []
        for local_batch in pipeline.eval_batches(data, self.eval_batch_size, jax.process_index(),
                                                 jax.process_count(), columns):
            if corrupt is not None:
                local_batch = corrupt(local_batch)
            outputs.append(self.eval_step(state, parallel.global_batch(local_batch, self.mesh)))
        outputs = jax.device_get(outputs)
        count = sum(output["count"] for output in outputs)
        losses = {f"eval/{name}": float(sum(output["sums"][name] for output in outputs) / count)
                  for name in outputs[0]["sums"]}
        rows = {name: np.concatenate([output[name] for output in outputs])
                for name in outputs[0] if name not in ("count", "sums")}
        valid = rows.pop(batch_lib.VALID)
        return {name: values[valid] for name, values in rows.items()}, losses  # [N, ...]: every example once

    def score(self, rows: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Accuracy and macro-F1 per example and, where examples are camera views of trials, per trial by the
        views' mean logits: (scalars without the 'eval/' prefix, confusion matrix per level)."""
        levels = {"": (rows["logits"], rows[batch_lib.LABEL])}
        trials = rows.get(batch_lib.TRIAL)
        if trials is not None and len(np.unique(trials)) < len(trials):  # several camera views per trial
            levels["trial_"] = metrics_lib.mean_by_group(rows["logits"], rows[batch_lib.LABEL], trials)
        scalars, confusions = {}, {}
        for prefix, (logits, labels) in levels.items():
            confusions[prefix] = metrics_lib.confusion_matrix(labels, logits.argmax(-1), self.train_data.num_classes)
            report = metrics_lib.classification_metrics(confusions[prefix])
            scalars |= {f"{prefix}accuracy": report["accuracy"], f"{prefix}macro_f1": report["macro_f1"]}
        return scalars, confusions

    def evaluate(self, state: step_lib.TrainState, step: int, split: str | None = None,
                 prefix: str | None = None) -> dict[str, float]:
        """Scores every example of a split (default: the one that selects the model) once, every trial where
        examples are its views, and the cross-modal retrieval where the model has the contrastive term; writes the
        confusion matrices and per-class F1. Scalars are named '<prefix or split>/<metric>'."""
        split = split or self.selection
        prefix = prefix or split
        rows, losses = self.predict(state, split=split)
        scores, confusions = self.score(rows)
        if "video_embedding" in rows:
            scores |= metrics_lib.retrieval_recalls(rows["video_embedding"], rows["sensor_embedding"],
                                                    rows.get(batch_lib.TRIAL))
        scalars = {f"{prefix}/{name.split('/', 1)[1]}": value for name, value in losses.items()}
        scalars |= {f"{prefix}/{name}": value for name, value in scores.items()}
        for level, confusion in confusions.items():
            self.writer.write_evaluation_report(step, f"{prefix}_{level}".rstrip("_"), confusion,
                                                self.eval_data.class_names,
                                                metrics_lib.classification_metrics(confusion))
        logging.info("step %d: %s accuracy %.4f, macro-F1 %.4f on %d examples", step, prefix,
                     scalars[f"{prefix}/accuracy"], scalars[f"{prefix}/macro_f1"], len(rows[batch_lib.LABEL]))
        return scalars

    def finish(self, state: step_lib.TrainState, step: int) -> None:
        """Once training is complete: with a validation split, the test split at the last step ('eval/...') and
        at the checkpoint the validation selected ('eval_selected/...'); then what config.eval asks of the final
        checkpoint. Every process takes part; process 0 decides whether an earlier start already did it."""
        if not parallel.agree(not training_complete(self.config, self.workdir)):
            return
        if self.validation_data is not None:
            scalars = self.evaluate(state, step, TEST, TEST)
            self.checkpointer.manager.wait_until_finished()
            selected = self.checkpointer.best_step or step
            selected_state, _ = self.checkpointer.restore(selected, self.abstract_state)
            scalars |= self.evaluate(selected_state, selected, TEST, SELECTED) | {f"{SELECTED}/step": selected}
            self.writer.write(step, scalars)
            logging.info("test split: macro-F1 %.4f at the last step %d, %.4f at step %d selected on the validation "
                         "split", scalars[f"{TEST}/macro_f1"], step, scalars[f"{SELECTED}/macro_f1"], selected)
        self.analyse(state, step)

    def analyse(self, state: step_lib.TrainState, step: int) -> None:
        """What config.eval asks of the final checkpoint, into workdir/analysis/: robustness.json (scores under
        missing modalities and occlusion) and attention.npz (keyless-attention weights of a few eval examples)."""
        settings = self.config.eval
        modalities = self.config.model.modalities
        if settings.robustness:
            conditions = robustness.conditions(modalities in ("both", "video"), modalities in ("both", "sensor"),
                                               self.eval_data.channel_names, settings.occlusion_fractions,
                                               self.config.seed)
            results = {name: self.score(self.predict(state, corrupt)[0])[0] for name, corrupt in conditions.items()}
            self.writer.write(step, {f"robustness/{name}/{metric}": value for name, scores in results.items()
                                     for metric, value in scores.items()})
            self._write_analysis(ROBUSTNESS_FILE, json.dumps({"step": step, "conditions": results}, indent=1))
        if settings.attention_examples:
            self._save_attention(state, step, settings.attention_examples)

    def _write_analysis(self, name: str, text: str | None = None, arrays: dict[str, np.ndarray] | None = None) -> None:
        if jax.process_index() != 0:
            return
        directory = os.path.join(self.workdir, ANALYSIS_DIR)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(directory, "." + name)
        with open(temporary, "wb") as f:
            if arrays is not None:
                np.savez(f, **arrays)
            else:
                f.write(text.encode())
        os.replace(temporary, os.path.join(directory, name))  # a killed run never leaves a half-written file

    def _save_attention(self, state: step_lib.TrainState, step: int, count: int) -> None:
        """alpha [k, K, n] of one eval example from each of `count` classes spread over those present."""
        if not has_attention(self.config):
            logging.info("config.eval.attention_examples: this model has no keyless attention to show")
            return
        labels = self.eval_data.labels
        classes = np.unique(labels)
        chosen_classes = classes[np.linspace(0, len(classes) - 1, min(count, len(classes))).round().astype(int)]
        indices = [int(np.flatnonzero(labels == label)[0]) for label in chosen_classes]
        batch = batch_lib.examples(self.eval_data, indices)
        output = jax.device_get(jax.jit(lambda state, batch: state.apply_fn(
            {"params": state.params, "batch_stats": state.batch_stats}, batch, train=False))(state, batch))
        self._write_analysis(ATTENTION_FILE, arrays={
            "step": np.asarray(step), "index": np.asarray(indices), "alpha": output.alpha,
            "sensor": batch[batch_lib.SENSOR], "sensor_mask": batch[batch_lib.SENSOR_MASK],
            "label": batch[batch_lib.LABEL], "prediction": output.logits.argmax(-1),
            "class_names": np.asarray(self.eval_data.class_names)})

    def close(self) -> None:
        self.checkpointer.close()
        self.writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains from scratch or resumes from the workdir's latest checkpoint; returns the last eval metrics."""
    os.makedirs(workdir, exist_ok=True)
    train_config = config.train
    with contextlib.ExitStack() as cleanup:
        run = _Run(config, workdir)
        cleanup.callback(run.close)
        window = metrics_lib.TrainMetricWindow()
        start_step = run.checkpointer.latest_step
        if start_step is None:
            state, start_step = run.init_state(), 0
        else:
            state, loop_state = run.checkpointer.restore(start_step, run.abstract_state)
            window.restore(loop_state["train_window"])
        # Every step, skipped non-finite ones included, consumes one global batch.
        train_iterator = pipeline.train_iterator(run.train_data, run.train_batch_size, config.seed,
                                                 jax.process_index(), jax.process_count(), config.data.num_workers,
                                                 start_batch=start_step, cache=run.cache)
        cleanup.callback(train_iterator.close)
        on_device = run.cache == "device"
        resident = parallel.replicate(run.train_data.columns(), run.mesh) if on_device else None
        run.writer.truncate_after(start_step if start_step else -1)  # from scratch: a clean file
        if jax.process_index() == 0:
            write_run_config(workdir, config, run.train_data, run.eval_data, run.validation_data, start_step,
                             run.cache, run.selection_metric)
        if config.eval.at_start and start_step == 0:  # the untrained model: the chance line of every curve
            run.writer.write(0, run.evaluate(state, 0))
        augment.check(config.data.augment)
        streams = tuple(map(tuple, batch_lib.sensor_streams(run.train_data.channel_names).values()))
        train_step = step_lib.jit_train_step(run.mesh, config.loss.contrastive_weight,
                                             run.train_data.gather if on_device else None,
                                             (config.data.augment, streams) if augment.enabled(config.data.augment)
                                             else None)
        preemption = checkpointing.PreemptionWatcher(run.checkpointer)
        cleanup.callback(preemption.close)
        progress = cleanup.enter_context(tqdm.tqdm(
            total=train_config.num_steps, initial=start_step, disable=jax.process_index() != 0, desc="train",
            unit="step", dynamic_ncols=True))

        eval_metrics: dict[str, float] = {}
        for step in range(start_step + 1, train_config.num_steps + 1):
            state, step_metrics = train_step(state, parallel.global_batch(next(train_iterator), run.mesh), resident)
            window.add(step_metrics)
            progress.update()
            last = step == train_config.num_steps
            if step % train_config.log_every == 0 or last:
                scalars = {f"train/{name}": value for name, value in window.pop_means().items()}
                scalars["train/nonfinite_steps"] = int(jax.device_get(state.nonfinite_steps))
                run.writer.write(step, scalars)
                if "train/loss" in scalars:
                    progress.set_postfix(loss=f"{scalars['train/loss']:.4f}")
            evaluated = step % train_config.eval_every == 0 or last
            if evaluated:
                eval_metrics = run.evaluate(state, step)
                run.writer.write(step, eval_metrics)
            preempted = preemption.reached(step)
            # Every evaluated step is saved too, so the best checkpoint by macro-F1 is among all evaluations.
            if evaluated or preempted or step % train_config.checkpoint_every == 0:
                run.checkpointer.save(step, state, {"train_window": window.state()},
                                      eval_metrics if evaluated else None)
            if preempted:  # even at the last step: the final evaluation and analyses run at the restart
                logging.warning("stopping at step %d after the preemption checkpoint", step)
                break
        else:  # training is complete (now or in an earlier start)
            run.finish(state, train_config.num_steps)
        return eval_metrics


def evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Evaluates the workdir's latest checkpoint (--mode=eval); the report lands in workdir/eval/, and what
    config.eval asks for (robustness, attention weights) in workdir/analysis/."""
    with contextlib.ExitStack() as cleanup:
        run = _Run(config, workdir)
        cleanup.callback(run.close)
        step = run.checkpointer.latest_step
        if step is None:
            raise FileNotFoundError(f"{run.checkpointer.directory} holds no checkpoint to evaluate; train first")
        state, _ = run.checkpointer.restore(step, run.abstract_state)
        metrics = run.evaluate(state, step, TEST)
        logging.info("step %d: %s", step, json.dumps(metrics))
        run.analyse(state, step)
        return metrics
